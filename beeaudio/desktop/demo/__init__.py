"""``beeaudio demo``: one run shows the whole system working on a synthetic apiary.

The demo joins the parts the way a user would: it generates a small apiary (one hive starts to swarm
part-way through), trains and exports a model (cached in ``--out``, keyed by its configuration), starts the
collector on SQLite in ``--out``, registers hives and devices over the admin API, runs one device agent
per hive over that hive's recordings, waits until the collector holds every event, and reports each hive's
state.

The collector and the device agents run as subprocesses of the ``beeaudio`` CLI and are spoken to over HTTP,
exactly as in a deployment. Of the other rooms the demo uses only what a deployment's tooling would: the
collector's launcher, the device's HTTP client and its configuration writer (``tests/fixtures/layout.py``
allows exactly these), never their internals.

Timeline. Each hive's recorder is duty-cycled: ``recording_seconds`` of audio every ``interval_minutes`` over
the last ``hours``, so the collector sees a realistic history that ends "now". The file names carry the
recordings' start times (the device agent takes a recording's time from its name), which is what lets the
agents work through hours of audio in seconds. A swarming hive sounds normal until ``swarm_at`` of the way
through the timeline, then swarms until the end.

Rerunning is safe: the model, the training data and the rendered audio are cached under ``--out/cache``
(keyed by what produced them); everything that belongs to one run (collector database, device state, spool
folders, logs, tokens) lives in ``--out/run`` and is recreated from scratch each time, because a new run has
a new "now".

The modules, one job each: :mod:`.plan` (the apiary and the model recipe: values and pure functions),
:mod:`.render` (the apiary's audio), :mod:`.model` (ensure or train the model; its child process is this
package's ``__main__``), :mod:`.collector` (the collector's port, process and admin API), :mod:`.devices`
(spool folders, device configurations, the agents), :mod:`.report` (the result and the status table) and
:mod:`.run` (:func:`run_demo`, the steps in order).
"""

from __future__ import annotations

from beeaudio.desktop.demo.collector import choose_port, state_params
from beeaudio.desktop.demo.errors import DemoError
from beeaudio.desktop.demo.model import MODEL_NAME, ensure_model, train_model
from beeaudio.desktop.demo.plan import (
    ApiaryPlan,
    DemoHive,
    ModelRecipe,
    expected_windows,
    plan_hives,
    recording_segments,
    recording_times,
    spool_name,
)
from beeaudio.desktop.demo.render import render_apiary
from beeaudio.desktop.demo.report import DemoResult, HiveOutcome, format_status_table
from beeaudio.desktop.demo.run import run_demo

__all__ = [
    "MODEL_NAME",
    "ApiaryPlan",
    "DemoError",
    "DemoHive",
    "DemoResult",
    "HiveOutcome",
    "ModelRecipe",
    "choose_port",
    "ensure_model",
    "expected_windows",
    "format_status_table",
    "plan_hives",
    "recording_segments",
    "recording_times",
    "render_apiary",
    "run_demo",
    "spool_name",
    "state_params",
    "train_model",
]
