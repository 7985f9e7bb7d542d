"""GPU offload on this (GPU-less) machine: ``model.n_gpu_layers`` reaches
llama.cpp, and doctor says there is no GPU."""

from __future__ import annotations

import pytest

from edge_agent.config import ModelSettings
from edge_agent.engine import load_engine
from edge_agent.engine.gpu import describe_gpu_offload, gpu_offload_supported
from tests.conftest import TEST_THREADS, run_cli

ALL_LAYERS = 0x7FFFFFFF  # what llama-cpp-python passes to llama.cpp for -1


def test_n_gpu_layers_defaults_to_the_cpu_and_refuses_nonsense() -> None:
    assert ModelSettings().n_gpu_layers == 0
    assert ModelSettings(n_gpu_layers=-1).n_gpu_layers == -1
    with pytest.raises(ValueError, match="n_gpu_layers"):
        ModelSettings(n_gpu_layers=-2)


@pytest.mark.model
@pytest.mark.parametrize(("layers", "passed"), [(0, 0), (7, 7), (-1, ALL_LAYERS)])
def test_n_gpu_layers_reaches_llama_cpp(layers: int, passed: int) -> None:
    settings = ModelSettings(name="smollm2-135m", n_gpu_layers=layers)
    engine = load_engine(
        settings.name, n_ctx=512, n_threads=TEST_THREADS, n_gpu_layers=settings.n_gpu_layers
    )
    assert engine.llama.model_params.n_gpu_layers == passed
    guided = load_engine(
        settings.name, n_ctx=512, n_threads=TEST_THREADS, n_gpu_layers=layers, engine="llguidance"
    )
    assert guided.llama.model_params.n_gpu_layers == passed


def test_the_doctor_line_for_each_answer() -> None:
    assert describe_gpu_offload(False).startswith("GPU offload: no GPU")
    assert "EDGE_AGENT_CUDA=1" in describe_gpu_offload(False)
    assert describe_gpu_offload(True).startswith("GPU offload: available")
    assert "unknown" in describe_gpu_offload(None)


def test_doctor_reports_no_gpu_here() -> None:
    assert gpu_offload_supported() is False, "this test machine has no GPU"
    done = run_cli("doctor", timeout=120)
    assert done.returncode == 0, done.stderr
    assert "GPU offload: no GPU" in done.stdout
