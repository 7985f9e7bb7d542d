"""The shipped confidence model as JSON weights run by numpy, against the
ONNX graph it was converted from (``tests/data/confidence_shipped.onnx``, the
file that shipped as ``models/confidence.onnx`` until onnxruntime became an
optional extra): the same P(success) on the features the other confidence
tests build, and so the same routing decisions."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edge_agent.errors import ConfigError
from edge_agent.routing.confidence import (
    FEATURE_NAMES,
    SHIPPED_MODEL,
    Features,
    LogisticConfidence,
    OnnxConfidence,
    features_from_attempts,
    fit_logistic,
    load_confidence,
    logistic_onnx,
)
from tests.conftest import DATA, REPO
from tests.routing.test_confidence import QWEN_TOKENS, attempt, separable, simple

REFERENCE = DATA / "confidence_shipped.onnx"


def known_features() -> list[Features]:
    """Every feature vector the confidence tests build from (real) tokens."""
    good = features_from_attempts([attempt(QWEN_TOKENS)])
    overridden = list(QWEN_TOKENS)
    overridden[4] = ("set", -8.083, -0.064, 0.42)
    bad = attempt(simple('{"name": "set_light", "arguments": {"room": "attic", "on": true}}'))
    fixed = attempt(simple('{"name": "set_light", "arguments": {"room": "kitchen", "on": true}}'))
    found = [
        good,
        features_from_attempts([attempt(overridden)]),
        features_from_attempts([bad, fixed]),
        features_from_attempts([bad, bad]),
        features_from_attempts([attempt(simple('{"name": "set_light", "x', lp=-1e9))]),
        features_from_attempts([attempt([])]),
        features_from_attempts([attempt(simple("It is sunny today."))]),
    ]
    agreeing = [replace(f, agreement=a, has_agreement=1.0) for f in found for a in (0.0, 0.5, 1.0)]
    return found + agreeing


def rows() -> np.ndarray:
    x, _ = separable(200, seed=11)
    built = np.asarray([f.vector() for f in known_features()])
    return np.vstack([built, x])


def test_shipped_model_is_the_numpy_one() -> None:
    assert SHIPPED_MODEL == REPO / "models" / "confidence.json"
    model = load_confidence(None)
    assert isinstance(model, LogisticConfidence)
    assert model.path == SHIPPED_MODEL
    assert not (REPO / "models" / "confidence.onnx").exists()


def test_numpy_gives_the_onnx_models_p_success() -> None:
    pytest.importorskip("onnxruntime")
    numpy_model = LogisticConfidence(SHIPPED_MODEL)
    onnx_model = OnnxConfidence(REFERENCE)
    x = rows()
    ours, theirs = numpy_model.predict(x), onnx_model.predict(x)
    # onnxruntime computes in float32; the weights are the same float32 values
    assert np.max(np.abs(ours - theirs)) < 1e-6  # measured: 1.1e-7
    assert np.array_equal(ours >= 0.6, theirs >= 0.6)  # the same routing at the default τ
    for f in known_features():
        assert numpy_model.p_success(f) == pytest.approx(onnx_model.p_success(f), abs=2e-6)


def test_json_weights_are_the_onnx_initialisers_bit_for_bit() -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    graph = onnx.load(str(REFERENCE)).graph
    init = {t.name: numpy_helper.to_array(t).reshape(-1) for t in graph.initializer}
    data = json.loads(SHIPPED_MODEL.read_text(encoding="utf-8"))
    assert data["feature_names"] == list(FEATURE_NAMES)
    for onnx_name, json_name in [("mean", "mean"), ("scale", "scale"), ("weights", "coefficients")]:
        assert np.array_equal(init[onnx_name].astype(np.float64), np.asarray(data[json_name]))
    assert float(init["bias"][0]) == data["intercept"]
    assert "fitting" in data["metadata"]


def test_fit_round_trips_through_json(tmp_path: Path) -> None:
    x, y = separable()
    fit = fit_logistic(x, y)
    path = tmp_path / "model.json"
    path.write_text(json.dumps(fit.to_json(metadata={"examples": 200})))
    model = load_confidence(path)
    assert isinstance(model, LogisticConfidence)
    assert model.fit == fit
    assert model.metadata == {"iterations": fit.iterations, "examples": 200}
    assert np.array_equal(model.predict(x), fit.predict(x))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "other"}, "not an edge-agent logistic model"),
        ({"feature_names": ["a"]}, "other features"),
        ({"coefficients": [1.0]}, "malformed"),
        ({"intercept": "x"}, "malformed"),
        ({"scale": [0.0] * len(FEATURE_NAMES)}, "zero scale"),
    ],
)
def test_json_files_that_do_not_fit_are_refused(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    x, y = separable()
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({**fit_logistic(x, y).to_json(), **change}))
    with pytest.raises(ConfigError, match=message):
        LogisticConfidence(path)


def test_unreadable_json_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_confidence(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_confidence(tmp_path / "missing.json")


def test_onnx_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """An ``.onnx`` model still loads through onnxruntime; without it the error
    says which extra to install. (None in sys.modules makes the import fail
    as if the package were absent.)"""
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ConfigError, match="onnxruntime is needed") as err:
        load_confidence(REFERENCE)
    assert "edge-agent[onnx]" in err.value.hint
    monkeypatch.setitem(sys.modules, "onnx", None)
    x, y = separable()
    with pytest.raises(ConfigError, match="onnx is needed") as err:
        logistic_onnx(fit_logistic(x, y))
    assert "edge-agent[onnx]" in err.value.hint


def test_the_base_install_does_not_require_onnxruntime() -> None:
    tomllib = pytest.importorskip("tomllib")

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert not [d for d in project["dependencies"] if d.startswith("onnx")]
    assert any(d.startswith("onnxruntime") for d in project["optional-dependencies"]["onnx"])
