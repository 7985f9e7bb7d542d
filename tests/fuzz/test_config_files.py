"""Door: config files (``edge_agent.config.load_config`` on TOML text).

Documents are built from the real section and key names with values of any
TOML type (so generation reaches pydantic's checks, not only the TOML
parser), then sometimes mutated; raw text goes in too. Every file must load
or raise :class:`~edge_agent.errors.ConfigError`."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import BaseModel

from edge_agent.config import EdgeAgentConfig, load_config
from edge_agent.errors import ConfigError
from tests.fuzz.conftest import FUZZ, Door
from tests.fuzz.strategies import NASTY_TEXT, mutated


def _keys(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


SECTIONS: dict[str, list[str]] = {}
for _name, _info in EdgeAgentConfig.model_fields.items():
    _type = _info.annotation
    _inner = next((a for a in getattr(_type, "__args__", ()) if isinstance(a, type)), _type)
    if isinstance(_inner, type) and issubclass(_inner, BaseModel):
        SECTIONS[_name] = _keys(_inner)
TOP_KEYS = [k for k in EdgeAgentConfig.model_fields if k not in SECTIONS]

TOML_SCALARS = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(),
    NASTY_TEXT,
    st.datetimes(timezones=st.just(dt.UTC)),
    st.dates(),
)
TOML_VALUES = st.recursive(
    TOML_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["a", "b"]), inner, max_size=2)
    ),
    max_leaves=6,
)


def toml_value(value: Any) -> str:
    """A TOML literal for a generated value (inline tables for dicts)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string, escapes included
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"


@st.composite
def documents(draw: st.DrawFn) -> str:
    lines = []
    for key in draw(st.lists(st.sampled_from([*TOP_KEYS, "bogus"]), max_size=2, unique=True)):
        lines.append(f"{key} = {toml_value(draw(TOML_VALUES))}")
    sections = draw(st.lists(st.sampled_from([*SECTIONS, "nope"]), max_size=4, unique=True))
    for section in sections:
        lines.append(f"[{section}]")
        names = [*SECTIONS.get(section, ["x"]), "unknown_key"]
        for key in draw(st.lists(st.sampled_from(names), max_size=4, unique=True)):
            lines.append(f"{key} = {toml_value(draw(TOML_VALUES))}")
    return "\n".join(lines) + "\n"


TEXTS = st.one_of(
    documents(),
    documents(),
    documents().flatmap(lambda d: mutated(d.encode()).map(lambda b: b.decode("utf-8", "replace"))),
    st.text(max_size=200),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
    st.integers(100, 3000).map(lambda n: "a = " + "[" * n + "]" * n),
)


@pytest.fixture(autouse=True)
def _no_env_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """The file alone decides: no EDGE_AGENT_* variables from the shell."""
    import os

    for name in list(os.environ):
        if name.startswith("EDGE_AGENT_") and not name.startswith("EDGE_AGENT_FUZZ"):
            monkeypatch.delenv(name)


def test_config_files(door: Door, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"

    @FUZZ
    @given(text=TEXTS)
    # Found by this test: deeply nested arrays raised RecursionError out of tomllib.
    @example(text="a = " + "[" * 3000 + "]" * 3000)
    def one(text: str) -> None:
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        result = door.run(lambda: load_config(path), ConfigError)
        assert isinstance(result, EdgeAgentConfig | ConfigError)
        if isinstance(result, ConfigError):
            assert result.message
            syntax = "line" in result.message and "column" in result.message
            door.tally("syntax" if syntax else "value")

    one()
