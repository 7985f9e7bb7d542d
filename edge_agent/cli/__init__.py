"""The `edge-agent` command line: thin, it parses flags and calls the library.

Each subcommand lives in its own module with a ``register(subparsers)``
function; this module only wires them together and turns every
:class:`EdgeAgentError` into one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from edge_agent.errors import EdgeAgentError

# Each module registers its own subcommands. Imports are lazy so that
# `edge-agent --help` never loads llama.cpp.
_COMMAND_MODULES = (
    "edge_agent.cli.ask",
    "edge_agent.cli.models",
    "edge_agent.cli.tools",
    "edge_agent.cli.doctor",
    "edge_agent.cli.traces",
    "edge_agent.cli.bench",
    "edge_agent.cli.offload",
    "edge_agent.cli.router",
    "edge_agent.cli.run",
    "edge_agent.cli.config",
    "edge_agent.cli.service",
    "edge_agent.cli.device",
    "edge_agent.cli.mcp",
)

EXIT_ERROR = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-agent",
        description="On-device agent runtime: small models, constrained tool calls, verified.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument(
        "--version", action="version", version=f"edge-agent {version()}", help="print the version"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def version() -> str:
    """The installed distribution's version; a bare source tree has none."""
    from importlib import metadata

    try:
        return metadata.version("edge-agent")
    except metadata.PackageNotFoundError:
        return "(version unknown: not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except EdgeAgentError as exc:
        if args.debug:
            raise
        print(f"edge-agent: error: {exc.one_line()}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("edge-agent: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `edge-agent ask --json ... | head`: the reader left
        _silence_stdout()
        return 141
    return code


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush of the
    closed pipe does not print a second traceback."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
