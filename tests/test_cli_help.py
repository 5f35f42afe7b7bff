"""``--help`` that helps: every command of every room says what it does, and every option says what it is."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from beeaudio.cli import build_parser


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield " ".join((*path, name)), sub
                yield from _commands(sub, (*path, name))


COMMANDS = dict(_commands(build_parser()))


def test_every_room_contributes_its_commands() -> None:
    for name in ("classify", "info", "train", "export", "demo", "device run", "collector serve"):
        assert name in COMMANDS, sorted(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_and_option_is_described(name: str) -> None:
    parser = COMMANDS[name]
    assert parser.description, f"`beeaudio {name} --help` has no description"
    undocumented = [
        "/".join(action.option_strings) or action.dest
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction | argparse._SubParsersAction)
        and not (action.help and action.help != argparse.SUPPRESS)
    ]
    assert not undocumented, f"`beeaudio {name} --help`: no help for {undocumented}"
    parser.format_help()  # a stray % in a help string raises here
