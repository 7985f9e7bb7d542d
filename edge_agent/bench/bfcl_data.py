"""Loading BFCL v4 single-turn data into :class:`BfclItem` records.

BFCL ships questions and ground truth ("possible answers") as two JSON Lines
files per category, despite the ``.json`` name: ``BFCL_v4_<category>.json``.
Every problem with them is reported as one :class:`BenchError` line that names
the file and the line, since a long evaluation should not start on bad data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.bench.bfcl_check import Call, is_relevance_category
from edge_agent.errors import BenchError, InputError

_FILE_NAME = re.compile(r"^BFCL_v\d+_(?P<category>\w+)\.json$")
_ID_INDEX = re.compile(r"_\d+(?:-\d+)*$")  # "simple_python_0", "live_simple_0-0-0"

Row = tuple[int, dict[str, Any]]
"""A parsed JSON Lines row with its 1-based line number."""


@dataclass(frozen=True)
class BfclItem:
    """One benchmark question, with its ground truth when it has one.

    ``messages`` is the first (and in v4 single-turn data, only) turn of the
    question, system messages included. ``ground_truth`` is None for the
    relevance categories and when no answers file was given.
    """

    id: str
    category: str
    messages: list[dict[str, Any]]
    functions: list[dict[str, Any]]
    ground_truth: list[dict[str, Any]] | None


def category_from_filename(path: Path) -> str | None:
    """``BFCL_v4_simple_python.json`` -> ``simple_python``; None for other names."""
    match = _FILE_NAME.match(path.name)
    return match.group("category") if match else None


def category_from_id(item_id: str) -> str | None:
    """``simple_python_0`` -> ``simple_python``, ``live_simple_0-0-0`` -> ``live_simple``."""
    category = _ID_INDEX.sub("", item_id)
    return category if category and category != item_id else None


def load_items(
    questions: Path,
    answers: Path | None = None,
    *,
    category: str | None = None,
    limit: int | None = None,
) -> list[BfclItem]:
    """Read up to ``limit`` questions and join their ground truth by id.

    The category is ``category`` if given, else what the file name says, else
    the id's prefix. Without ``answers`` every ground truth is None (enough to
    run a model); with it, a non-relevance question whose id has no answer is
    an error, because it could not be scored.
    """
    file_category = category or category_from_filename(questions)
    truth = _read_answers(answers) if answers is not None else None
    items = []
    for line_no, row in _read_rows(questions, limit):
        item = _make_item(questions, line_no, row, file_category)
        if truth is not None:
            item = _join_answer(item, truth, answers, f"{questions}:{line_no}")
        items.append(item)
    return items


def _read_rows(path: Path, limit: int | None = None) -> Iterator[Row]:
    """Yield ``(line_no, object)`` for each non-blank line, stopping after ``limit`` rows."""
    if limit is not None and limit <= 0:
        return
    try:
        with path.open(encoding="utf-8") as lines:
            count = 0
            for line_no, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                yield line_no, _parse_line(path, line_no, line)
                count += 1
                if limit is not None and count >= limit:
                    return
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"{path}: cannot read the file ({exc})") from exc


def _parse_line(path: Path, line_no: int, line: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BenchError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from exc
    if not isinstance(row, dict):
        raise BenchError(f"{path}:{line_no}: expected a JSON object, got {type(row).__name__}")
    return row


def _field(path: Path, line_no: int, row: dict[str, Any], key: str, kind: type) -> Any:
    """``row[key]``, which must exist and be of ``kind``."""
    if key not in row:
        raise BenchError(f"{path}:{line_no}: missing '{key}'")
    value = row[key]
    if not isinstance(value, kind):
        raise BenchError(f"{path}:{line_no}: '{key}' must be a {kind.__name__}")
    return value


def _first_turn(path: Path, line_no: int, row: dict[str, Any]) -> list[dict[str, Any]]:
    """The messages of the first turn; BFCL nests them as ``question: [[msg, ...]]``."""
    turns = _field(path, line_no, row, "question", list)
    if not turns or not isinstance(turns[0], list):
        raise BenchError(
            f"{path}:{line_no}: 'question' must be a list of turns (lists of messages)"
        )
    return list(turns[0])


def _make_item(path: Path, line_no: int, row: dict[str, Any], category: str | None) -> BfclItem:
    item_id = _field(path, line_no, row, "id", str)
    messages = _first_turn(path, line_no, row)
    functions = _field(path, line_no, row, "function", list)
    resolved = category or category_from_id(item_id)
    if resolved is None:
        raise BenchError(f"{path}:{line_no}: cannot tell the category of id '{item_id}'")
    return BfclItem(item_id, resolved, messages, functions, None)


def _read_answers(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Ground truth by id from a possible_answer file."""
    truth: dict[str, list[dict[str, Any]]] = {}
    for line_no, row in _read_rows(path):
        item_id = _field(path, line_no, row, "id", str)
        truth[item_id] = _field(path, line_no, row, "ground_truth", list)
    return truth


def _join_answer(
    item: BfclItem, truth: dict[str, list[dict[str, Any]]], answers: Path | None, where: str
) -> BfclItem:
    """Attach the item's ground truth; only relevance items may lack one."""
    ground_truth = truth.get(item.id)
    if ground_truth is None and not is_relevance_category(item.category):
        raise BenchError(f"{answers}: no ground truth for id '{item.id}' (needed by {where})")
    return BfclItem(item.id, item.category, item.messages, item.functions, ground_truth)


def decode_calls(calls: list[dict[str, Any]]) -> list[Call]:
    """Turn ``[{"name": n, "arguments": {...}}]`` into the checker's ``[{n: {...}}]``.

    ``arguments`` may also be a JSON object in a string (the OpenAI wire
    format) and may be absent (no arguments). A malformed entry raises
    :class:`InputError`; a scorer should treat that as a decode failure and
    pass ``None`` to :func:`~edge_agent.bench.bfcl_check.check_item`.
    """
    return [{_call_name(call): _call_arguments(call)} for call in calls]


def _call_name(call: dict[str, Any]) -> str:
    name = call.get("name") if isinstance(call, dict) else None
    if not isinstance(name, str) or not name:
        raise InputError(f"a decoded call has no function name: {call!r:.80}")
    return name


def _call_arguments(call: dict[str, Any]) -> dict[str, Any]:
    arguments = call.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"arguments of '{call['name']}' are not valid JSON ({exc.msg})"
            ) from exc
    if not isinstance(arguments, dict):
        raise InputError(f"arguments of '{call['name']}' must be a JSON object")
    return arguments
