"""Sub-commands of the ``beeaudio`` CLI, one module per group; each exposes ``register(subparsers)``."""
