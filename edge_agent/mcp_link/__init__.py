"""Tools from MCP servers (Model Context Protocol), as registry tools like any other.

``settings`` (the ``[mcp]`` table), ``tools`` (remote tools listed into the
registry) and ``proxy`` (one MCP session per call, inside the sandbox child).
The other direction, this device's tools offered to MCP clients, is a door of
the daemon's kind: :mod:`edge_agent.runtime.mcp_server`. Named ``mcp_link`` so
that it never shadows the ``mcp`` SDK it uses.
"""
