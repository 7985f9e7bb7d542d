"""The public API is small and pinned, and importing it stays cheap."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import pytest

import edge_agent
from edge_agent import errors

HEAVY = ("llama_cpp", "paho", "onnxruntime")


def test_the_public_names_are_pinned() -> None:
    assert edge_agent.__all__ == ["Agent", "EdgeAgentError", "__version__", "tool"]


def test_every_public_name_resolves() -> None:
    assert edge_agent.EdgeAgentError is errors.EdgeAgentError
    assert callable(edge_agent.tool)
    assert isinstance(edge_agent.__version__, str)
    assert edge_agent.__version__.count(".") == 2
    assert inspect.isclass(edge_agent.Agent)


def test_unknown_attributes_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Agnet'"):
        _ = edge_agent.Agnet  # type: ignore[attr-defined]


def test_every_error_is_rooted_at_edge_agent_error() -> None:
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass)]
    ours = [c for c in classes if c.__module__ == errors.__name__]
    assert len(ours) > 10
    for cls in ours:
        assert issubclass(cls, edge_agent.EdgeAgentError), cls
        assert cls.__name__ in (errors.__doc__ or ""), f"{cls.__name__} missing from the tree"


def imported_after(statement: str) -> list[str]:
    """Top-level heavy modules present in ``sys.modules`` after ``statement``,
    run in a fresh interpreter."""
    code = (
        f"import json, sys\n{statement}\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_edge_agent_loads_no_heavy_dependency() -> None:
    assert imported_after("import edge_agent") == []


def test_the_pure_core_loads_no_heavy_dependency() -> None:
    statement = (
        "import edge_agent.decoding.schema, edge_agent.decoding.grammar, "
        "edge_agent.decoding.calls, edge_agent.decoding.prompts, edge_agent.config, "
        "edge_agent.toolbox.verify, edge_agent.toolbox.registry"
    )
    assert imported_after(statement) == []


def test_the_subprocess_check_would_notice_a_heavy_import() -> None:
    assert imported_after("import llama_cpp") == ["llama_cpp"]
