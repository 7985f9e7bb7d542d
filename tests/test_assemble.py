"""The composition root: every entry point builds its parts through
:class:`edge_agent.assemble.Assembly`, and the drift bugs that came from
wiring the pipeline by hand in ten places stay fixed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from edge_agent.assemble import Assembly
from edge_agent.cli import build_parser
from edge_agent.config import EdgeAgentConfig
from tests.conftest import REPO, run_cli

# Constructors of the heavy parts; only the assembly (and the modules that
# define them) may call these.
_BUILDERS = re.compile(
    r"\b(load_engine|LlamaEngine|GuidedLlamaEngine|ProcessSandbox|Router|"
    r"HttpsTransport|MqttTransport)\("
)
_ENTRY_POINTS = [
    *sorted((REPO / "edge_agent" / "cli").glob("*.py")),
    *sorted((REPO / "edge_agent" / "runtime").glob("*.py")),  # daemon, API, MCP door
    REPO / "benchmarks" / "ask_latency.py",
]


def test_no_entry_point_builds_a_part_by_hand() -> None:
    found = []
    for path in _ENTRY_POINTS:
        for number, line in enumerate(path.read_text("utf-8").splitlines(), 1):
            code = line.split("#")[0]
            if _BUILDERS.search(code) and not code.lstrip().startswith(("def ", "class ")):
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    # ask's --llm-url flags name an endpoint the config does not hold: the
    # transport is built from them and handed to the assembly's cloud().
    allowed = {"edge_agent/cli/ask.py"}
    assert [f for f in found if f.split(":")[0] not in allowed] == []


def test_tools_run_gives_state_tools_their_state_folder(tmp_path: Path) -> None:
    # Was: `tools run` built its sandbox without a state folder, so every
    # state=True tool failed from the CLI.
    import os

    env = {**os.environ, "EDGE_AGENT_STATE_DIR": str(tmp_path)}
    args = json.dumps({"room": "hallway", "on": True, "brightness": 40})
    proc = run_cli("tools", "run", "set_light", "--args", args, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["brightness"] == 40
    state = json.loads((tmp_path / "tools" / "home" / "device_state.json").read_text())
    assert state["actuators"]["light.hallway"]["brightness"] == 40


def test_the_engine_kind_is_the_configs(tmp_path: Path) -> None:
    # Was: load_engine defaulted to GBNF while the config's default is llguidance.
    seen: list[dict[str, Any]] = []

    def loader(model: str | None, **options: Any) -> Any:
        seen.append({"model": model, **options})
        return object()

    parts = Assembly(EdgeAgentConfig(), load=loader)
    parts.engine()
    assert seen[0]["engine"] == "llguidance" == EdgeAgentConfig().model.engine
    assert parts.engine() is parts.engine()  # loaded once


def test_the_transport_honours_offload_mqtt() -> None:
    # Was: `ask --mode cascade` built only the HTTPS transport and ignored [offload.mqtt].
    config = EdgeAgentConfig.model_validate(
        {"offload": {"mqtt": {"host": "127.0.0.1", "port": 1, "tls": False, "device_id": "d1"}}}
    )
    transport = Assembly(config).transport()
    try:
        assert type(transport).__name__ == "MqttTransport"
    finally:
        getattr(transport, "close", lambda: None)()


def test_one_spelling_of_the_endpoint_flags_with_the_old_ones_as_aliases() -> None:
    parser = build_parser()
    new = parser.parse_args(["ask", "x", "--llm-url", "https://e/v1", "--llm-ca", "ca.pem"])
    old = parser.parse_args(["ask", "x", "--endpoint", "https://e/v1", "--ca-bundle", "ca.pem"])
    assert (
        (new.llm_url, new.llm_ca) == (old.llm_url, old.llm_ca) == ("https://e/v1", Path("ca.pem"))
    )
    bridge = parser.parse_args(["cloud-bridge", "--llm-url", "https://e/v1", "--model", "m"])
    assert (bridge.llm_url, bridge.llm_model) == ("https://e/v1", "m")


class _OptionsEngine:
    """A fake engine that records ``with_options``: what is checked is the
    assembly's wiring of the config, not decoding."""

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.options = options or {}

    def with_options(self, **options: Any) -> _OptionsEngine:
        return _OptionsEngine({**self.options, **options})


def test_tier_0_gets_the_models_call_bias_and_a_tier_its_own() -> None:
    config = EdgeAgentConfig.model_validate(
        {"model": {"call_bias": -2.0}, "ladder": {"tiers": [{"name": "big", "call_bias": 1.5}]}}
    )
    parts = Assembly(config, load=lambda model, **_: _OptionsEngine())
    assert parts.engine().options == {"call_bias": -2.0}  # type: ignore[attr-defined]
    tier = parts._tier(config.ladder.tiers[0], None)  # the ladder's own builder of a rung
    assert tier.engine.options == {"call_bias": 1.5}  # type: ignore[attr-defined]
    unset = Assembly(EdgeAgentConfig(), load=lambda model, **_: _OptionsEngine())
    assert unset.engine().options == {}  # type: ignore[attr-defined]
