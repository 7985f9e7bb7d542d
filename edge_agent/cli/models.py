"""`edge-agent models list | fetch NAME | verify NAME|PATH | path NAME`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_agent import models


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("models", help="list, fetch and verify model files")
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    sub.add_parser("list", help="known models and whether they are cached").set_defaults(
        handler=_list
    )
    fetch = sub.add_parser("fetch", help="download, assemble and verify a model")
    fetch.add_argument("name", nargs="?", help="manifest name (default: the default SLM)")
    fetch.add_argument("--force", action="store_true", help="fetch again even if cached")
    fetch.add_argument("--quiet", action="store_true", help="no progress bar")
    fetch.set_defaults(handler=_fetch)
    verify = sub.add_parser("verify", help="re-hash a model and validate its GGUF header")
    verify.add_argument("name", help="manifest name or .gguf path")
    verify.set_defaults(handler=_verify)
    path = sub.add_parser("path", help="print where a model's file is")
    path.add_argument("name", nargs="?", help="manifest name (default: the default SLM)")
    path.set_defaults(handler=_path)


def _list(args: argparse.Namespace) -> int:
    del args
    cached = models.cached_models()
    rows = [("NAME", "ROLE", "SIZE", "CACHED", "DESCRIPTION")]
    for name, entry in models.load_manifest().items():
        mark = "*" if entry.default else ""
        size = f"{entry.size / 1e6:.0f} MB"
        rows.append(
            (name + mark, entry.role, size, "yes" if cached[name] else "no", entry.description)
        )
    _table(rows)
    print(f"\n* default model; cache: {models.models_dir()}")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    name = args.name or models.default_model_name()
    path = models.fetch_model(name, progress=not args.quiet, force=args.force)
    print(path)
    return 0


def _verify(args: argparse.Namespace) -> int:
    if models.is_path_like(args.name):
        info = models.resolve_model(args.name).info
        path = Path(args.name)
    else:
        path = models.model_path(args.name)
        if not path.is_file():
            models.resolve_model(args.name)  # raises the "not downloaded" error
        entry = models.entry_for(args.name)
        info = models.verify_file(path, entry, full=True)
        print(f"sha256 ok: {entry.sha256}")
    ctx = info.context_length or "?"
    print(f"GGUF v{info.version} ok: {info.architecture}, {info.n_tensors} tensors, context {ctx}")
    print(path)
    return 0


def _path(args: argparse.Namespace) -> int:
    name = args.name or models.default_model_name()
    print(models.resolve_model(name).path)
    return 0


def _table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]))
