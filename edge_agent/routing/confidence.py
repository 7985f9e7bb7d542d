"""Confidence: features of an SLM answer → a calibrated P(success).

The honest uncertainty signal is what the *unconstrained* model thought of
the tokens the grammar let through (``TokenScore.logprob`` is measured before
the mask). Most tokens of a tool call are forced by the grammar (``{"name":
"``, keys, punctuation) and say nothing about the answer, so the log-prob
features are taken over the **decision tokens** only: the tokens that carry
the tool's name and the argument values. Their spans come from aligning the
token texts with the JSON of the call (:func:`decision_mask`).

Features (:data:`FEATURE_NAMES`, a fixed order; a model file is tied to it):

=================  ==========================================================
min_logprob        lowest log p over decision tokens (floored at -30)
mean_logprob       mean log p over decision tokens
mean_entropy       mean entropy (nats) of the model's distribution there
max_entropy        highest such entropy
max_grammar_cut    max over *all* tokens of top_logprob - logprob: how far the
                   grammar overrode the model's favourite token (0 = never)
mean_grammar_cut   the same, averaged over decision tokens
first_valid        1 if the first attempt passed the verifier
repaired           1 if the first failed and the repair passed
final_valid        1 if the last attempt passed
is_call            1 for a tool call, 0 for a plain-text answer
log_tokens         log(1 + generated tokens) of the last attempt
agreement          share of k extra samples that proposed the same calls
has_agreement      1 when samples were supplied (else agreement is 1.0)
=================  ==========================================================

A plain-text answer has no JSON to align: its decision token is the first one
(where the model chose to answer rather than call). Output the aligner cannot
read (truncated JSON, a non-ASCII split across tokens) falls back to all
tokens; that is reported in ``Features.aligned``.

Models map features to P(success): :class:`HeuristicConfidence`, a fixed,
documented logistic on ``min_logprob`` used when nothing is configured;
:class:`LogisticConfidence`, a logistic regression whose weights are a small
JSON file evaluated with numpy (the shipped model, ``models/confidence.json``);
and :class:`OnnxConfidence`, any ONNX classifier over the feature vector, run
by onnxruntime. ONNX is an optional extra (``pip install 'edge-agent[onnx]'``):
a 13-weight logistic does not justify the biggest package in the venv, nor
one with no 32-bit ARM wheel. :func:`fit_logistic` fits an L2-regularised
logistic regression (Newton/IRLS in numpy: small and deterministic);
:meth:`LogisticFit.to_json` writes it for numpy and :func:`logistic_onnx` as
an ONNX graph with the standardisation baked in. Isotonic calibration is not
implemented. ``onnx`` is imported only when writing an ONNX model,
onnxruntime only when loading one.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edge_agent.errors import ConfigError, InputError
from edge_agent.resources import data_path

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from edge_agent.decoding.calls import ParsedOutput
    from edge_agent.records.run import Attempt, Result

FEATURE_NAMES: tuple[str, ...] = (
    "min_logprob",
    "mean_logprob",
    "mean_entropy",
    "max_entropy",
    "max_grammar_cut",
    "mean_grammar_cut",
    "first_valid",
    "repaired",
    "final_valid",
    "is_call",
    "log_tokens",
    "agreement",
    "has_agreement",
)
LOGPROB_FLOOR = -30.0
INPUT_NAME = "features"
LOGISTIC_FORMAT = "edge-agent-logistic/1"
ONNX_EXTRA_HINT = "install the extra: pip install 'edge-agent[onnx]' (or ./install.sh --dev)"
OUTPUT_NAME = "p_success"
_CALL_KEYS = frozenset({"arguments", "parameters"})
_LITERAL_RE = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null")
_WS = " \t\r\n"


# ---------------------------------------------------------------- features


@dataclass(frozen=True)
class Features:
    """The feature vector of one answer; ``vector()`` is in FEATURE_NAMES order."""

    min_logprob: float
    mean_logprob: float
    mean_entropy: float
    max_entropy: float
    max_grammar_cut: float
    mean_grammar_cut: float
    first_valid: float
    repaired: float
    final_valid: float
    is_call: float
    log_tokens: float
    agreement: float = 1.0
    has_agreement: float = 0.0
    aligned: bool = field(default=True, compare=False)

    def vector(self) -> list[float]:
        return [float(getattr(self, name)) for name in FEATURE_NAMES]

    def to_json(self) -> dict[str, float]:
        return {
            name: round(value, 6) for name, value in zip(FEATURE_NAMES, self.vector(), strict=True)
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Features:
        """From :meth:`to_json` output; a missing name is an :class:`InputError`."""
        missing = [n for n in FEATURE_NAMES if n not in data]
        if missing:
            raise InputError(f"features are missing {', '.join(missing)}")
        values: dict[str, Any] = {n: _finite(data[n], n) for n in FEATURE_NAMES}
        return cls(**values)


def _finite(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"feature {name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise InputError(f"feature {name} must be finite, got {value!r}")
    return float(value)


def features_from_result(
    result: Result, *, step: int = 0, samples: Sequence[Result] = ()
) -> Features:
    """Features of the answer a :class:`~edge_agent.agent.Result` gave at ``step``.

    ``samples`` are k extra answers to the same request (e.g. sampled at a
    temperature above 0); when given, ``agreement`` is the share of them whose
    verified calls equal this answer's.
    """
    answered = [a for a in result.attempts if a.kind != "shadow"]
    attempts = [a for a in answered if a.step == step] or answered
    features = features_from_attempts(attempts)
    if not samples:
        return features
    return with_agreement(features, result, samples)


def with_agreement(features: Features, result: Result, samples: Sequence[Result]) -> Features:
    """``features`` with the agreement slot filled from k sampled answers."""
    mine = _call_key(result)
    share = sum(1 for s in samples if _call_key(s) == mine) / len(samples)
    return replace(features, agreement=share, has_agreement=1.0)


def _call_key(result: Result) -> str:
    calls = sorted(c.key() for c in result.calls)
    return json.dumps(calls) if calls else f"text:{result.final.valid}"


def features_from_attempts(attempts: Sequence[Attempt]) -> Features:
    """Features from the attempts of one step (initial, then repairs)."""
    if not attempts:
        raise InputError("features need at least one attempt")
    first, final = attempts[0], attempts[-1]
    tokens = final.generation.tokens
    mask, aligned = decision_mask([t.text for t in tokens], final.generation.text, final.parsed)
    chosen = [t for t, keep in zip(tokens, mask, strict=True) if keep]
    lps = [max(LOGPROB_FLOOR, t.logprob) for t in chosen]
    ents = [t.entropy for t in chosen]
    cuts = [_cut(t.top_logprob, t.logprob) for t in chosen]
    all_cuts = [_cut(t.top_logprob, t.logprob) for t in tokens]
    return Features(
        min_logprob=min(lps, default=LOGPROB_FLOOR),
        mean_logprob=_mean(lps, LOGPROB_FLOOR),
        mean_entropy=_mean(ents, 0.0),
        max_entropy=max(ents, default=0.0),
        max_grammar_cut=max(all_cuts, default=0.0),
        mean_grammar_cut=_mean(cuts, 0.0),
        first_valid=float(first.valid),
        repaired=float(len(attempts) > 1 and not first.valid and final.valid),
        final_valid=float(final.valid),
        is_call=float(final.parsed.is_call),
        log_tokens=math.log1p(len(tokens)),
        aligned=aligned,
    )


def _cut(top: float, chosen: float) -> float:
    return min(-LOGPROB_FLOOR, max(0.0, top - chosen))


def _mean(values: Sequence[float], empty: float) -> float:
    return sum(values) / len(values) if values else empty


# ---------------------------------------------------------------- decision tokens


def decision_mask(
    token_texts: Sequence[str], text: str, parsed: ParsedOutput | None = None
) -> tuple[list[bool], bool]:
    """Which tokens carry a decision, and whether the alignment succeeded.

    A token is a decision token when its characters overlap the tool name's
    value or an argument value (string contents with their closing quote, or
    a number/true/false/null literal). ``parsed``, when given, must name the
    same tools in the same order, else the alignment is not trusted. A
    plain-text answer's decision token is its first. On failure every token
    counts (``aligned`` is False).
    """
    n = len(token_texts)
    everything = [True] * n
    if n == 0:
        return [], True
    first_only = [True] + [False] * (n - 1)
    if parsed is not None and not (parsed.calls or parsed.errors):
        return first_only, True  # a plain-text answer
    if "".join(token_texts) != text:
        return everything, False
    spans = call_value_spans(text)
    if spans is None:
        return everything, False
    names, ranges = spans
    if not names:
        return (first_only, True) if parsed is None and not ranges else (everything, False)
    if parsed is not None and [c.name for c in parsed.calls] != names:
        return everything, False
    return _overlapping(token_texts, ranges), True


def _overlapping(token_texts: Sequence[str], ranges: Sequence[tuple[int, int]]) -> list[bool]:
    mask: list[bool] = []
    pos = 0
    for piece in token_texts:
        start, end = pos, pos + len(piece)
        mask.append(any(s < end and start < e for s, e in ranges))
        pos = end
    return mask


def call_value_spans(text: str) -> tuple[list[str], list[tuple[int, int]]] | None:
    """The tool names (in order) and the character ranges of the decision
    values of every JSON call in ``text``; None if some JSON does not scan.
    A text with no JSON at all gives ``([], [])``."""
    names: list[str] = []
    ranges: list[tuple[int, int]] = []
    pos = _next_json(text, 0)
    while pos is not None:
        found: list[tuple[tuple[str | int, ...], int, int]] = []
        end = _scan(text, pos, (), found)
        if end is None:
            return None
        for path, start, stop in found:
            if _is_name(path):
                names.append(json.loads(text[start - 1 : stop]))
                ranges.append((start, stop))
            elif _is_argument(path):
                ranges.append((start, stop))
        pos = _next_json(text, end)
    return names, ranges


def _next_json(text: str, pos: int) -> int | None:
    starts = [i for i in (text.find("{", pos), text.find("[", pos)) if i >= 0]
    return min(starts) if starts else None


def _call_level(path: Sequence[str | int]) -> bool:
    return all(isinstance(p, int) or p == "function" for p in path)


def _is_name(path: tuple[str | int, ...]) -> bool:
    return bool(path) and path[-1] == "name" and _call_level(path[:-1])


def _is_argument(path: tuple[str | int, ...]) -> bool:
    return any(part in _CALL_KEYS and _call_level(path[:i]) for i, part in enumerate(path))


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WS:
        pos += 1
    return pos


def _scan(
    text: str,
    pos: int,
    path: tuple[str | int, ...],
    out: list[tuple[tuple[str | int, ...], int, int]],
) -> int | None:
    """Scan one JSON value at ``pos``; scalars go to ``out`` as (path, start,
    end). String spans start after the opening quote and include the closing
    one. Returns the index after the value, or None if it is not JSON."""
    pos = _skip(text, pos)
    if pos >= len(text):
        return None
    char = text[pos]
    if char == "{":
        return _scan_object(text, pos + 1, path, out)
    if char == "[":
        return _scan_array(text, pos + 1, path, out)
    if char == '"':
        end = _string_end(text, pos)
        if end is not None:
            out.append((path, pos + 1, end))
        return end
    match = _LITERAL_RE.match(text, pos)
    if match is None:
        return None
    out.append((path, pos, match.end()))
    return match.end()


def _string_end(text: str, pos: int) -> int | None:
    try:
        _, end = json.decoder.scanstring(text, pos + 1)  # type: ignore[attr-defined]
    except ValueError:
        return None
    return int(end)


def _scan_object(
    text: str,
    pos: int,
    path: tuple[str | int, ...],
    out: list[tuple[tuple[str | int, ...], int, int]],
) -> int | None:
    pos = _skip(text, pos)
    if text.startswith("}", pos):
        return pos + 1
    while True:
        if not text.startswith('"', pos):
            return None
        key_end = _string_end(text, pos)
        if key_end is None:
            return None
        key = json.loads(text[pos:key_end])
        pos = _skip(text, key_end)
        if not text.startswith(":", pos):
            return None
        end = _scan(text, pos + 1, (*path, key), out)
        if end is None:
            return None
        pos = _skip(text, end)
        if text.startswith("}", pos):
            return pos + 1
        if not text.startswith(",", pos):
            return None
        pos = _skip(text, pos + 1)


def _scan_array(
    text: str,
    pos: int,
    path: tuple[str | int, ...],
    out: list[tuple[tuple[str | int, ...], int, int]],
) -> int | None:
    pos = _skip(text, pos)
    if text.startswith("]", pos):
        return pos + 1
    index = 0
    while True:
        end = _scan(text, pos, (*path, index), out)
        if end is None:
            return None
        pos = _skip(text, end)
        if text.startswith("]", pos):
            return pos + 1
        if not text.startswith(",", pos):
            return None
        pos, index = pos + 1, index + 1


# ---------------------------------------------------------------- models


class ConfidenceModel(Protocol):
    """Anything that maps features to a calibrated probability of success."""

    def p_success(self, features: Features) -> float: ...


@dataclass(frozen=True)
class HeuristicConfidence:
    """The fallback when no model file is configured: a fixed logistic on
    the lowest decision-token log-prob, ``sigmoid(slope * (min_logprob -
    midpoint))``, times 0 for an answer that failed the verifier.

    With the defaults (midpoint -1.5, slope 2) a call whose every decision
    token had log p above -0.1 scores 0.94, one token at -1.3 scores 0.6 (the
    default τ), and one the model gave under 5% (log p < -3) scores below
    0.05. The numbers were read off Qwen2.5-Coder-0.5B's answers to home
    tools, not fitted: clear requests scored min log p -0.02 to -0.3, a wrong
    room -2.4, an unrelated request -6.4, but other unrelated requests only
    -0.5 to -0.7 (the grammar still forces a call, and the model is sure of
    it). So the heuristic catches only clear cases; fit a model with
    ``edge-agent router calibrate`` for real numbers.
    """

    midpoint: float = -1.5
    slope: float = 2.0

    def p_success(self, features: Features) -> float:
        if not features.final_valid:
            return 0.0
        return _sigmoid(self.slope * (features.min_logprob - self.midpoint))


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    ez = math.exp(z)
    return ez / (1.0 + ez)


class OnnxConfidence:
    """Any ONNX classifier with one float input ``[N, len(FEATURE_NAMES)]``
    (the features in FEATURE_NAMES order) and a probability output: ``[N]``,
    ``[N, 1]``, or ``[N, 2]`` with P(success) in column 1. Run by onnxruntime
    on one thread; a file that does not fit is a :class:`ConfigError`."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise ConfigError(f"confidence model {path} does not exist")
        ort = _import_optional("onnxruntime", f"load the ONNX confidence model {path}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ConfigError(f"confidence model {path} cannot be loaded: {exc}") from exc
        self.path = path
        self._input = self._check_input(path)
        self._output = self._session.get_outputs()[0].name

    def _check_input(self, path: Path) -> str:
        inputs = self._session.get_inputs()
        width = inputs[0].shape[-1] if inputs and inputs[0].shape else None
        if len(inputs) != 1 or width not in (len(FEATURE_NAMES), None) or isinstance(width, str):
            raise ConfigError(
                f"confidence model {path} must take one input of {len(FEATURE_NAMES)} features",
                hint=f"the features are, in order: {', '.join(FEATURE_NAMES)}",
            )
        names = self._session.get_modelmeta().custom_metadata_map.get("feature_names")
        if names is not None and tuple(names.split(",")) != FEATURE_NAMES:
            raise ConfigError(
                f"confidence model {path} was fitted on other features: {names}",
                hint="refit it with `edge-agent router calibrate`",
            )
        return str(inputs[0].name)

    def p_success(self, features: Features) -> float:
        return float(self.predict(np.asarray([features.vector()]))[0])

    def predict(self, rows: NDArray[Any]) -> NDArray[np.float64]:
        """P(success) for a batch of feature rows."""
        batch = np.asarray(rows, dtype=np.float32)
        out = np.asarray(self._session.run([self._output], {self._input: batch})[0])
        if out.ndim == 2 and out.shape[1] == 2:
            out = out[:, 1]
        return np.clip(out.reshape(len(batch)).astype(np.float64), 0.0, 1.0)


def _import_optional(module: str, purpose: str) -> Any:
    """Import a package of the ``onnx`` extra, or say which extra is missing."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"{module} is needed to {purpose} but is not installed", hint=ONNX_EXTRA_HINT
        ) from exc


class LogisticConfidence:
    """A logistic regression read from a JSON file (:meth:`LogisticFit.to_json`)
    and evaluated with numpy: no runtime beyond numpy, identical on every
    platform. A file that does not fit is a :class:`ConfigError`."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise ConfigError(f"confidence model {path} does not exist")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"confidence model {path} cannot be read: {exc}") from exc
        self.path = path
        self.fit = LogisticFit.from_json(data, source=str(path))
        self.metadata: dict[str, Any] = dict(data.get("metadata") or {})

    def p_success(self, features: Features) -> float:
        return float(self.predict(np.asarray([features.vector()]))[0])

    def predict(self, rows: NDArray[Any]) -> NDArray[np.float64]:
        """P(success) for a batch of feature rows."""
        return self.fit.predict(rows)


SHIPPED_MODEL = data_path("models") / "confidence.json"
"""Fitted by ``benchmarks/calibrate_confidence.sh`` on BFCL tuning items."""


def load_confidence(path: Path | None, *, shipped: Path = SHIPPED_MODEL) -> ConfidenceModel:
    """The model at ``path`` (``.onnx``: run by onnxruntime, from the ``onnx``
    extra; anything else: logistic weights as JSON, run by numpy); without one,
    the model shipped in ``models/`` (fitted on BFCL tuning data), else the
    heuristic."""
    if path is None:
        if not shipped.is_file():
            return HeuristicConfidence()
        path = shipped
    if path.suffix.lower() == ".onnx":
        return OnnxConfidence(path)
    return LogisticConfidence(path)


# ---------------------------------------------------------------- fitting


@dataclass(frozen=True)
class LogisticFit:
    """``sigmoid(((x - mean) / scale) @ weights + bias)``."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    iterations: int

    def predict(self, rows: NDArray[Any]) -> NDArray[np.float64]:
        x = (np.asarray(rows, dtype=np.float64) - np.asarray(self.mean)) / np.asarray(self.scale)
        z = x @ np.asarray(self.weights) + self.bias
        # exp(-z) overflows to inf for z < -709: 1 / inf is the right 0.0.
        with np.errstate(over="ignore"):
            return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=np.float64)

    def to_json(
        self, names: Sequence[str] = FEATURE_NAMES, metadata: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The fit as the JSON :class:`LogisticConfidence` reads. Floats are
        written by ``repr``, so a round trip gives the same bits."""
        if len(self.weights) != len(names):
            raise InputError(f"the fit has {len(self.weights)} weights for {len(names)} names")
        return {
            "format": LOGISTIC_FORMAT,
            "formula": "p = sigmoid(((x - mean) / scale) . coefficients + intercept)",
            "feature_names": list(names),
            "mean": list(self.mean),
            "scale": list(self.scale),
            "coefficients": list(self.weights),
            "intercept": self.bias,
            "metadata": {"iterations": self.iterations, **(metadata or {})},
        }

    @classmethod
    def from_json(cls, data: object, *, source: str = "the model") -> LogisticFit:
        """Read :meth:`to_json` output; it must be for :data:`FEATURE_NAMES`."""
        if not isinstance(data, dict) or data.get("format") != LOGISTIC_FORMAT:
            raise ConfigError(
                f"confidence model {source} is not an edge-agent logistic model",
                hint=f'its "format" must be "{LOGISTIC_FORMAT}" (a .onnx file runs in onnxruntime)',
            )
        names = data.get("feature_names")
        if names != list(FEATURE_NAMES):
            raise ConfigError(
                f"confidence model {source} was fitted on other features: {names}",
                hint="refit it with `edge-agent router calibrate`",
            )
        width = len(FEATURE_NAMES)
        try:
            vectors = [_floats(data[k], width, k) for k in ("mean", "scale", "coefficients")]
            bias = _floats([data["intercept"]], 1, "intercept")[0]
        except (KeyError, InputError) as exc:
            raise ConfigError(f"confidence model {source} is malformed: {exc}") from exc
        if any(v == 0.0 for v in vectors[1]):
            raise ConfigError(f"confidence model {source} has a zero scale")
        meta = data.get("metadata")
        iterations = meta.get("iterations", 0) if isinstance(meta, dict) else 0
        mean, scale, weights = (tuple(v) for v in vectors)
        return cls(
            mean, scale, weights, bias, int(iterations) if isinstance(iterations, int) else 0
        )


def _floats(value: object, width: int, name: str) -> list[float]:
    if not isinstance(value, list) or len(value) != width:
        raise InputError(f"{name} must be a list of {width} numbers")
    return [_finite(v, name) for v in value]


def fit_logistic(
    rows: NDArray[Any], labels: NDArray[Any], *, l2: float = 1.0, max_iter: int = 100
) -> LogisticFit:
    """L2-regularised logistic regression by Newton's method (IRLS).

    Features are standardised first (a constant column gets scale 1, and so
    weight 0); the penalty ``l2 * |w|^2 / 2`` spares the bias. Deterministic:
    the same data give the same model. Needs successes and failures both.
    """
    x, y = _training_data(rows, labels)
    if l2 <= 0:
        raise InputError(f"l2 must be > 0 (it keeps separable data finite), got {l2}")
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-12] = 1.0
    design = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    penalty = np.full(design.shape[1], l2)
    penalty[-1] = 0.0
    beta = np.zeros(design.shape[1])
    beta[-1] = math.log(y.mean() / (1 - y.mean()))
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 - reported below
        p = 1.0 / (1.0 + np.exp(-(design @ beta)))
        gradient = design.T @ (p - y) + penalty * beta
        hessian = (design.T * (p * (1 - p))) @ design + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if float(np.max(np.abs(step))) < 1e-10:
            break
    return LogisticFit(
        tuple(float(v) for v in mean),
        tuple(float(v) for v in scale),
        tuple(float(v) for v in beta[:-1]),
        float(beta[-1]),
        iterations,
    )


def _training_data(
    rows: NDArray[Any], labels: NDArray[Any]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    x = np.asarray(rows, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise InputError(f"need one label per feature row, got {x.shape} rows for {y.shape}")
    if not np.all(np.isfinite(x)):
        raise InputError("feature rows must be finite")
    if not np.all((y == 0) | (y == 1)):
        raise InputError("labels must be 0 (failure) or 1 (success)")
    if y.min() == y.max():
        raise InputError(
            f"calibration needs successes and failures; all {len(y)} examples are "
            f"{'successes' if y[0] else 'failures'}"
        )
    return x, y


def logistic_onnx(fit: LogisticFit, names: Sequence[str] = FEATURE_NAMES) -> bytes:
    """The fit as a serialised ONNX model: Sub, Div, MatMul, Add, Sigmoid
    (needs the ``onnx`` package, from the ``onnx`` extra)."""
    onnx = _import_optional("onnx", "write an ONNX confidence model")
    from onnx import TensorProto, helper

    width = len(names)
    if len(fit.weights) != width:
        raise InputError(f"the fit has {len(fit.weights)} weights for {width} feature names")

    def const(name: str, values: Sequence[float], shape: list[int]) -> Any:
        return helper.make_tensor(name, TensorProto.FLOAT, shape, [float(v) for v in values])

    nodes = [
        helper.make_node("Sub", [INPUT_NAME, "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "scale"], ["standard"]),
        helper.make_node("MatMul", ["standard", "weights"], ["dot"]),
        helper.make_node("Add", ["dot", "bias"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], [OUTPUT_NAME]),
    ]
    graph = helper.make_graph(
        nodes,
        "edge_agent_confidence",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", 1])],
        initializer=[
            const("mean", fit.mean, [width]),
            const("scale", fit.scale, [width]),
            const("weights", fit.weights, [width, 1]),
            const("bias", [fit.bias], [1]),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edge-agent"
    )
    model.ir_version = 8  # readable by onnxruntime >= 1.10
    helper.set_model_props(model, {"feature_names": ",".join(names), "kind": "logistic"})
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


# ---------------------------------------------------------------- training examples


def examples_from_bench(report: dict[str, Any]) -> tuple[list[list[float]], list[int]]:
    """(feature rows, labels) from a ``bench bfcl --json`` report: every
    ``per_item`` entry with ``features`` (from :meth:`Features.to_json`) and
    ``correct``. Items without features (not run, or an old report) are skipped."""
    items = report.get("per_item")
    if not isinstance(items, list):
        raise InputError("not a bench report: it has no per_item list")
    rows: list[list[float]] = []
    labels: list[int] = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("features"), dict):
            continue
        rows.append(Features.from_json(item["features"]).vector())
        labels.append(int(bool(item.get("correct"))))
    return rows, labels


def example_from_routed(result: dict[str, Any]) -> tuple[list[float], int] | None:
    """A training example from a journaled ``RoutedResult.to_json()``, with the
    cloud model as the teacher: an offloaded request whose reply passed the
    verifier is labelled 1 if the SLM's last output proposed the same calls
    (or was a text answer when the cloud's was). None when there is no label:
    local answers (no ground truth), replies that failed, no features."""
    from edge_agent.decoding.calls import parse_output

    offload = result.get("offload")
    features = result.get("features")
    attempts = result.get("attempts")
    if not (isinstance(offload, dict) and offload.get("valid") is True):
        return None
    if not isinstance(features, dict) or not isinstance(attempts, list) or not attempts:
        return None
    slm = parse_output(str(attempts[-1].get("raw", "")))
    mine = _call_keys(c.to_dict() for c in slm.calls)
    cloud = _call_keys(offload.get("calls", []))
    agree = (mine == cloud) if (mine or cloud) else not slm.errors
    return Features.from_json(features).vector(), int(agree)


def example_from_shadow(result: dict[str, Any]) -> tuple[list[float], int] | None:
    """A training example from a journaled local answer that had a shadow
    check (the tier above answered it too, see ``ladder.shadow_rate``):
    labelled 1 if tier 0's answer proposed the calls tier 1's did (or both
    answered in text). None without a shadow check or features. These are
    the sure answers, which offloads never label."""
    from edge_agent.decoding.calls import parse_output

    attempts = result.get("attempts")
    features = result.get("features")
    if not isinstance(attempts, list) or not isinstance(features, dict):
        return None
    first = [a for a in attempts if isinstance(a, dict) and a.get("step", 0) == 0]
    shadow = [a for a in first if a.get("kind") == "shadow"]
    answer = [a for a in first if a.get("kind") != "shadow"]
    if not shadow or not answer:
        return None
    mine, theirs = (parse_output(str(a[-1].get("raw", ""))) for a in (answer, shadow))
    if theirs.errors or not shadow[-1].get("valid"):
        return None  # tier 1's own answer is no label when it did not verify
    same = _call_keys(c.to_dict() for c in mine.calls) == _call_keys(
        c.to_dict() for c in theirs.calls
    )
    return Features.from_json(features).vector(), int(same and not mine.errors)


def _call_keys(calls: Iterable[Any]) -> list[str]:
    """Calls (as dicts) in a form that compares as a multiset."""
    return sorted(json.dumps(c, sort_keys=True) for c in calls)


# ---------------------------------------------------------------- calibration metrics


@dataclass(frozen=True)
class Calibration:
    """How well probabilities match outcomes (lower is better for all three)."""

    n: int
    log_loss: float
    brier: float
    ece: float  # expected calibration error over 10 equal-width bins

    def to_json(self) -> dict[str, float]:
        return {
            "n": self.n,
            "log_loss": round(self.log_loss, 4),
            "brier": round(self.brier, 4),
            "ece": round(self.ece, 4),
        }


def calibration(p: NDArray[Any], labels: NDArray[Any], bins: int = 10) -> Calibration:
    probs = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    y = np.asarray(labels, dtype=np.float64)
    if len(probs) == 0:
        raise InputError("no examples to score")
    log_loss = float(-np.mean(y * np.log(probs) + (1 - y) * np.log(1 - probs)))
    brier = float(np.mean((probs - y) ** 2))
    which = np.minimum((probs * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            ece += inside.mean() * abs(float(probs[inside].mean()) - float(y[inside].mean()))
    return Calibration(len(probs), log_loss, brier, ece)


__all__ = [
    "FEATURE_NAMES",
    "Calibration",
    "ConfidenceModel",
    "Features",
    "HeuristicConfidence",
    "LogisticConfidence",
    "LogisticFit",
    "OnnxConfidence",
    "calibration",
    "call_value_spans",
    "decision_mask",
    "example_from_routed",
    "examples_from_bench",
    "features_from_attempts",
    "features_from_result",
    "fit_logistic",
    "load_confidence",
    "logistic_onnx",
    "with_agreement",
]
