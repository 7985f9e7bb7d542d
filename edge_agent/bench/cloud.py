"""The cloud side of the routed benchmark modes: an endpoint to call, and a
local stand-in for one.

``routed_solver_for`` builds the same :class:`~edge_agent.routing.router.Router` a
user runs, over HTTPS, with a budget that prices every call but never refuses
one: a benchmark measures cost, it does not cap it.

``standin_llm`` starts the LLM stand-in (the LLM rows of ``bench``):
:mod:`edge_agent.bench.standin` serving a bigger local model on 127.0.0.1,
over TLS with a throwaway CA and a bearer token, so that the "cloud" path is
the real one: HTTP, TLS, tokens, and tool calls in the model's native format
parsed the way a hosted server parses them. It needs ``trustme`` (the
``dev`` extras) for the certificates.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.errors import BenchError

if TYPE_CHECKING:
    from edge_agent.bench.bfcl_run import SolverFactory
    from edge_agent.routing.router import Mode

START_TIMEOUT_S = 300.0
STANDIN_ALIAS = "llm"
DEFAULT_PRICE = (0.15, 0.60)
"""Cloud price per 1M input and output tokens: a small hosted model's list
price in 2025 (USD). The benchmark's CPS ratio depends on it; pass your own."""


@dataclass(frozen=True)
class Endpoint:
    """An OpenAI-compatible endpoint: base URL (…/v1) and how to reach it."""

    url: str
    model: str | None = None
    token_file: Path | None = None
    ca: Path | None = None


def routed_solver_for(  # noqa: PLR0913 - keyword-only options
    mode: str,
    endpoint: Endpoint,
    *,
    closing: contextlib.ExitStack,
    price: tuple[float, float] = DEFAULT_PRICE,
    threshold: float | None = None,
    confidence: Path | None = None,
) -> SolverFactory:
    from edge_agent.bench.bfcl_run import SCHEMA_SUFFIX, routed_solver
    from edge_agent.config import RouterSettings
    from edge_agent.routing.budget import Budget, BudgetSettings, MemoryLedger, ModelPrice
    from edge_agent.routing.confidence import load_confidence
    from edge_agent.routing.offload.https import HttpsTransport
    from edge_agent.routing.offload.settings import HttpsOffloadSettings
    from edge_agent.routing.router import cloud_for

    route: Mode = "cascade" if mode == "cascade" else "llm"
    if mode == "llm-schema":  # the stand-in's second model id: the same model, schema enforced
        endpoint = replace(endpoint, model=(endpoint.model or STANDIN_ALIAS) + SCHEMA_SUFFIX)
    # A benchmark waits for slow answers rather than scoring a timeout.
    fields: dict[str, object] = {"base_url": endpoint.url, "read_timeout_s": 600}
    for key, value in (
        ("model", endpoint.model),
        ("token_file", endpoint.token_file),
        ("ca_bundle", endpoint.ca),
    ):
        if value is not None:
            fields[key] = value
    https = HttpsOffloadSettings.model_validate(fields)
    unlimited = BudgetSettings(
        daily_limit=1e6,
        monthly_limit=1e7,
        per_request_cap=1e4,
        prices={"*": ModelPrice(input_per_mtok=price[0], output_per_mtok=price[1])},
    )
    routing = RouterSettings(**({} if threshold is None else {"threshold": threshold}))
    transport = HttpsTransport(https)
    closing.callback(transport.close)  # the connection pool outlives one item
    cloud = cloud_for(transport, Budget(unlimited, MemoryLedger()), routing.link)
    return routed_solver(route, cloud, load_confidence(confidence), routing)


def parse_price(text: str) -> tuple[float, float]:
    """``IN,OUT`` per 1M tokens."""
    try:
        price_in, price_out = (float(x) for x in text.split(","))
    except ValueError:
        raise BenchError(f"--price takes IN,OUT per 1M tokens, got {text!r}") from None
    if not (0 <= price_in <= 10_000 and 0 <= price_out <= 10_000):
        raise BenchError(f"--price must be between 0 and 10000, got {text!r}")
    return price_in, price_out


@contextlib.contextmanager
def standin_llm(model: str, threads: int, *, n_ctx: int = 4096) -> Iterator[Endpoint]:
    """The stand-in (:mod:`edge_agent.bench.standin`) serving ``model`` on a
    free loopback port, with TLS and a token; stopped on exit."""
    try:
        import trustme
    except ImportError:
        raise BenchError(
            "the LLM stand-in needs the dev extras", hint="./install.sh --dev, or pass --llm-url"
        ) from None
    from edge_agent.models import resolve_model

    path = resolve_model(model).path
    with tempfile.TemporaryDirectory(prefix="edge-agent-llm-") as tmp:
        work = Path(tmp)
        ca = trustme.CA()
        leaf = ca.issue_cert("127.0.0.1", "localhost")
        ca.cert_pem.write_to_path(str(work / "ca.pem"))
        leaf.private_key_pem.write_to_path(str(work / "key.pem"))
        leaf.cert_chain_pems[0].write_to_path(str(work / "cert.pem"))
        token_file = work / "token"
        token = secrets.token_urlsafe(24)
        token_file.write_text(token, encoding="utf-8")
        token_file.chmod(0o600)
        port = _free_port()
        cmd = [
            sys.executable, "-m", "edge_agent.bench.standin",
            "--model", str(path), "--alias", STANDIN_ALIAS,
            "--port", str(port),
            "--certfile", str(work / "cert.pem"), "--keyfile", str(work / "key.pem"),
            "--token-file", str(token_file),
            "--threads", str(threads), "--n-ctx", str(n_ctx),
        ]  # fmt: skip
        log_path = work / "server.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            try:
                _wait_for(port, proc, log_path)
                url = f"https://127.0.0.1:{port}/v1"
                yield Endpoint(url, STANDIN_ALIAS, token_file, work / "ca.pem")
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:]
            raise BenchError(f"the LLM stand-in exited with {proc.returncode}: {' '.join(tail)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.5)
    raise BenchError(f"the LLM stand-in did not listen within {START_TIMEOUT_S:g} s")
