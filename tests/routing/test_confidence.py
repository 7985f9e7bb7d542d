"""Confidence features, the fallback heuristic, the logistic fit, its JSON
and ONNX forms, and one calibration on a real SLM run. The numpy model
against the ONNX one it replaced: test_confidence_numpy.py."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.agent import Agent, Attempt
from edge_agent.decoding.calls import parse_output
from edge_agent.decoding.schema import normalize_tools
from edge_agent.engine.base import Generation, Timings, TokenScore
from edge_agent.errors import BenchError, ConfigError, InputError
from edge_agent.routing.confidence import (
    FEATURE_NAMES,
    Features,
    HeuristicConfidence,
    LogisticConfidence,
    OnnxConfidence,
    calibration,
    call_value_spans,
    decision_mask,
    example_from_routed,
    example_from_shadow,
    examples_from_bench,
    features_from_attempts,
    fit_logistic,
    load_confidence,
    logistic_onnx,
)
from edge_agent.toolbox.verify import verify_output

TOOLS = normalize_tools(
    [
        {
            "name": "set_light",
            "description": "Switch a room's light.",
            "parameters": {
                "type": "object",
                "properties": {
                    "room": {"type": "string", "enum": ["kitchen", "bedroom", "living_room"]},
                    "on": {"type": "boolean"},
                    "brightness": {"type": "integer"},
                },
                "required": ["room", "on"],
            },
        }
    ]
)

# Qwen2.5-Coder-0.5B's tokens for "Turn on the kitchen light" (real logprobs).
QWEN_TOKENS = [
    ('{"', -0.768, -0.768, 1.16),
    ("name", -0.001, -0.001, 0.01),
    ('":', -0.001, -0.001, 0.01),
    (' "', -0.001, -0.001, 0.01),
    ("set", -0.005, -0.005, 0.04),
    ("_light", -0.0001, -0.0001, 0.0),
    ('",', -0.001, -0.001, 0.01),
    (' "', -0.0001, -0.0001, 0.0),
    ("arguments", -0.002, -0.002, 0.01),
    ('":', -0.0001, -0.0001, 0.0),
    (' {"', -0.024, -0.024, 0.16),
    ("room", -1.671, -0.312, 0.92),
    ('":', -0.0001, -0.0001, 0.0),
    (' "', -0.001, -0.001, 0.01),
    ("k", -0.001, -0.001, 0.01),
    ("itchen", -0.0001, -0.0001, 0.0),
    ('",', -0.005, -0.005, 0.04),
    (' "', -0.0001, -0.0001, 0.0),
    ("on", -0.006, -0.006, 0.04),
    ('":', -0.0001, -0.0001, 0.0),
    (" true", -0.013, -0.013, 0.08),
    ("}}", -0.487, -0.487, 0.76),
]


def generation(pieces: list[tuple[str, float, float, float]]) -> Generation:
    tokens = tuple(TokenScore(i, t, lp, top, h) for i, (t, lp, top, h) in enumerate(pieces))
    text = "".join(t for t, *_ in pieces)
    return Generation(text, tokens, 50, "stop", Timings(0.0, 0.1, 0.2))


def attempt(pieces: list[tuple[str, float, float, float]], kind: str = "initial") -> Attempt:
    gen = generation(pieces)
    parsed = parse_output(gen.text)
    verdicts = tuple(verify_output(parsed, TOOLS)) if parsed.is_call or parsed.errors else ()
    return Attempt(kind, gen, parsed, verdicts, True)  # type: ignore[arg-type]


def simple(text: str, lp: float = -0.1) -> list[tuple[str, float, float, float]]:
    """One token per character, all with the same log-prob."""
    return [(c, lp, lp, 0.5) for c in text]


# ---------------------------------------------------------------- decision tokens


def test_spans_cover_names_and_argument_values_only() -> None:
    text = '{"name": "set_light", "arguments": {"room": "kitchen", "on": true, "n": -1.5}}'
    names, ranges = call_value_spans(text) or ([], [])
    assert names == ["set_light"]
    assert [text[s:e] for s, e in ranges] == ['set_light"', 'kitchen"', "true", "-1.5"]


def test_spans_in_tagged_parallel_and_openai_shapes() -> None:
    text = (
        '<tool_call>\n{"name": "a", "arguments": {"x": [1, {"y": "z\\"q"}]}}\n</tool_call>\n'
        '<tool_call>\n{"function": {"name": "b", "arguments": {}}}\n</tool_call>'
    )
    names, ranges = call_value_spans(text) or ([], [])
    assert names == ["a", "b"]
    assert [text[s:e] for s, e in ranges] == ['a"', "1", 'z\\"q"', 'b"']
    listed = '[{"name": "a", "arguments": {"k": null}}, {"name": "b", "parameters": {"k": 2}}]'
    names, ranges = call_value_spans(listed) or ([], [])
    assert names == ["a", "b"]
    assert [listed[s:e] for s, e in ranges] == ['a"', "null", 'b"', "2"]


@pytest.mark.parametrize(
    "text", ['{"name": "a", "arguments": {"x": ', '{"name": "a" "x"}', '{"name": tru}', "{"]
)
def test_spans_of_broken_json_are_none(text: str) -> None:
    assert call_value_spans(text) is None


def test_plain_text_has_no_spans() -> None:
    assert call_value_spans("It is sunny today.") == ([], [])


def test_decision_mask_on_real_qwen_tokens() -> None:
    texts = [t for t, *_ in QWEN_TOKENS]
    text = "".join(texts)
    mask, aligned = decision_mask(texts, text, parse_output(text))
    assert aligned
    chosen = [t for t, keep in zip(texts, mask, strict=True) if keep]
    assert chosen == ["set", "_light", '",', "k", "itchen", '",', " true"]


def test_decision_mask_falls_back_to_every_token() -> None:
    texts = ["{", '"name', '": "x"}']
    assert decision_mask(texts, "something else") == ([True] * 3, False)
    broken = ['{"name": "a", "arg', "uments", '": {']
    assert decision_mask(broken, "".join(broken)) == ([True] * 3, False)
    other = '{"name": "a", "arguments": {}}'
    mask, aligned = decision_mask([other], other, parse_output('{"name": "b", "arguments": {}}'))
    assert (mask, aligned) == ([True], False)


def test_text_answer_decides_on_its_first_token() -> None:
    texts = ["I", " cannot", " do", " that"]
    text = "".join(texts)
    assert decision_mask(texts, text, parse_output(text)) == ([True, False, False, False], True)
    assert decision_mask([], "") == ([], True)


# ---------------------------------------------------------------- features


def test_features_from_a_confident_valid_call() -> None:
    f = features_from_attempts([attempt(QWEN_TOKENS)])
    assert f.min_logprob == pytest.approx(-0.013)
    assert f.mean_logprob == pytest.approx(
        sum([-0.005, -0.0001, -0.001, -0.001, -0.0001, -0.005, -0.013]) / 7
    )
    assert f.max_entropy == pytest.approx(0.08)
    assert f.max_grammar_cut == pytest.approx(1.671 - 0.312)  # the forced "room" key
    assert f.mean_grammar_cut == 0.0
    assert (f.first_valid, f.repaired, f.final_valid, f.is_call) == (1.0, 0.0, 1.0, 1.0)
    assert f.log_tokens == pytest.approx(math.log1p(len(QWEN_TOKENS)))
    assert (f.agreement, f.has_agreement) == (1.0, 0.0)
    assert f.aligned
    assert len(f.vector()) == len(FEATURE_NAMES)


def test_features_see_a_grammar_override_on_a_decision_token() -> None:
    pieces = list(QWEN_TOKENS)
    pieces[4] = ("set", -8.083, -0.064, 0.42)  # the model wanted another tool
    f = features_from_attempts([attempt(pieces)])
    assert f.min_logprob == pytest.approx(-8.083)
    assert f.max_grammar_cut == pytest.approx(8.019)
    assert f.mean_grammar_cut == pytest.approx(8.019 / 7)


def test_features_of_a_repaired_answer() -> None:
    bad = attempt(simple('{"name": "set_light", "arguments": {"room": "attic", "on": true}}'))
    good = attempt(simple('{"name": "set_light", "arguments": {"room": "kitchen", "on": true}}'))
    assert not bad.valid and good.valid
    f = features_from_attempts([bad, good])
    assert (f.first_valid, f.repaired, f.final_valid) == (0.0, 1.0, 1.0)
    g = features_from_attempts([bad, bad])
    assert (g.first_valid, g.repaired, g.final_valid) == (0.0, 0.0, 0.0)


def test_logprobs_are_floored_and_empty_output_is_unconfident() -> None:
    f = features_from_attempts([attempt(simple('{"name": "set_light", "x', lp=-1e9))])
    assert f.min_logprob == -30.0
    empty = features_from_attempts([attempt([])])
    assert empty.min_logprob == -30.0 and empty.log_tokens == 0.0
    with pytest.raises(InputError):
        features_from_attempts([])


def test_features_json_round_trip() -> None:
    f = features_from_attempts([attempt(QWEN_TOKENS)])
    again = Features.from_json(json.loads(json.dumps(f.to_json())))
    assert again.vector() == pytest.approx(f.vector(), abs=1e-6)
    with pytest.raises(InputError, match="missing"):
        Features.from_json({"min_logprob": 0.0})
    with pytest.raises(InputError, match="finite"):
        Features.from_json({**f.to_json(), "min_logprob": float("nan")})


# ---------------------------------------------------------------- models


def test_heuristic_is_a_documented_logistic_on_min_logprob() -> None:
    h = HeuristicConfidence()
    base = features_from_attempts([attempt(QWEN_TOKENS)])

    def p(min_lp: float, valid: float = 1.0) -> float:
        from dataclasses import replace

        return h.p_success(replace(base, min_logprob=min_lp, final_valid=valid))

    assert p(-0.1) == pytest.approx(0.943, abs=1e-3)
    assert p(-1.3) == pytest.approx(0.599, abs=1e-3)
    assert p(-3.0) < 0.05
    assert p(-0.01, valid=0.0) == 0.0
    assert p(-1000.0) >= 0.0


def test_default_is_the_shipped_model_else_the_heuristic(tmp_path: Path) -> None:
    from edge_agent.routing.confidence import SHIPPED_MODEL, LogisticConfidence

    missing = tmp_path / "none.json"
    assert isinstance(load_confidence(None, shipped=missing), HeuristicConfidence)
    assert SHIPPED_MODEL.is_file(), "models/confidence.json is part of the repo"
    shipped = load_confidence(None)
    assert isinstance(shipped, LogisticConfidence)
    assert shipped.path == SHIPPED_MODEL


def separable(n: int = 200, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURE_NAMES)))
    x[:, -1] = 0.0  # a constant column (has_agreement with no samples)
    y = (x[:, 0] + 0.5 * x[:, 2] > 0).astype(float)
    return x, y


def test_fit_separates_separable_data_and_is_deterministic() -> None:
    x, y = separable()
    fit = fit_logistic(x, y, l2=0.1)
    p = fit.predict(x)
    assert ((p > 0.5) == (y == 1)).mean() > 0.97
    assert fit.weights[-1] == 0.0  # the constant column
    assert abs(fit.weights[0]) > abs(fit.weights[5])
    assert np.all(np.isfinite(fit.weights))
    assert fit_logistic(x, y, l2=0.1) == fit
    assert calibration(p, y).log_loss < 0.2


def test_fit_refuses_what_cannot_be_calibrated() -> None:
    x, _ = separable(10)
    with pytest.raises(InputError, match="successes and failures"):
        fit_logistic(x, np.ones(10))
    with pytest.raises(InputError, match=r"0 \(failure\) or 1"):
        fit_logistic(x, np.full(10, 0.5))
    with pytest.raises(InputError, match="one label per"):
        fit_logistic(x, np.ones(9))
    with pytest.raises(InputError, match="l2"):
        fit_logistic(x, (np.arange(10) % 2).astype(float), l2=0.0)


def test_onnx_model_matches_numpy(tmp_path: Path) -> None:
    x, y = separable()
    fit = fit_logistic(x, y)
    path = tmp_path / "confidence.onnx"
    path.write_bytes(logistic_onnx(fit))
    model = OnnxConfidence(path)
    assert np.allclose(model.predict(x), fit.predict(x), atol=1e-5)
    one = Features(*x[0].tolist())
    assert model.p_success(one) == pytest.approx(float(fit.predict(x[:1])[0]), abs=1e-5)
    assert isinstance(load_confidence(path), OnnxConfidence)


def test_onnx_files_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    x, y = separable()
    fit = fit_logistic(x, y)
    renamed = tmp_path / "renamed.onnx"
    renamed.write_bytes(logistic_onnx(fit, [f"f{i}" for i in range(len(FEATURE_NAMES))]))
    with pytest.raises(ConfigError, match="other features"):
        OnnxConfidence(renamed)
    narrow_fit = fit_logistic(x[:, :3], y)
    narrow = tmp_path / "narrow.onnx"
    narrow.write_bytes(logistic_onnx(narrow_fit, ["a", "b", "c"]))
    with pytest.raises(ConfigError, match="one input of 13 features"):
        OnnxConfidence(narrow)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="cannot be loaded"):
        OnnxConfidence(junk)
    with pytest.raises(ConfigError, match="does not exist"):
        OnnxConfidence(tmp_path / "missing.onnx")


def test_calibration_metrics() -> None:
    c = calibration(np.array([0.9, 0.1, 0.8, 0.3]), np.array([1, 0, 1, 0]))
    assert c.n == 4
    assert c.brier == pytest.approx((0.01 + 0.01 + 0.04 + 0.09) / 4)
    assert c.ece == pytest.approx((0.1 + 0.1 + 0.2 + 0.3) / 4)
    with pytest.raises(InputError):
        calibration(np.array([]), np.array([]))


# ---------------------------------------------------------------- training examples


def test_examples_from_a_bench_report() -> None:
    f = features_from_attempts([attempt(QWEN_TOKENS)]).to_json()
    report = {"per_item": [{"correct": True, "features": f}, {"correct": False}, "junk"]}
    rows, labels = examples_from_bench(report)
    assert labels == [1] and len(rows[0]) == len(FEATURE_NAMES)
    with pytest.raises(InputError, match="per_item"):
        examples_from_bench({})


def test_examples_from_journaled_offloads_use_the_cloud_as_teacher() -> None:
    f = features_from_attempts([attempt(QWEN_TOKENS)]).to_json()
    slm = '{"name": "set_light", "arguments": {"room": "kitchen", "on": true}}'
    cloud_call = {"name": "set_light", "arguments": {"on": True, "room": "kitchen"}}
    routed: dict[str, Any] = {
        "features": f,
        "attempts": [{"raw": slm}],
        "offload": {"valid": True, "calls": [cloud_call]},
    }
    assert example_from_routed(routed) == (Features.from_json(f).vector(), 1)
    routed["offload"] = {"valid": True, "calls": [{**cloud_call, "arguments": {"room": "bedroom"}}]}
    assert example_from_routed(routed) is not None
    assert example_from_routed(routed)[1] == 0  # type: ignore[index]
    assert example_from_routed({**routed, "offload": {"valid": False, "calls": []}}) is None
    assert example_from_routed({**routed, "offload": None}) is None
    assert example_from_routed({**routed, "features": None}) is None


# ---------------------------------------------------------------- the CLI


def calibrate(*argv: str) -> int:
    from edge_agent.cli import router as cli_router

    parser = argparse.ArgumentParser()
    cli_router.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["router", "calibrate", *argv])
    return int(args.handler(args))


def test_calibrate_cli_writes_a_loadable_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x, y = separable(120)
    per_item = [
        {"correct": bool(label), "features": dict(zip(FEATURE_NAMES, row.tolist(), strict=True))}
        for row, label in zip(x, y, strict=True)
    ]
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"per_item": per_item}))
    out = tmp_path / "model" / "confidence.json"
    assert calibrate("--from-bench", str(bench), "--out", str(out), "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["examples"] == 120 and summary["successes"] == int(y.sum())
    assert summary["thresholds"][0]["threshold"] == 0.3
    model = load_confidence(out)
    assert isinstance(model, LogisticConfidence)
    assert model.metadata["examples"] == 120 and model.metadata["l2"] == 1.0
    assert 0.0 <= model.p_success(Features(*x[0].tolist())) <= 1.0
    onnx_out = tmp_path / "model" / "confidence.onnx"
    assert calibrate("--from-bench", str(bench), "--out", str(onnx_out)) == 0
    assert "local share" in capsys.readouterr().out
    onnx_model = OnnxConfidence(onnx_out)
    row = Features(*x[0].tolist())
    assert onnx_model.p_success(row) == pytest.approx(model.p_success(row), abs=1e-5)


def test_calibrate_cli_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="nothing to calibrate"):
        calibrate("--out", str(tmp_path / "m.onnx"))
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(BenchError, match="not a bench report"):
        calibrate("--from-bench", str(bad), "--out", str(tmp_path / "m.onnx"))
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"per_item": [{"correct": True}]}))
    with pytest.raises(BenchError, match="no examples with features"):
        calibrate("--from-bench", str(old), "--out", str(tmp_path / "m.onnx"))


# ---------------------------------------------------------------- a real run

REAL_PROMPTS = [
    ("Turn on the kitchen light", "set_light"),
    ("Switch off the light in the bedroom", "set_light"),
    ("Turn the living room light on", "set_light"),
    ("Kitchen light off please", "set_light"),
    ("Translate 'hello' into German", None),
    ("What is the capital of France?", None),
    ("Write a haiku about autumn", None),
    ("Who won the football world cup in 2014?", None),
]


@pytest.mark.model
@pytest.mark.slow
def test_calibration_on_a_real_qwen_run(qwen: Any, tmp_path: Path) -> None:
    """Features from real Qwen2.5-0.5B answers; labels: the right tool, or a
    plain answer when no tool fits. The fit must load and rank sensibly."""
    agent = Agent(qwen, TOOLS)
    rows, labels = [], []
    for prompt, expected in REAL_PROMPTS:
        result = agent.ask(prompt, execute=False)
        from edge_agent.routing.confidence import features_from_result

        rows.append(features_from_result(result).vector())
        got = result.calls[0].name if result.calls else None
        labels.append(int(got == expected and result.final.valid))
    y = np.asarray(labels, dtype=float)
    assert 0 < y.sum() < len(y), f"need both outcomes, got {labels}"
    fit = fit_logistic(np.asarray(rows), y)
    path = tmp_path / "real.onnx"
    path.write_bytes(logistic_onnx(fit))
    p = OnnxConfidence(path).predict(np.asarray(rows))
    assert np.all((p > 0) & (p < 1))
    assert p[y == 1].mean() > p[y == 0].mean()


def test_examples_from_shadow_checks_use_tier_1_as_teacher() -> None:
    f = features_from_attempts([attempt(QWEN_TOKENS)]).to_json()
    mine = '{"name": "set_light", "arguments": {"room": "kitchen", "on": true}}'
    call = '{"name": "set_light", "arguments": {"on": true, "room": "kitchen"}}'
    theirs = f"<tool_call>\n{call}\n</tool_call>"
    stored: dict[str, Any] = {
        "features": f,
        "attempts": [
            {"step": 0, "kind": "shadow", "raw": theirs, "valid": True},
            {"step": 0, "kind": "initial", "raw": mine, "valid": True},
        ],
    }
    assert example_from_shadow(stored) == (Features.from_json(f).vector(), 1)
    other = theirs.replace("kitchen", "bedroom")
    stored["attempts"][0] = {"step": 0, "kind": "shadow", "raw": other, "valid": True}
    assert example_from_shadow(stored) == (Features.from_json(f).vector(), 0)
    stored["attempts"][0]["valid"] = False  # tier 1 did not verify: no label
    assert example_from_shadow(stored) is None
    assert example_from_shadow({**stored, "attempts": stored["attempts"][1:]}) is None
    assert example_from_shadow({**stored, "features": None}) is None
