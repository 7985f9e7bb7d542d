"""Convert an ONNX logistic confidence model to the JSON weights numpy runs.

The shipped model used to be ``models/confidence.onnx``, written by
``edge_agent.routing.confidence.logistic_onnx`` (Sub, Div, MatMul, Add, Sigmoid). It
was converted once with this script into ``models/confidence.json``; the ONNX
file is kept as ``tests/data/confidence_shipped.onnx``, the reference a test
checks the numpy evaluation against. Needs the ``onnx`` package (the
``onnx`` extra)::

    python benchmarks/onnx_to_json.py tests/data/confidence_shipped.onnx models/confidence.json

Only graphs of exactly that shape are accepted: anything else is a real ONNX
model and should stay one (``router.confidence_model`` loads ``.onnx`` files
through onnxruntime).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.routing.confidence import FEATURE_NAMES, LogisticFit

OPS = ["Sub", "Div", "MatMul", "Add", "Sigmoid"]


def convert(path: Path, metadata: dict[str, Any]) -> dict[str, Any]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    ops = [node.op_type for node in model.graph.node]
    if ops != OPS:
        raise SystemExit(f"{path}: not a logistic graph ({' -> '.join(ops)})")
    init = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    props = {p.key: p.value for p in model.metadata_props}
    names = props.get("feature_names", ",".join(FEATURE_NAMES)).split(",")
    fit = LogisticFit(
        mean=tuple(float(v) for v in init["mean"].reshape(-1)),
        scale=tuple(float(v) for v in init["scale"].reshape(-1)),
        weights=tuple(float(v) for v in init["weights"].reshape(-1)),
        bias=float(init["bias"].reshape(-1)[0]),
        iterations=0,
    )
    data = fit.to_json(names, metadata)
    del data["metadata"]["iterations"]  # the ONNX file does not record it
    return data


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("onnx", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument(
        "--note",
        default="fitted by benchmarks/calibrate_confidence.sh on BFCL tuning items "
        "(Qwen2.5-Coder-0.5B, GBNF runs; commit 7f9b298: log-loss 0.379, Brier 0.117, "
        "ECE 0.030 in-sample)",
    )
    args = p.parse_args(argv)
    meta = {
        "converted_from": "models/confidence.onnx (now tests/data/confidence_shipped.onnx)",
        "precision": "float32, as stored in the ONNX graph",
        "fitting": args.note,
    }
    data = convert(args.onnx, meta)
    args.out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
