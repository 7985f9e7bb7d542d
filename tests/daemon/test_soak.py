"""The crash soak, short: 5 kill -9 cycles of ``benchmarks/soak.py`` on the
real daemon, broker and simulated device (the README quotes the 100-cycle
run). Nothing a client was told was accepted may be lost, nothing may run
twice, nothing may stay pending, and no decision-only request may fail
because of the kills."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.model, pytest.mark.slow]


def soak_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("soak", REPO / "benchmarks" / "soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_five_kill_cycles_lose_nothing_and_repeat_nothing(
    tmp_path: Path, models_ready: None
) -> None:
    report = soak_module().run_soak(cycles=5, seed=7, folder=tmp_path)
    summary = json.dumps(report.__dict__, indent=1, default=str)
    assert report.kills == 5
    assert report.api_accepted == report.api_requests > 0, summary
    assert report.api_answered == report.api_requests, summary
    assert report.accepted_lost == 0 and report.pending == 0, summary
    assert report.duplicate_actuations == 0 and report.duplicate_cloud_calls == 0, summary
    assert report.decision_only_failed_by_kills == 0, summary
    assert report.automation_jobs > 0, summary
    assert all(reason for reason in report.failed), summary  # every failure says why
    assert report.ok, summary
