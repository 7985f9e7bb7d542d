"""The daemon with the default ladder (Qwen 0.5B, then Qwen 1.5B): both models
stay loaded, an unsure request climbs, and an executed action answers in one
model step with a sentence."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from tests.daemon.conftest import QWEN, start_daemon

pytestmark = [pytest.mark.model, pytest.mark.slow]


def test_an_unsure_request_climbs_and_is_answered_in_a_sentence(tmp_path: Path) -> None:
    config = {
        "model": {"name": QWEN, "n_threads": 2, "max_tokens": 96, "prefix_cache": False},
        # τ0 = 1.0: tier 0 is never sure enough, so every request climbs.
        "ladder": {"enabled": True, "climb_unsure": True, "threshold": 1.0},
        "server": {"request_timeout_s": 1800, "drain_timeout_s": 600},
    }
    daemon = start_daemon(tmp_path, config)
    try:
        assert "ladder tier qwen2.5-coder-1.5b: on" in daemon.log()
        body = {
            "model": QWEN,
            "messages": [{"role": "user", "content": "Turn off the bedroom light"}],
            "x_edge_agent_tools": ["set_light", "read_sensor"],
            "x_edge_agent_execute": True,
        }
        with daemon.client() as client:
            response = client.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        out = response.json()
        ext = out["x_edge_agent"]
        assert ext["tier"] == 1 and ext["model_steps"] == 1
        [step] = ext["steps"]
        assert step["name"] == "set_light" and step["status"] == "done"
        assert step["arguments"]["room"] == "bedroom" and step["arguments"]["on"] is False
        assert out["choices"][0]["message"]["content"] == "Bedroom light off."
        with closing(sqlite3.connect(daemon.journal, timeout=10)) as db:
            models = [row[0] for row in db.execute("SELECT model FROM attempts ORDER BY n")]
        assert models[0] == QWEN and models[-1] == "qwen2.5-coder-1.5b"
    finally:
        assert daemon.stop() == 0


def test_a_sure_answer_gets_a_shadow_check_journaled_as_a_label(tmp_path: Path) -> None:
    """τ0 = 0 keeps every answer on tier 0; shadow_rate = 1 has tier 1
    answer each of them as well, only to compare. The answer stays tier 0's,
    the journal holds tier 1's shadow attempt, and `router calibrate
    --from-journal` reads the pair as a training example."""
    from edge_agent.cli.router import _examples

    config = {
        "model": {"name": QWEN, "n_threads": 2, "max_tokens": 96, "prefix_cache": False},
        "ladder": {"enabled": True, "climb_unsure": True, "threshold": 0.0, "shadow_rate": 1.0},
        "server": {"request_timeout_s": 1800, "drain_timeout_s": 600},
    }
    daemon = start_daemon(tmp_path, config)
    try:
        body = {
            "model": QWEN,
            "messages": [{"role": "user", "content": "Turn on the kitchen light"}],
            "x_edge_agent_tools": ["set_light", "read_sensor"],
        }
        with daemon.client() as client:
            response = client.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["x_edge_agent"]["tier"] == 0
        with closing(sqlite3.connect(daemon.journal, timeout=10)) as db:
            rows = list(db.execute("SELECT kind, model FROM attempts ORDER BY n"))
        assert rows[0] == ("shadow", "qwen2.5-coder-1.5b")
        assert rows[-1] == ("initial", QWEN)
    finally:
        assert daemon.stop() == 0
    features, labels = _examples([], daemon.journal)
    assert len(features) == len(labels) == 1
    assert labels == [1]  # both models turn the kitchen light on
