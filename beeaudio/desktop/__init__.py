"""The desktop tools: synthetic hives, datasets, training, export, bundle writing, MP3 encoding,
experiments and the demo.

They may use TensorFlow, librosa, scikit-learn and matplotlib (the ``train`` extra), imported by the modules
that need them. A hive device never installs this package (``device/pyproject.toml``).
"""
