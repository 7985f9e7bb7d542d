"""The ``[mcp]`` table: MCP servers whose tools join the registry, and how
``edge-agent mcp`` offers this device's tools over HTTP.

An MCP server is third-party code: its tools default to the cautious
side-effect class (``dangerous``, so each call needs the owner's
confirmation), and a stdio server gets no network unless the config grants
it. The config, not the server, says how careful to be.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge_agent.toolbox.registry import SideEffect

_NAME = r"^[A-Za-z][A-Za-z0-9_-]{0,39}$"


class McpServerSettings(BaseModel):
    """One ``[[mcp.servers]]`` entry: a stdio ``command`` or a streamable HTTP ``url``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=_NAME, description="the server's name; also the name of its private folder"
    )
    command: str | None = Field(
        None, min_length=1, description="program that starts a stdio server (in the sandbox)"
    )
    args: list[str] = Field(default_factory=list, description="its arguments")
    url: str | None = Field(
        None, pattern=r"^https?://", description="a streamable HTTP server instead of a command"
    )
    token_file: Path | None = Field(None, description="bearer token file for the url (mode 0600)")
    side_effect: SideEffect = Field(
        "dangerous", description="side-effect class of the server's tools (dangerous: confirm)"
    )
    tools: dict[str, SideEffect] = Field(
        default_factory=dict, description="side-effect class per tool name, over side_effect"
    )
    allow_network: bool = Field(False, description="let the stdio server reach the network")
    timeout_s: float = Field(
        30.0, gt=0, le=600, description="longest a call may take, the server's start included"
    )
    read: list[Path] = Field(
        default_factory=list,
        description="more paths the stdio server may read (its program's files are added)",
    )

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerSettings:
        if (self.command is None) == (self.url is None):
            raise ValueError("give exactly one of command and url")
        return self

    def side_effect_of(self, tool: str) -> SideEffect:
        return self.tools.get(tool, self.side_effect)


class McpServeSettings(BaseModel):
    """``edge-agent mcp --http``: where the streamable HTTP endpoint listens."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", min_length=1, max_length=253, description="bind address")
    port: int = Field(8765, ge=1, le=65535, description="TCP port")
    token_file: Path | None = Field(
        None, description="bearer token file (mode 0600); EDGE_AGENT_MCP_TOKEN takes precedence"
    )


class McpSettings(BaseModel):
    """The ``[mcp]`` table."""

    model_config = ConfigDict(extra="forbid")

    servers: list[McpServerSettings] = Field(
        default_factory=list, description="MCP servers whose tools join the registry"
    )
    serve: McpServeSettings = Field(
        default_factory=lambda: McpServeSettings(), description="edge-agent mcp over HTTP"
    )

    @model_validator(mode="after")
    def _unique_names(self) -> McpSettings:
        names = [s.name for s in self.servers]
        if len(names) != len(set(names)):
            raise ValueError("two MCP servers have the same name")
        return self


__all__ = ["McpServeSettings", "McpServerSettings", "McpSettings"]
