"""The edge core: what a hive device runs, and the desktop reuses unchanged.

Decoding (:mod:`~beeaudio.core.audio`), the MFCC front end (:mod:`~beeaudio.core.features`), reading and
verifying model bundles (:mod:`~beeaudio.core.bundle`), running them (:mod:`~beeaudio.core.inference`), and
the wire contract between a device and the collector (:mod:`~beeaudio.core.wire`). Only numpy, soundfile
and soxr are imported here; ``tests/test_layout.py`` fails the build if any module of this package imports
the desktop side, the device agent, the collector or a heavy library.
"""
