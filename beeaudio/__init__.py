"""beeaudio: an acoustic hive monitor.

The modules a hive device needs (``audio``, ``features``, ``bundle``, ``inference``, ``events``) import only
numpy, soundfile and soxr at import time; training, export and experiments live in
``beeaudio.desktop.training`` and
are the only place TensorFlow is imported.
"""

__version__ = "0.1.0"
