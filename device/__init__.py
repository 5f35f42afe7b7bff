"""The hive device agent: sources → analysis loop → SQLite outbox → collector, plus the model store.

Imports only numpy, soundfile, soxr, the standard library and ``beeaudio.{audio,features,bundle,inference,
events}``; it talks to the collector over HTTP only. See ``device/README.md``.
"""
