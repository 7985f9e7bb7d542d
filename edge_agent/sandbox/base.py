"""The sandbox interface: limits in, a result out, one method.

A tool that raises, runs too long or prints too much is *data*: the call
returns a :class:`SandboxResult` with ``ok=False``, because model mistakes
and bad tools are recorded and fed back, not crashed on.
:class:`~edge_agent.errors.SandboxError` is raised only when the sandbox
itself cannot work (no isolation for an untrusted tool, a broken setup).

This sandbox stops accidents and common attacks; it is not a VM.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from edge_agent.toolbox.registry import Tool

KilledBy = Literal["timeout", "cpu", "memory", "output", "signal"]


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one call. ``None`` means: derive it from the tool.

    ``memory_mb`` is address space (RLIMIT_AS) per process, and Python with
    pydantic loaded already maps about 100 MiB of it; where a cgroup with the
    memory controller exists it also caps the whole call. ``max_procs``
    counts every process and thread of the call, its supervisor included.
    """

    cpu_s: int | None = None  # default: the wall timeout rounded up, plus 1
    memory_mb: int = 1024
    max_procs: int = 32
    max_open_files: int = 256
    max_file_mb: int = 64  # RLIMIT_FSIZE: the largest file a tool may write
    max_output_bytes: int = 1 << 20  # stdout+stderr, and the JSON result, each
    wall_s: float | None = None  # default: the tool's ``timeout_s``

    def wall_for(self, tool: Tool) -> float:
        return self.wall_s if self.wall_s is not None else float(tool.policy.timeout_s)

    def cpu_for(self, tool: Tool) -> int:
        return self.cpu_s if self.cpu_s is not None else int(self.wall_for(tool) + 0.999) + 1


@dataclass(frozen=True)
class SandboxResult:
    """What one call did. ``value`` is the tool's JSON return value when ``ok``."""

    ok: bool
    value: Any = None
    error: str | None = None
    error_type: str | None = None
    duration_s: float = 0.0
    exit_code: int | None = None
    killed_by: KilledBy | None = None
    layers: tuple[str, ...] = ()
    output: str = field(default="", repr=False)  # the tool's stdout+stderr (capped)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "value": self.value,
            "error": self.error,
            "error_type": self.error_type,
            "duration_s": round(self.duration_s, 4),
            "exit_code": self.exit_code,
            "killed_by": self.killed_by,
            "layers": list(self.layers),
        }


class Sandbox(Protocol):
    """Runs one tool call somewhere the tool cannot hurt its caller."""

    def run(self, tool: Tool, arguments: dict[str, Any]) -> SandboxResult: ...


__all__ = ["KilledBy", "Sandbox", "SandboxLimits", "SandboxResult"]
