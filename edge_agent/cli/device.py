"""`edge-agent simulate-device`: a virtual device (thermostat, light, lock,
valve; temperature, smoke and motion sensors) speaking the firmware protocol
over MQTT or a serial line, until SIGTERM or Ctrl-C.

``--serial pty`` makes a pseudo-terminal and prints its path (``serial:
/dev/pts/N``) for the host to open like a USB serial port; any other value
is a port to open. ``--stdin`` reads lines like ``temperature 31.5`` or
``smoke true`` and reports them as readings.

Also runnable as ``python -m edge_agent.cli.device``.
"""

from __future__ import annotations

import argparse
import logging
import random
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.errors import ConfigError, EdgeAgentError

if TYPE_CHECKING:
    from firmware_bridge.simulator import SimulatedDevice

_ID = r"^[a-z0-9][a-z0-9_\-]{0,31}$"
FAULTS = ("never-ack", "bad-checksum", "absurd-ranges")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "simulate-device",
        help="run a virtual device that speaks the firmware protocol (MQTT or serial)",
        description="A virtual thermostat, light, lock and valve with temperature, smoke and "
        "motion sensors, speaking edge-agent's firmware protocol.",
    )
    add_arguments(parser)
    parser.set_defaults(handler=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--mqtt", metavar="HOST:PORT", help="the MQTT broker")
    where.add_argument(
        "--serial", metavar="PTY", help="serial port to open, or 'pty' to make one and print it"
    )
    parser.add_argument("--device-id", required=True, metavar="ID", help="the device's id")
    parser.add_argument("--tls-ca", type=Path, metavar="F", help="PEM file of CAs to trust")
    parser.add_argument("--no-tls", action="store_true", help="plain MQTT (a trusted LAN only)")
    parser.add_argument("--username", metavar="U", help="MQTT user name")
    parser.add_argument("--password-file", type=Path, metavar="F", help="file with the password")
    parser.add_argument("--topic-prefix", default="edge-agent", metavar="P", help="topic root")
    parser.add_argument("--baudrate", type=int, default=115200, help="serial speed")
    parser.add_argument(
        "--interval", type=float, default=0.0, metavar="S",
        help="report a drifting temperature every S seconds (0: only on --stdin)",
    )  # fmt: skip
    parser.add_argument(
        "--stdin", action="store_true", help="read 'sensor value' lines from stdin as readings"
    )
    parser.add_argument(
        "--fault", action="append", choices=FAULTS, default=[], help="misbehave, for tests"
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING"],
        help="how much to log on stderr (default: INFO)",
    )


def run(args: argparse.Namespace) -> int:
    import re

    from firmware_bridge.simulator import Faults, SimulatedDevice

    if not re.match(_ID, args.device_id):
        raise ConfigError(f"--device-id {args.device_id!r}: use [a-z0-9_-], at most 32")
    logging.basicConfig(level=args.log_level, format="simulate-device: %(levelname)s: %(message)s")
    faults = Faults(
        never_ack="never-ack" in args.fault,
        bad_checksum="bad-checksum" in args.fault,
        absurd_ranges="absurd-ranges" in args.fault,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with SimulatedDevice(args.device_id, faults=faults) as device:
        closer = _serve(device, args)
        try:
            _say(f"device {args.device_id} ready")
            _loop(device, args, stop)
        finally:
            if closer is not None:
                closer()
    return 0


def _serve(device: SimulatedDevice, args: argparse.Namespace) -> Any:
    if args.mqtt:
        from edge_agent.iot.mqtt_link import DeviceMqttLink

        device.serve_link(DeviceMqttLink(_broker(args), device.id))
        return None
    from firmware_bridge.serial_link import PtyPair, SerialStream

    if args.serial == "pty":
        pty = PtyPair()
        device.serve_serial(pty.device_stream())
        _say(f"serial: {pty.path}")
        return pty.close
    try:
        device.serve_serial(SerialStream.open(args.serial, args.baudrate))
    except OSError as exc:
        raise ConfigError(f"cannot open serial port {args.serial}: {exc}") from exc
    return None


def _broker(args: argparse.Namespace) -> Any:
    from pydantic import ValidationError

    from edge_agent.routing.offload.mqtt import BrokerSettings

    host, _, port = str(args.mqtt).rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--mqtt {args.mqtt!r}: expected HOST:PORT")
    values = {
        "host": host,
        "port": int(port),
        "tls": not args.no_tls,
        "tls_ca": args.tls_ca,
        "username": args.username,
        "password_file": args.password_file,
        "topic_prefix": args.topic_prefix,
    }
    try:
        return BrokerSettings.model_validate({k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"simulate-device: {err['loc'][0]}: {err['msg']}") from exc


def _loop(device: SimulatedDevice, args: argparse.Namespace, stop: threading.Event) -> None:
    if args.stdin:
        reader = threading.Thread(target=_read_stdin, args=(device, stop), daemon=True)
        reader.start()
    temperature = 21.0
    while not stop.wait(args.interval if args.interval > 0 else 0.5):
        if args.interval > 0:
            temperature = round(temperature + random.uniform(-0.3, 0.3), 1)  # noqa: S311
            device.emit("temperature", temperature)


def _read_stdin(device: SimulatedDevice, stop: threading.Event) -> None:
    for line in sys.stdin:
        parts = line.split()
        if len(parts) != 2:
            continue
        sensor, value = parts[0], _value(parts[1])
        if sensor not in device.readings:
            _say(f"unknown sensor {sensor!r}")
            continue
        device.emit(sensor, value)
        _say(f"reported {sensor}={value!r}")
    stop.set()


def _value(text: str) -> bool | float | str:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return float(text)
    except ValueError:
        return text


def _say(text: str) -> None:
    print(text, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edge-agent simulate-device")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except EdgeAgentError as exc:
        print(f"edge-agent: error: {exc.one_line()}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
