"""`edge-agent traces export`: the journal's failed attempts as JSONL for fine-tuning."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from edge_agent.errors import InputError
from edge_agent.records.journal import Journal, default_path
from edge_agent.runtime.traces import Exported, export_traces, parse_since


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("traces", help="fine-tuning traces from the journal")
    commands = parser.add_subparsers(dest="traces_command", metavar="COMMAND", required=True)
    export = commands.add_parser(
        "export",
        help="requests whose first output was rejected, as JSONL (see edge_agent.runtime.traces)",
    )
    export.add_argument(
        "--journal", type=Path, metavar="PATH", help="journal file (default: state dir)"
    )
    export.add_argument("--out", default="-", metavar="FILE|-", help="output file, - for stdout")
    export.add_argument("--since", metavar="ISO", help="only requests received at or after this")
    export.add_argument(
        "--only-corrected", action="store_true", help="only requests a later attempt corrected"
    )
    export.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    since = parse_since(args.since) if args.since else None
    path = args.journal or default_path()
    with Journal(path, create=False) as journal:
        if args.out == "-":
            summary = export_traces(
                journal, sys.stdout, since=since, only_corrected=args.only_corrected
            )
            where = "stdout"
        else:
            out = Path(args.out)
            summary = _export_to_file(journal, out, since, args.only_corrected)
            where = str(out)
    print(
        f"exported {summary.lines} trace(s), {summary.corrected} corrected, to {where}",
        file=sys.stderr,
    )
    return 0


def _export_to_file(journal: Journal, out: Path, since: float | None, only: bool) -> Exported:
    """Write beside the target and rename: a reader never sees half a file."""
    if out.is_dir():
        raise InputError(f"--out {out} is a directory")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    except OSError as exc:
        raise InputError(f"cannot write {out}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:  # mkstemp makes it 0600
            summary = export_traces(journal, stream, since=since, only_corrected=only)
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return summary
