"""`edge-agent cloud-bridge`: the server-side MQTT → LLM bridge.

Flags map one to one onto :class:`~edge_agent.routing.offload.bridge.CloudBridgeSettings`
(their help is the field's description); the bridge runs until SIGTERM or
Ctrl-C, then finishes the requests in hand and disconnects.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from edge_agent.cli.endpoint import add_endpoint_flags
from edge_agent.errors import ConfigError

if TYPE_CHECKING:
    from edge_agent.routing.offload.bridge import CloudBridgeSettings


def register(subparsers: Any) -> None:
    from edge_agent.routing.offload.bridge import CloudBridgeSettings
    from edge_agent.routing.offload.https import HttpsOffloadSettings

    fields = CloudBridgeSettings.model_fields
    endpoint = HttpsOffloadSettings.model_fields

    def doc(name: str, table: dict[str, Any] = fields) -> str:
        return str(table[name].description)

    parser = subparsers.add_parser(
        "cloud-bridge",
        help="serve MQTT offload requests with an OpenAI-compatible LLM endpoint",
        description="Subscribe to devices' offload requests on an MQTT broker, forward each "
        "to an OpenAI-compatible endpoint, and publish the correlated replies.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="TOML file of bridge settings (an [endpoint] table for the LLM); flags override it",
    )
    parser.add_argument("--broker", metavar="HOST:PORT", help="the MQTT broker")
    parser.add_argument("--tls-ca", type=Path, metavar="FILE", help=doc("tls_ca"))
    parser.add_argument("--no-tls", action="store_true", help="plain MQTT (a trusted LAN only)")
    parser.add_argument("--username", metavar="U", help=doc("username"))
    parser.add_argument("--password-file", type=Path, metavar="F", help=doc("password_file"))
    parser.add_argument("--client-id", metavar="ID", help=doc("client_id"))
    parser.add_argument("--device-topic", metavar="PATTERN", help=doc("device_topic"))
    parser.add_argument("--share-group", metavar="NAME", help=doc("share_group"))
    parser.add_argument(
        "--no-share", action="store_true", help="subscribe plainly, not as a shared subscription"
    )
    parser.add_argument("--workers", type=int, metavar="N", help=doc("workers"))
    add_endpoint_flags(parser, model_alias=True)
    parser.add_argument("--api-key-env", metavar="VAR", help=doc("token_env", endpoint))
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING"],
        help="how much to log on stderr (default: INFO)",
    )
    parser.set_defaults(handler=_cloud_bridge)


def settings_from_args(args: argparse.Namespace) -> CloudBridgeSettings:
    """The validated :class:`CloudBridgeSettings` the flags describe."""
    from edge_agent.routing.offload.bridge import CloudBridgeSettings

    base = _read_toml(args.config) if args.config else {}
    host, port = _host_port(args.broker) if args.broker else (None, None)
    endpoint = {
        "base_url": args.llm_url,
        "model": args.llm_model,
        "token_file": args.llm_token_file,
        "token_env": args.api_key_env,
        "ca_bundle": args.llm_ca,
    }
    values: dict[str, Any] = {
        "host": host,
        "port": port,
        "tls": not args.no_tls,
        "tls_ca": args.tls_ca,
        "username": args.username,
        "password_file": args.password_file,
        "client_id": args.client_id,
        "device_topic": args.device_topic,
        "share_group": args.share_group,
        "workers": args.workers,
    }
    given = {k: v for k, v in values.items() if v is not None}  # unset flags keep defaults
    if args.no_share:
        given["share_group"] = None
    base_endpoint = base.get("endpoint", {})
    if not isinstance(base_endpoint, dict):
        raise ConfigError(f"{args.config}: endpoint must be a table")
    given["endpoint"] = {**base_endpoint, **{k: v for k, v in endpoint.items() if v is not None}}
    try:
        return CloudBridgeSettings.model_validate({**base, **given})
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{args.config or 'cloud-bridge'}: {key}: {err['msg']}") from exc


def _read_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        with path.open("rb") as f:
            data: dict[str, Any] = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return data


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"--broker must be HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _cloud_bridge(args: argparse.Namespace) -> int:
    from edge_agent.routing.offload.bridge import CloudBridge

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(message)s")
    settings = settings_from_args(args)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        del signum, frame
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    bridge = CloudBridge(settings)
    try:
        bridge.serve_forever(stop)
    finally:
        bridge.close()
    return 0
