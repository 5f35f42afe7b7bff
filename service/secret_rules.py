"""What makes an admin or read secret too weak to guard a collector on a network.

Length alone is not strength: ``aaaaaaaaaaaaaaaa``, ``changemechangeme`` and ``password1234567890`` are all
16 characters or more. A secret is weak when it is short, when it is a known default, when most of it is
well-known words, keyboard runs, counting sequences or one unit repeated, or when it uses too few different
characters to be random. ``secrets.token_urlsafe(32)`` passes with a wide margin.
"""

from __future__ import annotations

import re

MIN_SECRET_LENGTH = 16
#: Characters that must remain once the guessable parts are taken out.
MIN_RANDOM_CHARACTERS = 8
#: Different characters a secret must use (16 random hex digits use fewer 1 time in 10 000).
MIN_DISTINCT_CHARACTERS = 6

#: Values that are refused whatever else is true of them.
DEFAULT_SECRETS = frozenset({"", "admin", "changeme", "change-me", "secret", "password", "token", "default"})
#: Words people build "secrets" of; taken out (longest first) before what is left is judged.
WORDS = (
    "administrator", "collector", "changeme", "password", "passwort", "beeaudio", "letmein", "welcome",
    "default", "example", "monitor", "qwertz", "qwerty", "secret", "master", "dragon", "monkey", "sunshine",
    "iloveyou", "football", "princess", "shadow", "access", "server", "apiary", "swarm", "admin", "token",
    "login", "guest", "local", "hello", "super", "demo", "test", "user", "root", "pass", "hive", "read",
    "write", "bees", "bee", "key", "api", "abc",
)  # fmt: skip
_KEYBOARD_ROWS = ("1234567890", "qwertyuiop", "asdfghjkl", "zxcvbnm", "qwertzuiop", "yxcvbnm", "azertyuiop")
_WORD_RE = re.compile("|".join(sorted(WORDS, key=len, reverse=True)))


def _smallest_period(text: str) -> int:
    """The length of the shortest unit that ``text`` repeats (its own length if it repeats nothing)."""
    for size in range(1, len(text) // 2 + 1):
        if len(text) % size == 0 and text[:size] * (len(text) // size) == text:
            return size
    return len(text)


def _strip_runs(text: str) -> str:
    """``text`` without runs of 3+ characters that count up or down (``abcd``, ``4321``), repeat one
    character (``aaa``) or follow a keyboard row (``asdf``)."""
    keep = []
    i = 0
    while i < len(text):
        j = i + 1
        while j < len(text) and _continues(text[i:j], text[j]):
            j += 1
        if j - i < 3:
            keep.append(text[i])
            i += 1
        else:
            i = j
    return "".join(keep)


def _continues(run: str, char: str) -> bool:
    """Whether ``char`` extends ``run`` as a counting run (same step of -1, 0 or +1) or a keyboard row."""
    step = ord(char) - ord(run[-1])
    if step in (-1, 0, 1) and (len(run) == 1 or ord(run[1]) - ord(run[0]) == step):
        return True
    text = run + char
    return any(text in row or text[::-1] in row for row in _KEYBOARD_ROWS)


def secret_weakness(secret: str) -> str | None:
    """Why ``secret`` is too weak for a collector on a network (a few words), or None if it is not."""
    if secret.strip().lower() in DEFAULT_SECRETS:
        return "empty or a well-known default"
    if len(secret) < MIN_SECRET_LENGTH:
        return f"shorter than {MIN_SECRET_LENGTH} characters"
    text = "".join(c for c in secret.lower() if c.isalnum())
    if _smallest_period(text or secret) <= len(text or secret) // 2:
        return "one character or one short unit repeated"
    residue = _strip_runs(_WORD_RE.sub("", text))
    if len(residue) < MIN_RANDOM_CHARACTERS:
        return "mostly well-known words, keyboard runs or counting sequences"
    if len(set(secret)) < MIN_DISTINCT_CHARACTERS:
        return "too few different characters to be random"
    return None
