"""Bad input gets one clear line on stderr and a non-zero exit code, never a
traceback. Each case runs the real console entry point in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import pytest

from edge_agent.models import entry_for, resolve_model
from tests.conftest import run_cli

pytestmark = pytest.mark.slow  # the real CLI in subprocesses


def assert_one_line_error(proc, *needles: str) -> None:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("edge-agent: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]


def write_tools(tmp_path: Path, tools: object) -> Path:
    path = tmp_path / "tools.json"
    path.write_text(json.dumps(tools))
    return path


def tool_with(parameters: dict) -> list[dict]:
    return [{"name": "set_light", "description": "x", "parameters": parameters}]


def test_empty_prompt() -> None:
    assert_one_line_error(run_cli("ask", "   "), "prompt is empty")


def test_missing_model_file(tmp_path: Path) -> None:
    proc = run_cli("ask", "--model", str(tmp_path / "nope.gguf"), "--no-exec", "hi")
    assert_one_line_error(proc, "does not exist")


def test_unknown_model_name() -> None:
    assert_one_line_error(run_cli("ask", "--model", "no-such-model", "hi"), "unknown model")


def test_truncated_model_file(tmp_path: Path, smol) -> None:
    source = resolve_model("smollm2-135m").path
    cut = tmp_path / "cut.gguf"
    with source.open("rb") as src:
        cut.write_bytes(src.read(3_000_000))
    proc = run_cli("ask", "--model", str(cut), "--no-exec", "hi")
    assert_one_line_error(proc, "truncated")


def test_wrong_sha256(tmp_path: Path, smol) -> None:
    entry = entry_for("smollm2-135m")
    fake = tmp_path / entry.file
    shutil.copyfile(resolve_model("smollm2-135m").path, fake)
    with fake.open("r+b") as fh:  # same size, one byte changed in the weights
        fh.seek(entry.size - 1000)
        byte = fh.read(1)
        fh.seek(entry.size - 1000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    env = {**os.environ, "EDGE_AGENT_MODELS_DIR": str(tmp_path)}
    proc = run_cli("ask", "--model", "smollm2-135m", "--no-exec", "hi", env=env)
    assert_one_line_error(proc, "sha256", entry.sha256)


def _gguf_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


@pytest.mark.parametrize(
    ("label", "body", "needle"),
    [
        ("huge-string", _gguf_string("general.name") + struct.pack("<IQ", 8, 1 << 30), "claims"),
        ("huge-kv-count", b"", "kv"),
    ],
)
def test_crafted_gguf_header(tmp_path: Path, label: str, body: bytes, needle: str) -> None:
    n_kv = 1 if body else 1 << 40
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, n_kv) + body + b"\0" * 64
    path = tmp_path / f"{label}.gguf"
    path.write_bytes(header)
    assert_one_line_error(run_cli("ask", "--model", str(path), "--no-exec", "hi"), needle)


@pytest.mark.parametrize(
    ("label", "parameters", "needles"),
    [
        (
            "unknown-type",
            {"type": "object", "properties": {"room": {"type": "strng"}}},
            ["unknown type 'strng'", "/properties/room"],
        ),
        (
            "ref-cycle",
            {
                "type": "object",
                "properties": {"node": {"$ref": "#/$defs/a"}},
                "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
            },
            ["$ref cycle", "set_light"],
        ),
        (
            "empty-enum",
            {"type": "object", "properties": {"room": {"type": "string", "enum": []}}},
            ["enum must be a non-empty list", "/properties/room"],
        ),
    ],
)
def test_malformed_schema(tmp_path: Path, label: str, parameters: dict, needles: list[str]) -> None:
    path = write_tools(tmp_path, tool_with(parameters))
    assert_one_line_error(run_cli("ask", "--tools", str(path), "--no-exec", "hi"), *needles)


def test_tools_file_not_json(tmp_path: Path) -> None:
    path = tmp_path / "tools.json"
    path.write_text('[{"name": "set_light",')
    assert_one_line_error(run_cli("ask", "--tools", str(path), "hi"), "not valid JSON")


def test_tools_file_missing(tmp_path: Path) -> None:
    proc = run_cli("ask", "--tools", str(tmp_path / "none.json"), "hi")
    assert_one_line_error(proc, "none.json")


def test_debug_shows_traceback() -> None:
    proc = run_cli("--debug", "ask", "--model", "no-such-model", "hi")
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr
