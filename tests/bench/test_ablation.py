"""`bench ablation`: the summary arithmetic on hand-made reports, and a real
run of the local configurations with SmolLM2 on the BFCL sample."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edge_agent import cli
from edge_agent.bench.ablation import AblationOptions, markdown, summarise, write_outputs
from edge_agent.bench.bfcl_run import JOULES_PER_KWH
from edge_agent.errors import BenchError

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "bfcl"


def item(correct: bool, latency: float, *, route: str = "local", **extra: Any) -> dict[str, Any]:
    return {
        "id": "x", "correct": correct, "route": route, "latency_s": latency, "calls": [],
        "energy_j": 0.0, "cloud_cost": 0.0, "valid_at_1": True, "exec_ok": correct, **extra,
    }  # fmt: skip


def save(out: Path, category: str, mode: str, items: list[dict[str, Any]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    items = [{**i, "id": f"{category}-{k}"} for k, i in enumerate(items)]
    llm = "qwen2.5-coder-1.5b" if mode in ("llm", "cascade") else None
    report = {"n": len(items), "model": "qwen2.5-coder-0.5b", "llm": llm, "per_item": items}
    report.update(category=category, mode=mode)
    report.update(accuracy=0.0, valid_at_1=0.0, exec_rate=0.0, p50_s=0.0, p95_s=0.0)
    report.update(energy_j_per_request=0.0, offload_rate=0.0, cost_per_success=None)
    (out / f"{category}.{mode}.json").write_text(json.dumps(report))


def test_pooled_rows_and_cps_ratio(tmp_path: Path) -> None:
    options = AblationOptions(SAMPLE, tmp_path, categories=("simple_python", "multiple"))
    # LLM: 4 of 4 correct at 0.01 each; SLM: 2 of 4 on 3.6 kJ (0.30/kWh → 0.0003).
    cloud = item(True, 2.0, route="offload:https", cloud_cost=0.01, tier="cloud")
    for category in options.categories:
        save(tmp_path, category, "llm", [cloud, cloud])
        save(tmp_path, category, "slm", [item(True, 1.0, energy_j=1800.0), item(False, 3.0)])
    summary = summarise(options)
    rows = {r["mode"]: r for r in summary["rows"]}
    assert list(rows) == ["llm", "slm"]
    assert rows["llm"]["accuracy"] == 1.0 and rows["llm"]["offload_rate"] == 1.0
    assert rows["llm"]["cps_ratio"] == pytest.approx(1.0)
    slm_cps = 2 * 1800.0 / JOULES_PER_KWH * 0.30 / 2
    assert rows["slm"]["cost_per_success"] == pytest.approx(slm_cps)
    assert rows["slm"]["cps_ratio"] == pytest.approx(slm_cps / 0.01)
    assert rows["slm"]["accuracy"] == 0.5 and rows["slm"]["p95_s"] == pytest.approx(3.0)
    assert rows["slm"]["energy_j_per_request"] == pytest.approx(900.0)
    assert rows["llm"]["tier_share"] == {"cloud": 1.0} and rows["slm"]["tier_share"] == {"0": 1.0}
    assert summary["router"] == {}  # no cascade row: nothing to judge
    table = markdown(summary)
    assert "| configuration | schema constraint | models | quantisation |" in table
    # models and quantisation from the reports and the manifest, not fixed labels
    assert "| LLM baseline | no | qwen2.5-coder-1.5b | Q4_K_M | 1.000 |" in table
    assert "| SLM | yes | qwen2.5-coder-0.5b | Q4_K_M |" in table and "1.000×" in table
    assert "| cloud 1.00 |" in table and "| tier 0 1.00 |" in table
    written = write_outputs(summary, tmp_path)
    assert {p.name for p in written} >= {"ablation.md", "ablation.json"}
    assert "latencies" not in json.loads((tmp_path / "ablation.json").read_text())["rows"][0]
    if any(p.suffix == ".png" for p in written):  # matplotlib is a dev extra
        assert all(p.stat().st_size > 1000 for p in written if p.suffix == ".png")


def test_the_cascade_is_set_beside_a_random_router(tmp_path: Path) -> None:
    options = AblationOptions(SAMPLE, tmp_path, categories=("multiple",), threshold=0.5)
    # SLM right on the sure item, wrong on the unsure one; the LLM the other way round.
    save(tmp_path, "multiple", "slm", [item(True, 1.0), item(False, 1.0)])
    save(tmp_path, "multiple", "llm", [item(False, 2.0, route="offload:https"),
                                       item(True, 2.0, route="offload:https")])  # fmt: skip
    save(tmp_path, "multiple", "cascade", [item(True, 1.0, p_success=0.9),
         item(True, 2.0, route="offload:https", p_success=0.2, tier="cloud")])  # fmt: skip
    summary = summarise(options)
    pooled = summary["router"]["pooled"]
    assert pooled["cascade"]["offload_rate"] == pooled["random"]["offload_rate"] == 0.5
    assert pooled["cascade"]["accuracy"] == 1.0 and pooled["random"]["accuracy"] == 0.5
    assert summary["router"]["per_category"]["multiple"]["cascade"] == pooled["cascade"]
    rows = {r["mode"]: r for r in summary["rows"]}
    assert rows["cascade"]["models"] == "qwen2.5-coder-0.5b → qwen2.5-coder-1.5b"
    assert rows["cascade"]["quantisation"] == "Q4_K_M"
    table = markdown(summary)
    assert "| all (2) | 0.50 | 0.50 | 0.500 | 0.500 | 1.000 | 0.500 |" in table
    written = write_outputs(summary, tmp_path)
    if any(p.suffix == ".png" for p in written):
        assert (tmp_path / "ablation_router.png").stat().st_size > 1000


def test_options_are_checked_and_runs_resume(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="held out"):
        AblationOptions(SAMPLE, tmp_path, categories=("live_simple",)).check()
    with pytest.raises(BenchError, match="unknown modes: chess"):
        AblationOptions(SAMPLE, tmp_path, modes=("chess",)).check()
    with pytest.raises(BenchError, match="no questions for"):
        AblationOptions(tmp_path, tmp_path, categories=("multiple",)).check()
    options = AblationOptions(SAMPLE, tmp_path, categories=("multiple", "irrelevance"))
    save(tmp_path, "multiple", "slm", [item(True, 1.0)])
    todo = options.todo()
    assert ("multiple", "slm") not in todo
    assert todo.index(("irrelevance", "slm")) < todo.index(("multiple", "llm"))
    with pytest.raises(BenchError, match="no ablation runs"):
        summarise(AblationOptions(SAMPLE, tmp_path / "empty"))


@pytest.mark.model
def test_local_configurations_end_to_end(
    smol: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ablation"
    argv = [
        "bench", "ablation", "--bfcl", str(SAMPLE), "--out", str(out),
        "--categories", "simple_python,irrelevance", "--modes", "slm,slm-nogrammar",
        "--limit", "2", "--model", "smollm2-135m", "--threads", "2", "--no-progress",
    ]  # fmt: skip
    assert cli.main(argv) == 0, capsys.readouterr().err
    table = capsys.readouterr().out
    assert "| SLM | yes |" in table and "| SLM | no |" in table
    for category in ("simple_python", "irrelevance"):
        for mode in ("slm", "slm-nogrammar"):
            report = json.loads((out / f"{category}.{mode}.json").read_text())
            assert report["n"] == 2 and report["mode"] == mode
    summary = json.loads((out / "ablation.json").read_text())
    assert [r["n"] for r in summary["rows"]] == [4, 4]
    # A second call only rebuilds the summary: nothing left to run.
    before = (out / "simple_python.slm.json").stat().st_mtime_ns
    assert cli.main([*argv, "--report-only"]) == 0
    assert (out / "simple_python.slm.json").stat().st_mtime_ns == before
