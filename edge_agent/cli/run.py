"""`edge-agent run`: the daemon and its local API, in the foreground.

Sensible defaults need no config file: the default model, 127.0.0.1:8080,
a journal in the state directory (``EDGE_AGENT_STATE_DIR``). The API token
comes from ``EDGE_AGENT_API_TOKEN`` or ``server.token_file``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    from edge_agent.config import ServerSettings

    fields = ServerSettings.model_fields
    parser = subparsers.add_parser("run", help="serve the local OpenAI-compatible API")
    parser.add_argument("--config", type=Path, metavar="FILE", help="edge-agent TOML config")
    for flag, kind in (("host", str), ("port", int)):
        field = fields[flag]
        help_text = f"{field.description} (default {field.default})"
        parser.add_argument(f"--{flag}", type=kind, metavar=flag.upper(), help=help_text)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edge_agent.config import EdgeAgentConfig, load_config
    from edge_agent.runtime import api, daemon

    server = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    overrides: dict[str, Any] = {"server": server} if server else {}

    def load() -> tuple[EdgeAgentConfig, str | None]:
        config = load_config(args.config, **overrides)
        return config, api.resolve_token(config.server)

    return daemon.main(load, api.create_app)
