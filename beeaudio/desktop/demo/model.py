"""The demo's model: reused from the cache when its recipe was trained before, else trained in a child
process and exported as a bundle.

The child is ``python -P -m beeaudio.desktop.demo train-model FOLDER RECIPE_JSON`` (:func:`main`, through
the package's ``__main__``): TensorFlow's start-up chatter goes to ``train.log`` and not into the demo's
story, and its memory is returned before the collector and the agents start.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from beeaudio.collector.launch import tail
from beeaudio.core.fsio import write_json
from beeaudio.desktop.demo.errors import DemoError
from beeaudio.desktop.demo.plan import ModelRecipe

log = logging.getLogger(__name__)

MODEL_NAME = "demo-dnn"
TRAIN_COMMAND = "train-model"


def ensure_model(*, recipe: ModelRecipe, cache: Path) -> tuple[Path, bool]:
    """The demo's bundle: reused from ``cache`` when a readable one with this recipe exists, else trained
    (in a child process, see the module docstring). Returns ``(path, reused)``."""
    from beeaudio.core.bundle import BundleError, read_bundle

    folder = cache / f"model-{recipe.key()}"
    bundle_path = folder / f"{MODEL_NAME}.beemodel"
    if bundle_path.is_file():
        try:
            read_bundle(bundle_path)
            return bundle_path, True
        except BundleError as exc:
            log.warning("cached model %s is unusable (%s); training a new one", bundle_path, exc)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    log_path = folder / "train.log"
    log.info(
        "      synthesising %d training hives (none of them in the apiary), training a %d x %d DNN, "
        "exporting it to TF-Lite; log: %s",
        recipe.synth_hives, recipe.layers, recipe.units, log_path,
    )  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [
        sys.executable,
        "-P",
        "-m",
        "beeaudio.desktop.demo",
        TRAIN_COMMAND,
        str(folder),
        json.dumps(dataclasses.asdict(recipe)),
    ]
    with log_path.open("wb") as sink:
        code = subprocess.call(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    if code != 0 or not bundle_path.is_file():
        raise DemoError(
            f"training the demo model failed (exit code {code}; log {log_path}):\n{tail(log_path)}"
        )
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    log.info(
        "      held-out accuracy %.1f %% on hives never seen in training; exported as %s",
        100 * summary["accuracy"], summary["quantization"],
    )  # fmt: skip
    return bundle_path, False


def train_model(*, recipe: ModelRecipe, folder: Path) -> dict[str, Any]:
    """Synthesise the training set, train and export the demo's bundle into ``folder`` (needs TensorFlow).

    The int8 export refuses a model whose quantised outputs disagree with the Keras model on the held-out
    windows; a model that small can miss that bar, and then the demo ships the float32 export instead.
    """
    from beeaudio.desktop.synth import SynthConfig, generate_dataset
    from beeaudio.desktop.training.export import ExportError, export_bundle
    from beeaudio.desktop.training.train import TrainConfig, train_run

    data = folder / "data"
    synth = SynthConfig(
        hives=recipe.synth_hives,
        recordings_per_class=recipe.synth_recordings_per_class,
        seconds=recipe.synth_seconds,
        seed=recipe.synth_seed,
        sample_rate=recipe.synth_sample_rate,
    )
    generate_dataset(out=data, config=synth, progress=False)
    config = TrainConfig(
        model="dnn",
        layers=recipe.layers,
        units=recipe.units,
        epochs=recipe.epochs,
        patience=recipe.patience,
        seed=recipe.train_seed,
        verbose=0,
        progress=False,  # the log file gets the summary lines, not progress bars
    )
    result = train_run(data=data, out=folder / "run", config=config, cache_dir=folder / "feature-cache")
    bundle_path = folder / f"{MODEL_NAME}.beemodel"
    tmp = folder / f"{MODEL_NAME}.beemodel.tmp"
    quantization = recipe.quantize
    for quantization in dict.fromkeys((recipe.quantize, "float32")):
        try:
            export_bundle(
                run=folder / "run",
                out=tmp,
                quantize=quantization,
                model_name=MODEL_NAME,
                model_version=f"demo-{recipe.key()[:8]}",
            )
            break
        except ExportError as exc:
            if quantization == "float32":
                raise
            log.warning("%s export refused (%s); exporting float32", quantization, exc)
    summary = {"accuracy": float(result.metrics["accuracy"]), "quantization": quantization}
    write_json(folder / "summary.json", summary)
    # The bundle's name appears last: ensure_model takes a bundle that exists for a finished one.
    tmp.replace(bundle_path)
    return summary


def main(argv: Sequence[str]) -> int:
    """``python -m beeaudio.desktop.demo train-model FOLDER RECIPE_JSON``: the child of
    :func:`ensure_model`."""
    if len(argv) != 3 or argv[0] != TRAIN_COMMAND:
        # The child's only caller is ensure_model; a person typing it gets the usage on stderr.
        sys.stderr.write(f"usage: python -m beeaudio.desktop.demo {TRAIN_COMMAND} FOLDER RECIPE_JSON\n")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    train_model(recipe=ModelRecipe(**json.loads(argv[2])), folder=Path(argv[1]))
    return 0
