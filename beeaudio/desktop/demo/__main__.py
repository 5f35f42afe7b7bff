"""``python -m beeaudio.desktop.demo train-model FOLDER RECIPE_JSON``: the model's training child process
(:func:`beeaudio.desktop.demo.model.main`). Users run the demo with ``beeaudio demo``."""

from __future__ import annotations

import sys

from beeaudio.desktop.demo.model import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
