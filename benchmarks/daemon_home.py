"""Home requests through the daemon's API with execution, as a client sends them.

Starts ``edge-agent run`` (the default configuration: the ladder, the
sandbox, the tool block warmed at start) on a free loopback port with its
own state folder, then sends each request as an OpenAI chat completion
offering every registry tool by name (``x_edge_agent_tools``) with
``x_edge_agent_execute``. Reports per request the latency, the model steps,
the tier that answered, the calls listed and run, and the answer text; then
p50/p95, the median steps, and whether any call ran or was listed twice and
every answer reads as a sentence.

    python benchmarks/daemon_home.py tests/data/ask_prompts.json [--config FILE]

Run it with llama.cpp alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx

from edge_agent.assemble import Assembly


def free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(config: Path | None, state: Path, token: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "EDGE_AGENT_STATE_DIR": str(state), "EDGE_AGENT_API_TOKEN": token}
    argv = [sys.executable, "-m", "edge_agent", "run", "--port", str(port)]
    if config is not None:
        argv += ["--config", str(config)]
    log = (state / "daemon.log").open("ab")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the daemon exited: see {state / 'daemon.log'}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("the daemon did not become healthy in 900 s")


def ask(client: httpx.Client, prompt: str, tools: list[str], model: str) -> dict[str, Any]:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "x_edge_agent_tools": tools,
        "x_edge_agent_execute": True,
    }
    started = time.perf_counter()
    response = client.post("/v1/chat/completions", json=body)
    seconds = time.perf_counter() - started
    out = response.json()
    if response.status_code != 200:
        return {"prompt": prompt, "seconds": seconds, "error": out.get("error", {}).get("message")}
    ext = out.get("x_edge_agent", {})
    steps = ext.get("steps") or []
    listed = ext.get("tool_calls") or []
    keys = [json.dumps([s["name"], s["arguments"]], sort_keys=True) for s in steps]
    return {
        "prompt": prompt,
        "seconds": seconds,
        "model_steps": ext.get("model_steps"),
        "tier": ext.get("tier"),
        "ran": len(steps),
        "listed": len(listed),
        "twice": len(keys) != len(set(keys)) or len(listed) > len(steps) > 0,
        "answer": out["choices"][0]["message"].get("content") or "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("prompts", type=Path, help="JSON list of {prompt, ...}")
    parser.add_argument("--config", type=Path, help="an edge-agent TOML config")
    args = parser.parse_args()
    items = json.loads(args.prompts.read_text("utf-8"))
    tools = [t.name for t in Assembly().registry() if t.name != "http_get"]
    state = Path(tempfile.mkdtemp(prefix="daemon-home-"))
    token, port = secrets.token_urlsafe(24), free_port()
    proc = start(args.config, state, token, port)
    headers = {"authorization": f"Bearer {token}"}
    rows = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=900) as c:
            model = c.get("/v1/models").json()["data"][0]["id"]
            for item in items:
                row = ask(c, item["prompt"], tools, model)
                rows.append(row)
                print(json.dumps(row, ensure_ascii=False))
    finally:
        proc.terminate()
        proc.wait(120)
    done = [r for r in rows if "error" not in r]
    times = sorted(r["seconds"] for r in done[1:])  # the first pays for cold caches
    sentences = sum(r["answer"].rstrip().endswith((".", "?", "!", "。")) for r in done)
    print(
        f"\n{len(rows)} requests, {len(rows) - len(done)} errors; median model steps "
        f"{statistics.median(r['model_steps'] for r in done)}; tier 1 answered "
        f"{sum(1 for r in done if r['tier'])}; any call twice: {any(r['twice'] for r in done)}; "
        f"sentences {sentences}/{len(done)}; first request {done[0]['seconds']:.2f} s; "
        f"p50 {statistics.median(times):.2f} s, "
        f"p95 {times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]:.2f} s"
    )


if __name__ == "__main__":
    main()
