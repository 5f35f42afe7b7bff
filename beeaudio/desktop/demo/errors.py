"""The demo's one error: every module of the demo raises it, and ``beeaudio demo`` prints it as one line."""

from __future__ import annotations

from beeaudio.core.errors import BeeaudioError


class DemoError(BeeaudioError):
    """A step of the demo failed; the message says which and where its log is."""
