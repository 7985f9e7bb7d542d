"""`edge-agent tools list | run NAME --args JSON`: the registry and the sandbox by hand."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edge_agent.assemble import Assembly
from edge_agent.errors import InputError, ToolError
from edge_agent.toolbox.registry import Registry, validate_args


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("tools", help="list the tools, run one in the sandbox")
    sub = parser.add_subparsers(dest="tools_command", metavar="ACTION", required=True)
    listing = sub.add_parser("list", help="the registered tools")
    _tools_dir(listing)
    listing.set_defaults(handler=_list)
    run = sub.add_parser("run", help="validate arguments and run one tool in the sandbox")
    run.add_argument("name", help="the tool's name")
    run.add_argument("--args", default="{}", metavar="JSON", help="the arguments, a JSON object")
    _tools_dir(run)
    run.add_argument("--json", action="store_true", help="print the whole result record")
    run.set_defaults(handler=_run)


def _tools_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tools-dir", type=Path, action="append", default=[], metavar="DIR",
        help="another folder of tool modules (repeatable)",
    )  # fmt: skip


def _registry(dirs: list[Path]) -> Registry:
    return Assembly().registry(dirs=dirs)


def _list(args: argparse.Namespace) -> int:
    rows = [("NAME", "SIDE EFFECT", "NETWORK", "TIMEOUT", "DESCRIPTION")]
    for item in _registry(args.tools_dir):
        policy = item.policy
        network = "yes" if policy.network else "no"
        rows.append((item.name, policy.side_effect, network, f"{policy.timeout_s:g} s",
                     item.spec.description.split("\n")[0]))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip())
    return 0


def _run(args: argparse.Namespace) -> int:
    parts = Assembly()
    item = parts.registry(dirs=args.tools_dir).get(args.name)
    arguments = _arguments(args.args)
    try:
        model = validate_args(item, arguments)
    except ValidationError as exc:
        raise InputError(f"invalid arguments for {item.name!r}: {_one_line(exc)}") from None
    if model is not None:
        arguments = model.model_dump(mode="json")
    # The assembly's sandbox: state=True tools get the state folder that
    # `ask` and the daemon use, so `tools run set_light` acts on the same devices.
    result = parts.sandbox().run(item, arguments)
    if args.json:
        print(json.dumps(result.to_json()))
        return 0 if result.ok else 1
    if not result.ok:
        reason = f" ({result.killed_by})" if result.killed_by else ""
        raise ToolError(f"tool {item.name!r} failed{reason}: {result.error_type}: {result.error}")
    print(json.dumps(result.value))
    return 0


def _arguments(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InputError(f"--args is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InputError('--args must be a JSON object, e.g. \'{"room": "kitchen"}\'')
    return value


def _one_line(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "arguments"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
