"""Can this llama.cpp build offload layers to a GPU? One line for `edge-agent doctor`.

``model.n_gpu_layers`` is handed to llama.cpp unchecked, and a build without
a GPU backend (the default CPU build) or with one but no device (a CUDA build
on a machine without a GPU) silently runs every layer on the CPU. So doctor
says which case this machine is in, using llama.cpp's own answer,
``llama_supports_gpu_offload()``: true only when a GPU backend was compiled
in *and* found a device.
"""

from __future__ import annotations


def describe_gpu_offload(supported: bool | None) -> str:
    """The doctor line for llama.cpp's answer (None: llama.cpp is not importable)."""
    if supported is None:
        return "GPU offload: unknown (llama-cpp-python cannot be imported)"
    if supported:
        return (
            "GPU offload: available (set model.n_gpu_layers: -1 offloads every layer; "
            "0, the default, keeps them on the CPU)"
        )
    return (
        "GPU offload: no GPU (this llama.cpp build finds no GPU device; every layer runs "
        "on the CPU, whatever model.n_gpu_layers says; on a Jetson, reinstall with "
        "EDGE_AGENT_CUDA=1 ./install.sh)"
    )


def gpu_offload_supported() -> bool | None:
    """llama.cpp's ``llama_supports_gpu_offload()``; None if llama_cpp does not import."""
    try:
        import llama_cpp
    except (ImportError, OSError):  # OSError: the shared library failed to load
        return None
    return bool(llama_cpp.llama_supports_gpu_offload())


def gpu_offload_line() -> str:
    """What doctor prints about GPU offload on this machine."""
    return describe_gpu_offload(gpu_offload_supported())


__all__ = ["describe_gpu_offload", "gpu_offload_line", "gpu_offload_supported"]
