"""Choosing the grammar engine: the config's ``model.engine``, ``load_engine``
and ``edge-agent bench bfcl --engine/--no-ff``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_agent.config import load_config
from edge_agent.decoding.calls import parse_output
from edge_agent.decoding.grammar import GrammarOptions, build_grammar
from edge_agent.decoding.prompts import build_prompt, user_message
from edge_agent.decoding.schema import normalize_tools
from edge_agent.engine import load_engine
from edge_agent.engine.guided import GuidedGeneration, GuidedLlamaEngine
from edge_agent.engine.llama import LlamaEngine
from edge_agent.errors import ConfigError
from edge_agent.models import resolve_model
from edge_agent.toolbox.verify import verify_output
from tests.conftest import DATA, REPO, TEST_THREADS, run_cli

HOME_TOOLS = normalize_tools(
    json.loads((REPO / "benchmarks" / "data" / "home8.json").read_text())["tools"]
)


def test_llguidance_is_the_default_engine() -> None:
    """Same output as GBNF on 400 BFCL items, faster (docs/constraint_strategy.md)."""
    assert load_config().model.engine == "llguidance"


def test_engine_is_read_from_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "edge-agent.toml"
    path.write_text('[model]\nengine = "llguidance"\n', encoding="utf-8")
    assert load_config(path).model.engine == "llguidance"
    path.write_text('[model]\nengine = "xgrammar"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"model\.engine"):
        load_config(path)


@pytest.mark.model
def test_load_engine_builds_the_configured_engine() -> None:
    """Both kinds load the same file; the llguidance one decodes with masks and
    fast-forward, and its call is valid."""
    plain = load_engine("smollm2-135m", n_threads=TEST_THREADS)
    assert type(plain) is LlamaEngine
    guided = load_engine("smollm2-135m", n_threads=TEST_THREADS, engine="llguidance")
    assert isinstance(guided, GuidedLlamaEngine)
    assert guided.n_threads == TEST_THREADS and guided.model_name == plain.model_name
    # the shipped confidence model reads forced tokens' own log-probabilities
    assert guided.score_forced and guided.fast_forward
    prompt = build_prompt(guided.chat_template, [user_message("Lock the front door")], HOME_TOOLS)
    out = guided.generate(prompt, grammar=build_grammar(HOME_TOOLS, GrammarOptions()))
    assert isinstance(out, GuidedGeneration) and out.stats.forced > 0
    parsed = parse_output(out.text)
    assert parsed.is_call and all(v.ok for v in verify_output(parsed, HOME_TOOLS)), out.text


@pytest.mark.parametrize("flag", ["--no-ff", "--unscored-forced"])
def test_llguidance_flags_need_the_llguidance_engine(flag: str) -> None:
    """Refused before any model is loaded (llguidance is the default engine,
    so the flag is refused with an explicit ``--engine gbnf``)."""
    proc = run_cli(
        "bench",
        "bfcl",
        "--questions",
        str(DATA / "bfcl" / "BFCL_v4_simple_python.json"),
        "--category",
        "simple_python",
        "--engine",
        "gbnf",
        flag,
        timeout=60,
    )
    assert proc.returncode != 0
    assert f"{flag} only applies to --engine llguidance" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.model
def test_the_manifest_sets_the_constraint_strategy_per_model() -> None:
    """docs/constraint_strategy.md: hard wins for Qwen2, so llguidance
    constrains its answers from the first token."""
    engine = load_engine("qwen2.5-coder-0.5b", n_threads=TEST_THREADS, engine="llguidance")
    assert isinstance(engine, GuidedLlamaEngine) and engine.lazy is False
    entry = resolve_model("qwen2.5-coder-0.5b").entry
    assert entry is not None and entry.constraint == "hard"


@pytest.mark.model
def test_a_grammar_llguidance_cannot_read_is_decoded_by_gbnf(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """FAKE fault: no grammar we generate is known to be unreadable by
    llguidance, so its compiler is made to refuse. The request is still
    answered, under the GBNF sampler, and the fallback is logged once."""
    from edge_agent.engine import guided as guided_module
    from edge_agent.errors import UnsupportedSchemaError

    def refuse(self: object, grammar: object) -> None:
        raise UnsupportedSchemaError("llguidance cannot read the grammar: fake refusal")

    engine = load_engine("smollm2-135m", n_threads=TEST_THREADS, engine="llguidance")
    monkeypatch.setattr(guided_module._Shared, "compile", refuse)
    prompt = build_prompt(engine.chat_template, [user_message("Lock the front door")], HOME_TOOLS)
    grammar = build_grammar(HOME_TOOLS, GrammarOptions())
    with caplog.at_level("WARNING", logger="edge_agent.engine.guided"):
        first = engine.generate(prompt, grammar=grammar)
        second = engine.generate(prompt, grammar=grammar)
    assert first.stats.gbnf_fallback and first.stats.forced == 0
    assert first.text == second.text
    parsed = parse_output(first.text)
    assert parsed.is_call and all(v.ok for v in verify_output(parsed, HOME_TOOLS)), first.text
    warnings = [r for r in caplog.records if "fake refusal" in r.getMessage()]
    assert len(warnings) == 1
