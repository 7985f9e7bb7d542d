"""Job options as a typed, frozen record: read once from the journaled
payload, written back in the same spelling, and tolerant of payloads an
older daemon journaled (a restart resumes those)."""

from __future__ import annotations

import dataclasses

import pytest

from edge_agent.records.jobs import Job, JobOptions


def test_options_round_trip_through_the_journal_spelling() -> None:
    options = JobOptions(
        tool_choice="required",
        execute=True,
        max_tokens=96,
        tool_source="registry",
        tool_names=("set_light", "lock_door"),
        parallel=False,
        model="qwen2.5-coder-0.5b",
    )
    assert JobOptions.from_json(options.to_json()) == options


def test_a_payload_without_options_means_propose_only() -> None:
    job = Job("r1", {"messages": [{"role": "user", "content": "hi"}]}, "api", 0, None)
    assert job.options == JobOptions()
    assert job.options.execute is False and job.options.tool_names == ()


def test_an_older_payload_reads_with_its_keys() -> None:
    legacy = {
        "tool_source": "registry",
        "tool_names": ["set_light"],
        "execute": True,
        "tool_choice": "required",
        "priority": "automation",
        "automation": {"rule": "too-warm"},
    }
    options = JobOptions.from_json(legacy)
    assert options.tool_names == ("set_light",) and options.execute
    assert options.automation == {"rule": "too-warm"}
    assert options.to_json()["automation"] == {"rule": "too-warm"}


def test_options_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        JobOptions().execute = True  # type: ignore[misc]
