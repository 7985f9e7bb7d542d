"""`bench bfcl` end to end with the real SmolLM2 engine on the BFCL sample.

SmolLM2 is there for speed, not accuracy: these tests check the report's
shape, that its figures agree with its own per-item records, and that those
records re-score to the same verdicts; never how good the model is."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge_agent import cli
from edge_agent.bench.bfcl_check import check_item, is_relevance_category
from edge_agent.bench.bfcl_data import BfclItem, load_items
from edge_agent.bench.bfcl_run import (
    CATEGORIES,
    MODES,
    ROUTED_MODES,
    BenchOptions,
    BenchReport,
    load_bfcl,
    percentile,
    run_bfcl,
    summary_table,
)
from edge_agent.errors import BenchError
from edge_agent.power import best_probe
from tests.conftest import run_cli

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "bfcl"
SAMPLE_CATEGORIES = [
    "simple_python", "multiple", "parallel", "parallel_multiple", "irrelevance", "live_simple",
]  # fmt: skip
LIMIT = 2
LOCAL_MODES = [m for m in MODES if m not in ROUTED_MODES]  # the routed ones: tests/routing
FIXED_FIELDS: dict[str, type | tuple[type, ...]] = {
    "n": int,
    "accuracy": float,
    "valid_at_1": float,
    "exec_rate": float,
    "p50_s": float,
    "p95_s": float,
    "energy_j_per_request": float,
    "offload_rate": float,
    "cost_per_success": (float, type(None)),
    "model": str,
    "mode": str,
    "category": str,
    "machine": dict,
    "energy_source": str,
    "edge_agent_version": str,
    "per_item": list,
}
ITEM_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "correct": bool,
    "route": str,
    "latency_s": float,
    "calls": (list, type(None)),
    "reason": str,
    "prompt_tokens": int,
    "completion_tokens": int,
    "energy_j": float,
}


def questions(category: str) -> Path:
    return SAMPLE / f"BFCL_v4_{category}.json"


def answers(category: str) -> Path | None:
    path = SAMPLE / "possible_answer" / f"BFCL_v4_{category}.json"
    return path if path.exists() else None


def write_lines(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def bench(smol) -> Callable[[str, str], tuple[BenchReport, list[BfclItem]]]:
    """Runs (category, mode) on the first LIMIT sample items, once per module."""
    cache: dict[tuple[str, str], tuple[BenchReport, list[BfclItem]]] = {}
    probe = best_probe()

    def run(category: str, mode: str) -> tuple[BenchReport, list[BfclItem]]:
        if (category, mode) not in cache:
            items = load_bfcl(questions(category), answers(category), category, LIMIT)
            options = BenchOptions(category, mode, max_tokens=64)
            cache[category, mode] = (run_bfcl(items, smol, options, probe=probe), items)
        return cache[category, mode]

    return run


@pytest.fixture
def wired(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lists the bench command in the CLI, as the lead will."""
    if "edge_agent.cli.bench" not in cli._COMMAND_MODULES:
        monkeypatch.setattr(
            cli, "_COMMAND_MODULES", (*cli._COMMAND_MODULES, "edge_agent.cli.bench")
        )


def assert_types(record: dict[str, Any], fields: dict[str, type | tuple[type, ...]]) -> None:
    for name, kind in fields.items():
        assert name in record, name
        assert isinstance(record[name], kind), (name, record[name])
        if kind is int:
            assert not isinstance(record[name], bool), name


# --------------------------------------------------------------------------- the model runs


@pytest.mark.model
@pytest.mark.parametrize("mode", LOCAL_MODES)
@pytest.mark.parametrize("category", SAMPLE_CATEGORIES)
def test_report_has_every_fixed_field(bench, category: str, mode: str) -> None:
    report, _ = bench(category, mode)
    data = json.loads(json.dumps(report.to_json()))  # plain JSON all the way down
    assert_types(data, FIXED_FIELDS)
    assert data["n"] == LIMIT == len(data["per_item"])
    assert (data["category"], data["mode"], data["model"]) == (category, mode, "smollm2-135m")
    assert set(data["machine"]) >= {"platform", "cpu", "nproc"}
    assert data["energy_source"].split(":")[0] in {"rapl", "hwmon", "cpu-model"}
    assert data["offload_rate"] == 0.0
    for item in data["per_item"]:
        assert_types(item, ITEM_FIELDS)
        assert item["route"] == "local"
        assert item["energy_j"] >= 0 and item["latency_s"] > 0
        assert item["prompt_tokens"] > 0 and item["completion_tokens"] > 0
        assert item["correct"] == (item["reason"] == "")


@pytest.mark.model
@pytest.mark.parametrize("mode", LOCAL_MODES)
@pytest.mark.parametrize("category", SAMPLE_CATEGORIES)
def test_per_item_calls_rescore_to_the_same_verdict(bench, category: str, mode: str) -> None:
    report, items = bench(category, mode)
    by_id = {item.id: item for item in items}
    for record in report.to_json()["per_item"]:
        item = by_id[record["id"]]
        verdict = check_item(category, item.functions, record["calls"], item.ground_truth)
        assert verdict.correct == record["correct"]
        assert verdict.reason == record["reason"]


@pytest.mark.model
@pytest.mark.parametrize("mode", LOCAL_MODES)
@pytest.mark.parametrize("category", SAMPLE_CATEGORIES)
def test_metrics_agree_with_the_records(bench, category: str, mode: str) -> None:
    report, _ = bench(category, mode)
    data = report.to_json()
    rows = data["per_item"]
    assert data["accuracy"] == sum(r["correct"] for r in rows) / len(rows)
    assert data["valid_at_1"] == sum(r["valid_at_1"] for r in rows) / len(rows)
    assert data["exec_rate"] == sum(r["exec_ok"] for r in rows) / len(rows)
    assert data["exec_rate"] <= data["accuracy"]
    if is_relevance_category(category):
        assert data["exec_rate"] == data["accuracy"]
    assert data["p50_s"] <= data["p95_s"]
    total = sum(r["energy_j"] for r in rows)
    assert data["energy_j_per_request"] == pytest.approx(total / len(rows), abs=1e-3)
    correct = sum(r["correct"] for r in rows)
    if correct:
        expected = data["energy_j_total"] / 3.6e6 * 0.30 / correct
        assert data["cost_per_success"] == pytest.approx(expected)
    else:
        assert data["cost_per_success"] is None
    assert f"BFCL {category}" in summary_table(report)


@pytest.mark.model
def test_bad_tools_are_a_recorded_failure_and_no_tools_still_runs(smol, tmp_path: Path) -> None:
    good = json.loads(questions("irrelevance").read_text().splitlines()[0])
    bad = {**good, "id": "irrelevance_900"}
    bad["function"] = [{**good["function"][0], "name": "not a valid name!"}]
    empty = {**good, "id": "irrelevance_901", "function": []}
    path = write_lines(tmp_path / "BFCL_v4_irrelevance.json", [bad, empty])
    items = load_bfcl(path, None, "irrelevance")
    options = BenchOptions("irrelevance", "slm", max_tokens=32)
    rows = run_bfcl(items, smol, options).to_json()["per_item"]
    assert rows[0]["correct"] is False
    assert rows[0]["reason"].startswith("tools rejected: ")
    assert "invalid name" in rows[0]["reason"]
    assert rows[0]["calls"] is None and rows[0]["route"] == "none"
    assert rows[1]["route"] == "local" and rows[1]["calls"] == []  # nothing to call
    assert rows[1]["correct"] is True


# --------------------------------------------------------------------------- no model


def test_percentile() -> None:
    assert percentile([], 50) == 0.0
    assert percentile([3.0], 95) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([float(i) for i in range(1, 101)], 95) == pytest.approx(95.05)


def test_sample_categories_are_known() -> None:
    assert set(SAMPLE_CATEGORIES) <= CATEGORIES
    assert set(MODES) == {"ladder", "slm", "slm-nogrammar", "llm", "llm-schema", "cascade"}
    # The routed modes need a cloud, and ladder the tiers: their solvers are built per run.
    assert {m for m, solver in MODES.items() if solver is None} == ROUTED_MODES | {"ladder"}


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"category": "simple_java"}, "unknown category 'simple_java'"),
        ({"mode": "chess"}, "unknown mode 'chess'"),
        ({"kwh_price": -1.0}, "price must be >= 0"),
    ],
)
def test_options_are_checked(kwargs: dict[str, Any], needle: str) -> None:
    options = BenchOptions(**{"category": "simple_python", **kwargs})
    with pytest.raises(BenchError, match=needle):
        options.check()


def test_a_routed_mode_needs_its_solver() -> None:
    with pytest.raises(BenchError, match="needs a cloud endpoint"):
        run_bfcl([], None, BenchOptions(category="simple_python", mode="cascade"))  # type: ignore[arg-type]


def test_load_bfcl_checks_before_a_long_run(tmp_path: Path) -> None:
    simple = questions("simple_python")
    with pytest.raises(BenchError, match="--answers"):
        load_bfcl(simple, None, "simple_python")
    with pytest.raises(BenchError, match="holds irrelevance questions, not simple_python"):
        load_bfcl(questions("irrelevance"), answers("simple_python"), "simple_python")
    with pytest.raises(BenchError, match="at least 1"):
        load_bfcl(simple, answers("simple_python"), "simple_python", 0)
    with pytest.raises(BenchError, match="does not exist"):
        load_bfcl(
            tmp_path / "BFCL_v4_simple_python.json", answers("simple_python"), "simple_python"
        )
    assert len(load_bfcl(simple, answers("simple_python"), "simple_python", 3)) == 3
    assert len(load_bfcl(questions("irrelevance"), None, "irrelevance")) == len(
        load_items(questions("irrelevance"))
    )


def error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    code = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == cli.EXIT_ERROR
    assert len(err) == 1, err
    assert err[0].startswith("edge-agent: error: ")
    return err[0]


def bfcl_args(category: str, *extra: str) -> list[str]:
    args = ["bench", "bfcl", "--questions", str(questions(category)), "--category", category]
    if (path := answers(category)) is not None:
        args += ["--answers", str(path)]
    return [*args, *extra]


def raw_args(questions_file: Path, category: str, *extra: str) -> list[str]:
    return ["bench", "bfcl", "--questions", str(questions_file), "--category", category, *extra]


@pytest.mark.usefixtures("wired")
def test_cli_bad_input_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = raw_args(tmp_path / "q.json", "irrelevance")
    assert "does not exist" in error_line(capsys, missing)
    broken = tmp_path / "BFCL_v4_irrelevance.json"
    broken.write_text('{"id": "irrelevance_0", "question": [[]], "function": []}\nnot json\n')
    assert f"{broken}:2: not valid JSON" in error_line(capsys, raw_args(broken, "irrelevance"))
    assert "unknown category 'chess'" in error_line(capsys, raw_args(broken, "chess"))
    no_answers = raw_args(questions("simple_python"), "simple_python")
    assert "--answers" in error_line(capsys, no_answers)
    assert "unknown mode 'chess'" in error_line(capsys, bfcl_args("parallel", "--mode", "chess"))
    assert "needs --llm-url" in error_line(capsys, bfcl_args("parallel", "--mode", "cascade"))
    bad_price = bfcl_args("parallel", "--mode", "llm", "--llm-url", "https://x/v1", "--price", "1")
    assert "--price takes IN,OUT" in error_line(capsys, bad_price)
    assert "--skip must be at least 0" in error_line(capsys, bfcl_args("parallel", "--skip", "-1"))
    on_off = bfcl_args("parallel", "--parallel", "yes")
    assert "--parallel takes on or off" in error_line(capsys, on_off)
    assert "unknown energy source" in error_line(capsys, bfcl_args("parallel", "--power", "x"))
    short = tmp_path / "a" / "BFCL_v4_simple_python.json"
    write_lines(short, [{"id": "x", "ground_truth": []}])
    partial = raw_args(questions("simple_python"), "simple_python", "--answers", str(short))
    assert "no ground truth for id 'simple_python_0'" in error_line(capsys, partial)


@pytest.mark.model
@pytest.mark.usefixtures("wired")
def test_cli_in_process_writes_json_and_a_table(
    smol, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "results" / "parallel.json"
    argv = bfcl_args(
        "parallel", "--limit", "1", "--model", "smollm2-135m", "--parallel", "off", "--mode", "slm"
    )
    code = cli.main([*argv, "--json", str(out), "--no-progress", "--threads", "2"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "BFCL parallel | mode slm | model smollm2-135m" in captured.out
    assert "accuracy" in captured.out and "energy/request (J)" in captured.out
    data = json.loads(out.read_text())
    assert_types(data, FIXED_FIELDS)
    assert data["n"] == 1 and data["settings"]["parallel"] is False


@pytest.mark.model
def test_cli_subprocess_end_to_end(smol, tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    proc = run_cli(
        "bench", "bfcl",
        "--questions", str(questions("simple_python")),
        "--answers", str(answers("simple_python")),
        "--category", "simple_python", "--limit", "2", "--model", "smollm2-135m",
        "--mode", "slm", "--json", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "accuracy" in proc.stdout
    data = json.loads(out.read_text())
    assert_types(data, FIXED_FIELDS)
    assert data["n"] == 2 and data["category"] == "simple_python"
