"""The paper's ablation table, reproduced on the machine it runs on.

Six configurations answer the same BFCL items side by side in one run: the
LLM alone without and with the schema constraint (the stand-in of
:mod:`edge_agent.bench.standin`), the SLM with and without it, the local
ladder and the cascade SLM→LLM. Each (category, configuration) is an ordinary ``bench bfcl``
run whose full report is kept as ``OUT/<category>.<mode>.json``; a run whose
file exists is not repeated, so an interrupted ablation resumes. The summary
pools the items of all categories per configuration and writes
``ablation.md``, ``ablation.json`` and two plots (cost per success against
accuracy, and the latency CDF). CPS is reported as a ratio to the LLM
baseline on the same items. Each row's models and quantisation come from
the reports and the model manifest, and the cascade's router is set beside
a random router sending out the same share (:mod:`edge_agent.bench.router_replay`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.bench.bfcl_run import JOULES_PER_KWH, ROUTED_MODES, percentile
from edge_agent.bench.router_replay import compare, replay_items
from edge_agent.errors import BenchError

MODES = ("llm", "llm-schema", "slm", "slm-nogrammar", "ladder", "cascade")
CONFIGURATIONS = {
    "llm": ("LLM baseline", "no"),
    "llm-schema": ("LLM", "yes"),
    "slm": ("SLM", "yes"),
    "slm-nogrammar": ("SLM", "no"),
    "ladder": ("SLM ladder 0.5B→1.5B", "yes"),
    "cascade": ("cascade SLM→LLM", "yes"),
}
"""mode → (configuration, schema constraint), the paper's row labels."""
TUNING = ("simple_python", "multiple", "irrelevance")


@dataclass(frozen=True)
class AblationOptions:
    bfcl: Path  # BFCL v4: data/ (or the question files) and possible_answer/
    out: Path
    categories: Sequence[str] = TUNING
    modes: Sequence[str] = MODES
    limit: int = 100
    kwh_price: float = 0.30
    threshold: float = 0.6  # the cascade's τ (RouterSettings.threshold unless --threshold)

    def check(self) -> None:
        unknown = sorted(set(self.modes) - set(MODES))
        if unknown:
            raise BenchError(f"unknown modes: {', '.join(unknown)}", hint=f"use {MODES}")
        if self.limit < 1:
            raise BenchError(f"--limit must be at least 1, got {self.limit}")
        for category in self.categories:
            if category.startswith("live_"):
                raise BenchError(
                    f"{category} is held out: the ablation runs on tuning categories only",
                    hint="report live_* with `edge-agent bench bfcl`",
                )
            if not self.questions(category).is_file():
                raise BenchError(f"no questions for {category} at {self.questions(category)}")

    def questions(self, category: str) -> Path:
        """BFCL's own layout (``data/``), or the question files at the top."""
        name = f"BFCL_v4_{category}.json"
        nested = self.bfcl / "data" / name
        return nested if nested.is_file() else self.bfcl / name

    def answers(self, category: str) -> Path | None:
        path = self.bfcl / "possible_answer" / f"BFCL_v4_{category}.json"
        return path if path.is_file() else None

    def report_path(self, category: str, mode: str) -> Path:
        return self.out / f"{category}.{mode}.json"

    def todo(self) -> list[tuple[str, str]]:
        """Runs still missing, local modes first so the cloud starts late."""
        order = sorted(self.modes, key=lambda m: m in ROUTED_MODES)
        return [
            (c, m) for m in order for c in self.categories if not self.report_path(c, m).exists()
        ]


RunOne = Callable[[str, str], dict[str, Any]]
"""(category, mode) → the ``bench bfcl`` JSON report of that run."""


def run_missing(options: AblationOptions, run_one: RunOne, lock: Path | None = None) -> int:
    """Run and save every missing (category, mode); returns how many ran.
    ``lock`` is flocked around each run so other llama.cpp work waits."""
    options.out.mkdir(parents=True, exist_ok=True)
    done = 0
    for category, mode in options.todo():
        with _locked(lock):
            report = run_one(category, mode)
        path = options.report_path(category, mode)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp.replace(path)
        done += 1
    return done


@contextlib.contextmanager
def _locked(path: Path | None) -> Iterator[None]:
    if path is None:
        yield
        return
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------- the summary


def summarise(options: AblationOptions) -> dict[str, Any]:
    """Pooled rows per configuration, plus per-category rows, from the saved runs."""
    reports: dict[str, list[dict[str, Any]]] = {}
    for mode in options.modes:
        for category in options.categories:
            path = options.report_path(category, mode)
            if path.exists():
                reports.setdefault(mode, []).append(json.loads(path.read_text("utf-8")))
    if not reports:
        raise BenchError(f"no ablation runs in {options.out}")
    pooled = {mode: _pool(runs, options.kwh_price) for mode, runs in reports.items()}
    base = pooled.get("llm", {}).get("cost_per_success")
    rows = []
    for mode in MODES:
        if mode not in pooled:
            continue
        row = pooled[mode]
        configuration, constraint = CONFIGURATIONS[mode]
        cps = row["cost_per_success"]
        models = _row_models(mode, reports[mode][0])
        row.update(
            mode=mode,
            configuration=configuration,
            schema_constraint=constraint,
            models=" → ".join(models),
            quantisation=" → ".join(dict.fromkeys(_quant(m) for m in models)),
            cps_ratio=(cps / base) if cps is not None and base else None,
        )
        rows.append(row)
    per_category = [
        {key: r.get(key) for key in _PER_CATEGORY_KEYS} | {"mode": r["mode"]}
        for runs in reports.values()
        for r in runs
    ]
    first = next(iter(reports.values()))[0]
    return {
        "rows": rows,
        "per_category": per_category,
        "categories": list(options.categories),
        "machine": first.get("machine"),
        "energy_source": first.get("energy_source"),
        "models": _models(reports),
        "router": _router(reports, options),
    }


def _router(reports: dict[str, list[dict[str, Any]]], options: AblationOptions) -> dict[str, Any]:
    """The cascade against a random router, pooled and per category, when
    the slm, llm and cascade rows have all run."""
    if not {"slm", "llm", "cascade"} <= reports.keys():
        return {}

    def compared(category: str | None) -> dict[str, Any]:
        def runs(mode: str) -> list[dict[str, Any]]:
            return [r for r in reports[mode] if category in (None, r.get("category"))]

        items = replay_items(
            runs("slm"),
            runs("llm"),
            runs("cascade"),
            threshold=options.threshold,
            kwh_price=options.kwh_price,
        )
        return compare(items, options.threshold)

    return {
        "pooled": compared(None),
        "per_category": {c: compared(c) for c in options.categories},
    }


def _row_models(mode: str, report: dict[str, Any]) -> list[str]:
    """The models a row ran, in the order a request meets them."""
    slm, llm = str(report.get("model")), str(report.get("llm"))
    if mode in ("llm", "llm-schema"):
        return [llm]
    if mode == "cascade":
        return [slm, llm]
    if mode == "ladder":  # reports from before the tiers were recorded: the config's
        return [slm, *(report.get("ladder") or _configured_tiers())]
    return [slm]


def _configured_tiers() -> list[str]:
    from edge_agent.config import load_config

    return [t.name for t in load_config().ladder.tiers]


def _quant(model: str) -> str:
    """The manifest's quantisation of ``model``; a file outside it says so."""
    from edge_agent.models import load_manifest

    entry = load_manifest().get(model)
    return entry.quant if entry is not None and entry.quant else f"{model}: not in the manifest"


def _models(reports: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    return {mode: " → ".join(_row_models(mode, runs[0])) for mode, runs in reports.items()}


_PER_CATEGORY_KEYS = (
    "category", "n", "accuracy", "valid_at_1", "exec_rate", "p50_s", "p95_s",
    "energy_j_per_request", "offload_rate", "cost_per_success",
)  # fmt: skip


def _pool(runs: list[dict[str, Any]], kwh_price: float) -> dict[str, Any]:
    items = [i for r in runs for i in r["per_item"]]
    n = len(items)
    correct = sum(1 for i in items if i["correct"])
    energy = sum(i.get("energy_j", 0.0) for i in items)
    cost = energy / JOULES_PER_KWH * kwh_price + sum(i.get("cloud_cost", 0.0) for i in items)
    latencies = sorted(i["latency_s"] for i in items)
    return {
        "n": n,
        "accuracy": correct / n,
        "valid_at_1": sum(1 for i in items if i.get("valid_at_1")) / n,
        "exec_rate": sum(1 for i in items if i.get("exec_ok")) / n,
        "p50_s": percentile(latencies, 50),
        "p95_s": percentile(latencies, 95),
        "energy_j_per_request": energy / n,
        "offload_rate": sum(1 for i in items if str(i["route"]).startswith("offload")) / n,
        "cost_per_success": cost / correct if correct else None,
        "tier_share": _tier_share(items),
        "latencies": latencies,
    }


def _tier_share(items: list[dict[str, Any]]) -> dict[str, float]:
    """Share of items each rung answered: ``"0"``, ``"1"``, ``"cloud"``."""
    counts: dict[str, int] = {}
    for item in items:
        tier = "cloud" if str(item["route"]).startswith("offload") else str(item.get("tier", 0))
        counts[tier] = counts.get(tier, 0) + 1
    return {tier: counts[tier] / len(items) for tier in sorted(counts)}


def markdown(summary: dict[str, Any]) -> str:
    head = (
        "| configuration | schema constraint | models | quantisation | accuracy | valid@1 "
        "| ExecRate | p50 s | p95 s | offload | energy J/req | CPS ratio | answered by |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        ratio = "n/a" if r["cps_ratio"] is None else f"{r['cps_ratio']:.3f}×"
        lines.append(
            f"| {r['configuration']} | {r['schema_constraint']} | {r['models']} "
            f"| {r['quantisation']} | {r['accuracy']:.3f} | {r['valid_at_1']:.3f} "
            f"| {r['exec_rate']:.3f} | {r['p50_s']:.2f} | {r['p95_s']:.2f} "
            f"| {r['offload_rate']:.2f} | {r['energy_j_per_request']:.1f} | {ratio} "
            f"| {_shares(r['tier_share'])} |"
        )
    machine = summary.get("machine") or {}
    n = summary["rows"][0]["n"] if summary["rows"] else 0
    lines += [
        "",
        f"{n} BFCL items per configuration ({', '.join(summary['categories'])}). "
        f"Machine: {machine.get('cpu')}, {machine.get('nproc')} cores, "
        f"{machine.get('threads')} llama.cpp threads. Energy: {summary.get('energy_source')}.",
    ]
    lines += _router_lines(summary.get("router") or {})
    lines += [
        "",
        "| category | mode | n | accuracy | valid@1 | ExecRate | p50 s | p95 s | offload |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["per_category"]:
        lines.append(
            f"| {r['category']} | {r['mode']} | {r['n']} | {r['accuracy']:.3f} "
            f"| {r['valid_at_1']:.3f} | {r['exec_rate']:.3f} | {r['p50_s']:.2f} "
            f"| {r['p95_s']:.2f} | {r['offload_rate']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def _shares(shares: dict[str, float]) -> str:
    names = {"0": "tier 0", "1": "tier 1", "cloud": "cloud"}
    return ", ".join(f"{names.get(k, 'tier ' + k)} {v:.2f}" for k, v in shares.items())


def _router_lines(router: dict[str, Any]) -> list[str]:
    """The cascade beside a random router at the same share sent out."""
    if not router.get("pooled"):
        return []
    lines = [
        "",
        "| items | cascade τ | sent out | SLM alone | LLM alone | cascade | random router "
        "| gap recovered: cascade | random |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, c in [("all", router["pooled"]), *router["per_category"].items()]:
        if not c:
            continue

        def pgr(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.2f}"

        lines.append(
            f"| {name} ({c['n']}) | {c['threshold']:.2f} | {c['cascade']['offload_rate']:.2f} "
            f"| {c['slm_accuracy']:.3f} | {c['llm_accuracy']:.3f} "
            f"| {c['cascade']['accuracy']:.3f} | {c['random']['accuracy']:.3f} "
            f"| {pgr(c['cascade_gap_recovered'])} | {pgr(c['random_gap_recovered'])} |"
        )
    return lines


def write_outputs(summary: dict[str, Any], out: Path) -> list[Path]:
    """``ablation.md``, ``ablation.json`` and the plots (when matplotlib is there)."""
    md, js = out / "ablation.md", out / "ablation.json"
    md.write_text(markdown(summary), encoding="utf-8")
    public = {**summary, "rows": [_without_latencies(r) for r in summary["rows"]]}
    js.write_text(json.dumps(public, indent=2) + "\n", encoding="utf-8")
    return [md, js, *plots(summary, out)]


def _without_latencies(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "latencies"}


def plots(summary: dict[str, Any], out: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    rows = summary["rows"]
    label = {
        r[
            "mode"
        ]: f"{r['configuration']} ({'with' if r['schema_constraint'] == 'yes' else 'no'} schema)"
        for r in rows
    }
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        if r["cost_per_success"]:  # a log axis: a free row (no energy probe) has no point
            ax.scatter(r["cost_per_success"], r["accuracy"], s=60)
            ax.annotate(label[r["mode"]], (r["cost_per_success"], r["accuracy"]), fontsize=8,
                        xytext=(5, 5), textcoords="offset points")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("cost per successful task (USD, log)")
    ax.set_ylabel("accuracy (BFCL AST)")
    ax.set_title("cost against accuracy")
    fig.tight_layout()
    cost_path = out / "ablation_cost_accuracy.png"
    fig.savefig(cost_path, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        xs = r["latencies"]
        ys = [(k + 1) / len(xs) for k in range(len(xs))]
        ax.step(xs, ys, where="post", label=label[r["mode"]])
    ax.set_xscale("log")
    ax.set_xlabel("latency per request (s, log)")
    ax.set_ylabel("share of requests")
    ax.set_title("latency CDF")
    ax.legend(fontsize=8)
    fig.tight_layout()
    cdf_path = out / "ablation_latency_cdf.png"
    fig.savefig(cdf_path, dpi=110)
    plt.close(fig)
    router = _router_plot(plt, (summary.get("router") or {}).get("pooled"), out)
    return [cost_path, cdf_path, *router]


def _router_plot(plt: Any, compared: dict[str, Any] | None, out: Path) -> list[Path]:
    """Accuracy against the share sent out and against cost per request,
    as the cascade's τ moves (replayed), with the random router's line."""
    if not compared:
        return []
    points = compared["curve"]
    slm = points[0]
    llm = points[-1]
    random_line = [  # the random router from sending nothing out to everything
        {
            "offload_rate": r,
            "accuracy": (1 - r) * compared["slm_accuracy"] + r * compared["llm_accuracy"],
            "cost_per_request": (1 - r) * slm["cost_per_request"]
            + r * (llm["cost_per_request"] - slm["cost_per_request"]),
        }
        for r in (0.0, 1.0)
    ]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key, xlabel in (
        (axes[0], "offload_rate", "share of requests sent to the LLM"),
        (axes[1], "cost_per_request", "cost per request (USD)"),
    ):
        ax.plot([p[key] for p in points], [p["accuracy"] for p in points], drawstyle="steps-post",
                label="cascade, τ from 0 to 1 (replayed)")  # fmt: skip
        ax.plot([p[key] for p in random_line], [p["accuracy"] for p in random_line], "--",
                label="random router (expected)")  # fmt: skip
        at = compared["cascade"]
        ax.scatter([at[key]], [at["accuracy"]], color="black", zorder=3,
                   label=f"cascade at τ = {compared['threshold']:.2f}")  # fmt: skip
        ax.set_xlabel(xlabel)
    axes[0].set_ylabel("accuracy (BFCL AST)")
    axes[0].legend(fontsize=8)
    fig.suptitle("the cascade's router against a random one")
    fig.tight_layout()
    path = out / "ablation_router.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
