"""The daemon: one process that accepts work, journals it, answers it and survives restarts.

``daemon`` (queue, worker, restarts), ``api`` and ``openapi`` (the HTTP door),
``mcp_server`` (the MCP door, ``edge-agent mcp``), ``dashboard`` and ``ui/``
(the status page), ``routing_host`` (what the daemon keeps for routing),
``crashes`` (own crash or outside kill), ``traces`` (fine-tuning exports) and
``service`` (the systemd unit). The journal and the jobs it stores are in
:mod:`edge_agent.records`. A change to how requests arrive or are served
goes here.
"""
