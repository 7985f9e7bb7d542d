"""Shared fixtures. Model tests use the real llama.cpp engine on real GGUF
files, fetched (and verified) through edge-agent's own model store the first
time they are needed; nothing here is a mock."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.engine.llama import LlamaEngine
from edge_agent.models import fetch_model, resolve_model

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
# One llama.cpp instance at a time, with at most as many threads as cores:
# two instances on two cores slow each other down by an order of magnitude.
TEST_THREADS = 2


# Fixtures that load a model or start something that does: a test that uses
# one (directly or through another fixture) is a model test, marked or not.
MODEL_FIXTURES = frozenset({
    "qwen", "smol", "qwen15", "guided_qwen", "slm", "llm", "llm_server",
    "models_ready", "smol_daemon", "spawn", "spawn_daemon", "standin",
})  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark model tests by their fixtures, so ``-m "not model and not slow"``
    (the fast tests: pure code, the named scripted fake, real sandboxes and
    brokers) never loads a model by accident."""
    for item in items:
        if MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.model)


def _engine(name: str) -> LlamaEngine:
    fetch_model(name, progress=False)
    model = resolve_model(name)
    return LlamaEngine(model.path, n_ctx=4096, n_threads=TEST_THREADS, name=name)


@pytest.fixture(scope="session")
def qwen() -> Iterator[LlamaEngine]:
    """The default SLM, Qwen2.5-Coder-0.5B-Instruct Q4_K_M."""
    yield _engine("qwen2.5-coder-0.5b")


@pytest.fixture(scope="session")
def smol() -> Iterator[LlamaEngine]:
    """SmolLM2-135M: fast, for tests where accuracy does not matter."""
    yield _engine("smollm2-135m")


@pytest.fixture(scope="session", autouse=True)
def private_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Nothing a test runs writes to the user's state folder (journal, tool
    state, KV cache); tests that need their own still set the variable."""
    folder = tmp_path_factory.mktemp("state")
    before = os.environ.get("EDGE_AGENT_STATE_DIR")
    os.environ["EDGE_AGENT_STATE_DIR"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("EDGE_AGENT_STATE_DIR", None)
    else:
        os.environ["EDGE_AGENT_STATE_DIR"] = before


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """The real console entry point in a subprocess, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
