"""`edge-agent service install [--user NAME] [--print]`: the systemd unit."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    from edge_agent.runtime.service import CONFIG_PATH, MODELS_DIR, SERVICE

    parser = subparsers.add_parser("service", help="install the systemd service")
    sub = parser.add_subparsers(dest="service_command", metavar="ACTION", required=True)
    install = sub.add_parser(
        "install", help="create the service user and install edge-agent.service (root)"
    )
    install.add_argument(
        "--user", default=SERVICE, help=f"the account it runs as (default {SERVICE})"
    )
    install.add_argument(
        "--models-dir", type=Path, default=MODELS_DIR, metavar="DIR",
        help=f"model folder the service reads (default {MODELS_DIR})",
    )  # fmt: skip
    install.add_argument(
        "--config", type=Path, default=CONFIG_PATH, metavar="FILE",
        help=f"config file the service reads (default {CONFIG_PATH})",
    )  # fmt: skip
    install.add_argument("--print", action="store_true", help="print the unit, install nothing")
    install.set_defaults(handler=_install)


def _install(args: argparse.Namespace) -> int:
    from edge_agent.runtime.service import UnitOptions, install, render_unit

    if args.user == "root":
        from edge_agent.errors import InputError

        raise InputError("the service must not run as root", hint="pick an unprivileged user")
    options = UnitOptions(user=args.user, config_path=args.config, models_dir=args.models_dir)
    if args.print:
        print(render_unit(options), end="")
        return 0
    for line in install(options):
        print(line)
    return 0
