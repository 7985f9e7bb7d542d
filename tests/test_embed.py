"""The embedding example runs as a user would run it: its own ``@tool``
function, the default model, the sandbox (``examples/embed.py``)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edge_agent.errors import ToolDefinitionError
from edge_agent.toolbox.registry import Registry
from tests.conftest import REPO


def test_a_function_without_the_mark_is_refused() -> None:
    def plain(x: int) -> int:
        return x

    with pytest.raises(ToolDefinitionError, match="not marked with @tool"):
        Registry.from_functions(plain)


@pytest.mark.model
def test_the_embedding_example_calls_and_runs_its_own_tool() -> None:
    request = "Water the back garden for 5 minutes"
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / "embed.py"), request],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "water({'zone': 'back', 'minutes': 5}) -> done" in proc.stdout
    assert "Watering the back garden for 5 minutes." in proc.stdout
