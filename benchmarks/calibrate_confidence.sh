#!/usr/bin/env bash
# Fit the shipped confidence model (models/confidence.json) on BFCL tuning data
# the benchmark tables never use: simple_python/multiple/irrelevance items
# after the first 100 (the tables take at most the first 100). Never the
# live_* categories: they are held out.
#
#   benchmarks/calibrate_confidence.sh BFCL_DIR [OUT_DIR]
#
# BFCL_DIR holds data/ and possible_answer/ (the BFCL v4 layout).
set -euo pipefail
BFCL=${1:?usage: $0 BFCL_DIR [OUT_DIR]}
OUT=${2:-bench-results/calibration}
EA=${EDGE_AGENT:-.venv/bin/edge-agent}
mkdir -p "$OUT"
run() {  # category skip limit
  local answers=()
  [ "$1" = irrelevance ] || answers=(--answers "$BFCL/possible_answer/BFCL_v4_$1.json")
  "$EA" bench bfcl --questions "$BFCL/data/BFCL_v4_$1.json" "${answers[@]}" \
    --category "$1" --skip "$2" --limit "$3" --mode slm --threads "${THREADS:-2}" \
    --no-progress --json "$OUT/$1.json"
}
run simple_python 100 50
run multiple 100 40
run irrelevance 100 50
"$EA" router calibrate --out models/confidence.json \
  $(for f in "$OUT"/*.json; do printf -- '--from-bench %s ' "$f"; done)
