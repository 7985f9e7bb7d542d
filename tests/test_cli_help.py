"""Every subcommand and every option of the `edge-agent` parser says what it
does, and `--version` prints the installed version."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from importlib import metadata

import pytest

from edge_agent.cli import build_parser, main
from tests.conftest import run_cli


def walk(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, str | None]]:
    """(where, help) for each option, positional and subcommand, depth first."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                if name in helps:  # aliases share their command's entry
                    yield f"{path} {name}", helps[name]
                    yield from walk(sub, f"{path} {name}")
        else:
            where = "/".join(action.option_strings) or action.dest
            yield f"{path} {where}", action.help


def test_every_subcommand_and_option_has_help() -> None:
    entries = list(walk(build_parser(), "edge-agent"))
    assert len(entries) > 50  # the walk reached the subcommands
    missing = [where for where, text in entries if not text or text == argparse.SUPPRESS]
    assert not missing, missing


def test_version_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"edge-agent {metadata.version('edge-agent')}"


def test_version_from_the_console_entry_point() -> None:
    proc = run_cli("--version")
    assert proc.returncode == 0, proc.stderr
    name, number = proc.stdout.split()
    assert name == "edge-agent" and number.count(".") == 2
