"""`edge-agent config check FILE | example`: the real entry point, in a subprocess."""

from __future__ import annotations

import re
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from edge_agent.config import EdgeAgentConfig
from tests.conftest import run_cli

pytestmark = pytest.mark.slow  # the real CLI in subprocesses

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def check(tmp_path: Path, text: str) -> tuple[int, str, str]:
    path = tmp_path / "edge-agent.toml"
    path.write_text(text)
    proc = run_cli("config", "check", str(path), timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


def one_line_error(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge-agent: error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def fields(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, FieldInfo]]:
    """Every field, nested ones included, by dotted name."""
    for name, info in model.model_fields.items():
        yield prefix + name, info
        union = typing.get_origin(info.annotation) in (typing.Union, types.UnionType)
        for arg in (info.annotation, *(typing.get_args(info.annotation) if union else ())):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                yield from fields(arg, f"{prefix}{name}.")


def test_example_is_valid_toml_with_every_field_and_passes_check(tmp_path: Path) -> None:
    proc = run_cli("config", "example", timeout=60)
    assert proc.returncode == 0, proc.stderr
    tomllib.loads(proc.stdout)
    for dotted, info in fields(EdgeAgentConfig):
        key = dotted.rpartition(".")[2]
        shown = re.search(
            rf"^(# )?({re.escape(key)} = |\[{re.escape(dotted)}\])", proc.stdout, re.M
        )
        assert shown, dotted
        if info.description:
            assert info.description in proc.stdout, dotted
    assert "<= 65535" in proc.stdout and 'one of "auto"' in proc.stdout
    code, out, err = check(tmp_path, proc.stdout)
    assert code == 0, err
    assert out.strip().endswith(": ok")


def test_example_defaults_are_the_model_defaults() -> None:
    proc = run_cli("config", "example", timeout=60)
    parsed = tomllib.loads(proc.stdout)
    assert EdgeAgentConfig.model_validate(parsed) == EdgeAgentConfig.model_validate({})


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ('[server]\nhost = "127.0.0.1"\nprot = 8080\n', (":3: ", "server.prot", "Extra inputs")),
        ("[model]\nn_threads = 0\n", (":2: ", "model.n_threads", "greater than or equal to 1")),
        ('[server]\nqueue_size = "many"\n', (":2: ", "server.queue_size")),
        ("[serverr]\nport = 1\n", (":1: ", "serverr")),
        ('[agent]\ntool_choice = "always"\n', ("agent.tool_choice", "'auto'")),
        ("[server\nport = 1\n", ("edge-agent.toml",)),
    ],
    ids=["unknown-key", "below-bound", "wrong-type", "unknown-table", "bad-choice", "syntax"],
)
def test_check_points_at_the_offending_key(
    tmp_path: Path, text: str, needles: tuple[str, ...]
) -> None:
    code, _, err = check(tmp_path, text)
    assert code == 1
    line = one_line_error(err)
    for needle in needles:
        assert needle in line, line


def test_check_refuses_a_public_bind_without_token(tmp_path: Path) -> None:
    code, _, err = check(tmp_path, '[server]\nhost = "0.0.0.0"\n')
    assert code == 1
    assert "without an API token" in one_line_error(err)


def test_check_refuses_a_readable_token_file(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("0123456789abcdef0123\n")
    token.chmod(0o640)
    text = f'[server]\nhost = "0.0.0.0"\ntoken_file = "{token}"\n'
    code, _, err = check(tmp_path, text)
    assert code == 1
    assert "chmod 600" in one_line_error(err)
    token.chmod(0o600)
    assert check(tmp_path, text)[0] == 0


def test_check_missing_file(tmp_path: Path) -> None:
    proc = run_cli("config", "check", str(tmp_path / "nope.toml"), timeout=60)
    assert proc.returncode == 1
    assert "does not exist" in one_line_error(proc.stderr)
