"""Experiments that reproduce and extend the reference result (Zgank, Sensors 21(3):676, 2021).

* :mod:`beeaudio.desktop.experiments.codec` — :func:`run_codec`: train on WAV (and with codec
augmentation, and
  on MP3), test on WAV and on MP3 at several bitrates, on one hive-grouped split, beside the baselines.
* :mod:`beeaudio.desktop.experiments.sweep` — :func:`run_sweep`: the DNN's depth × width grid with accuracy,
  parameters, int8 bundle size and per-window inference time.
* :mod:`beeaudio.desktop.experiments.baselines` — a GMM per class and a band-energy logistic regression.
* :mod:`beeaudio.desktop.experiments.report` — Markdown tables, ``results.json`` and PNG plots.

Like :mod:`beeaudio.desktop.training`, this package may import TensorFlow (through
``beeaudio.desktop.training``), so
nothing here is imported by the device or by ``beeaudio --help``.
"""
