"""The LoRA traces export: hand-built agent results (the real dataclasses)
recorded in a real journal, exported as JSONL; then one run of the real
SmolLM2 model breaking a tool's pydantic rule, journaled and exported."""

from __future__ import annotations

import argparse
import json
import stat
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import AfterValidator

from edge_agent import cli
from edge_agent.agent import Agent, Attempt, Result
from edge_agent.cli import traces as traces_cli
from edge_agent.decoding.calls import parse_output
from edge_agent.decoding.prompts import user_message
from edge_agent.decoding.schema import normalize_tool
from edge_agent.engine.base import Generation, Timings, TokenScore
from edge_agent.errors import InputError
from edge_agent.records.journal import AttemptRecord, Journal, attempt_records, request_payload
from edge_agent.toolbox.registry import Registry, ToolPolicy, tool_from_function
from edge_agent.toolbox.verify import Verdict, verify_output


def wrap(body: str) -> str:
    return f"<tool_call>\n{body}\n</tool_call>"


LIGHT = normalize_tool(
    {
        "name": "set_light",
        "description": "Switch a light.",
        "parameters": {
            "type": "object",
            "properties": {
                "room": {"type": "string", "enum": ["kitchen", "hallway"]},
                "brightness": {"type": "integer"},
            },
            "required": ["room"],
        },
    }
)
BAD = wrap('{"name": "set_light", "arguments": {"room": "kitchen", "brightness": 900}}')
GOOD = wrap('{"name": "set_light", "arguments": {"room": "kitchen", "brightness": 90}}')
PROBLEM = "set_light: argument 'brightness': 900 is greater than the maximum of 100"


class Clock:
    def __init__(self, now: float = 1_748_736_000.0) -> None:  # 2025-06-01T00:00:00Z
        self.now = now

    def __call__(self) -> float:
        return self.now


def attempt(kind: str, text: str, ok: bool, problem: str = PROBLEM) -> Attempt:
    tokens = (TokenScore(1, "x", -0.3, -0.1, 0.2), TokenScore(2, "y", -1.5, -0.2, 0.9))
    generation = Generation(text, tokens, 120, "stop", Timings(0.0, 0.05, 0.2))
    parsed = parse_output(text)
    call = parsed.calls[0] if parsed.calls else None
    verdict = (
        Verdict.passed(call) if ok and call else Verdict(ok, "rules", "" if ok else problem, call)
    )
    return Attempt(kind, generation, parsed, (verdict,), True)  # type: ignore[arg-type]


def journaled(
    journal: Journal, result: Result, *, messages=None, tools=(LIGHT,), options=None
) -> str:
    messages = messages or [user_message("Kitchen light to 90 percent")]
    rid = journal.accept(request_payload(messages, tools, options), source="api").id
    journal.start(rid)
    journal.record_attempts(rid, attempt_records(result, model="qwen2.5-coder-0.5b"))
    if result.final.valid:
        journal.finish(rid, result.to_json())
    else:
        journal.fail(rid, f"no valid call: {result.final.problem}")
    return rid


def export(journal: Journal, **options: Any) -> list[dict[str, Any]]:
    from io import StringIO

    from edge_agent.runtime.traces import export_traces

    out = StringIO()
    summary = export_traces(journal, out, **options)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert summary.lines == len(lines)
    assert summary.corrected == sum(line["corrected"] for line in lines)
    return lines


@pytest.fixture
def journal(tmp_path: Path):
    with Journal(tmp_path / "journal.db", clock=Clock()) as j:
        yield j


def test_a_repaired_request_becomes_a_training_pair(journal: Journal) -> None:
    result = Result((attempt("initial", BAD, False), attempt("repair", GOOD, True)), 0.5)
    rid = journaled(journal, result, options={"system_prompt": "You control a home."})
    [line] = export(journal)
    assert line["id"] == rid and line["source"] == "api"
    assert line["received_at"] == "2025-06-01T00:00:00+00:00"
    assert line["model"] == "qwen2.5-coder-0.5b"
    assert line["messages"] == [
        {"role": "system", "content": "You control a home."},
        {"role": "user", "content": "Kitchen light to 90 percent"},
        {"role": "assistant", "content": GOOD},
    ]
    assert line["tools"] == [LIGHT.to_openai()]
    assert line["rejected"] == BAD
    assert (line["problem"], line["stage"]) == (PROBLEM, "rules")
    assert line["corrected"] is True
    assert line["corrected_by"] == {
        "kind": "repair",
        "route": "local",
        "model": "qwen2.5-coder-0.5b",
    }


def test_an_uncorrected_failure_has_no_target(journal: Journal) -> None:
    result = Result((attempt("initial", BAD, False), attempt("repair", BAD, False)), 0.5)
    journaled(journal, result)
    [line] = export(journal)
    assert line["messages"] == [{"role": "user", "content": "Kitchen light to 90 percent"}]
    assert line["corrected"] is False and line["corrected_by"] is None
    assert line["rejected"] == BAD
    assert export(journal, only_corrected=True) == []


def test_a_valid_first_attempt_is_not_exported(journal: Journal) -> None:
    journaled(journal, Result((attempt("initial", GOOD, True),), 0.2))
    journal.accept(request_payload([user_message("no attempts yet")], [LIGHT]), source="cli")
    assert export(journal) == []


def test_an_offloaded_answer_is_rendered_in_the_slm_envelope(journal: Journal) -> None:
    result = Result((attempt("initial", "{not json", False, "not valid JSON"),), 0.3)
    rid = journaled(journal, result)
    fenced = '```json\n{"name": "set_light", "arguments": {"room": "hallway"}}\n```'
    journal.record_attempt(
        rid, AttemptRecord("offload", "offload:https", "qwen2.5-coder-1.5b", fenced, True)
    )
    [line] = export(journal)
    target = line["messages"][-1]
    assert target == {
        "role": "assistant",
        "content": wrap('{"name": "set_light", "arguments": {"room": "hallway"}}'),
    }
    assert line["rejected"] == "{not json"
    assert line["corrected_by"]["route"] == "offload:https"


def test_a_corrected_plain_answer_stays_text(journal: Journal) -> None:
    text_ok = Attempt(
        "repair",
        Generation("No light matches that.", (), 100, "stop", Timings(0.0, 0.1, 0.1)),
        parse_output("No light matches that."),
        (Verdict(True, "ok"),),
        True,
    )
    journaled(journal, Result((attempt("initial", BAD, False), text_ok), 0.5))
    [line] = export(journal)
    assert line["messages"][-1] == {"role": "assistant", "content": "No light matches that."}


def test_conversation_and_tool_dialects(journal: Journal) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Is the kitchen light on?"},
        {"role": "assistant", "content": "It is off."},
        {"role": "user", "content": "Turn it on"},
    ]
    bfcl = {
        "name": "calc.area",
        "description": "Area.",
        "parameters": {"type": "dict", "properties": {"r": {"type": "float"}}},
    }
    result = Result((attempt("initial", BAD, False), attempt("repair", GOOD, True)), 0.5)
    rid = journal.accept(
        {
            "messages": messages,
            "tools": [LIGHT.to_openai(), bfcl, "get_time"],
            "options": {"system_prompt": "Use tools."},
        },
        source="api",
    ).id
    journal.start(rid)
    journal.record_attempts(rid, attempt_records(result, model="m"))
    [line] = export(journal)
    assert line["messages"][0] == {"role": "system", "content": "Be brief.\n\nUse tools."}
    assert line["messages"][1:4] == messages[1:]
    assert line["tools"][1]["function"]["parameters"]["type"] == "object"
    assert line["tools"][1]["function"]["parameters"]["properties"]["r"] == {
        "type": "number",
        "format": "float",  # keeps BFCL's "needs a decimal point" for the trained model
    }
    assert line["tools"][2] == {"type": "function", "function": {"name": "get_time"}}


def test_since_selects_by_intake_time(journal: Journal) -> None:
    failing = Result((attempt("initial", BAD, False), attempt("repair", GOOD, True)), 0.5)
    early = journaled(journal, failing)
    journal._clock.now += 86_400  # type: ignore[attr-defined]
    late = journaled(journal, failing)
    from edge_agent.runtime.traces import parse_since

    assert [line["id"] for line in export(journal)] == [early, late]
    assert early not in [line["id"] for line in export(journal, since=parse_since("2025-06-02"))]
    assert [line["id"] for line in export(journal, since=parse_since("2025-06-02T00:00:00Z"))] == [
        late
    ]


def test_export_pages_through_many_requests(journal: Journal) -> None:
    failing = Result((attempt("initial", BAD, False),), 0.1)
    ids = [journaled(journal, failing) for _ in range(450)]
    assert [line["id"] for line in export(journal)] == ids


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-06-01T00:00:00Z", 1_748_736_000.0),
        ("2025-06-01T02:00:00+02:00", 1_748_736_000.0),
        ("2025-06-01T00:00:00.500z", 1_748_736_000.5),
    ],
)
def test_parse_since(text: str, expected: float) -> None:
    from edge_agent.runtime.traces import parse_since

    assert parse_since(text) == expected


def test_parse_since_refuses_nonsense() -> None:
    from edge_agent.runtime.traces import parse_since

    with pytest.raises(InputError, match="ISO 8601"):
        parse_since("last tuesday")


# ---------------------------------------------------------------- the command


def run_main(monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    """The real `edge-agent` entry point, with the traces command wired in
    (cli/__init__.py lists it in _COMMAND_MODULES once the lead adds it)."""
    if "edge_agent.cli.traces" not in cli._COMMAND_MODULES:
        monkeypatch.setattr(
            cli, "_COMMAND_MODULES", (*cli._COMMAND_MODULES, "edge_agent.cli.traces")
        )
    return cli.main(list(argv))


def test_cli_exports_to_a_private_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "journal.db"
    with Journal(path) as j:
        journaled(j, Result((attempt("initial", BAD, False), attempt("repair", GOOD, True)), 0.5))
        journaled(j, Result((attempt("initial", BAD, False),), 0.5))
    out = tmp_path / "traces.jsonl"
    assert run_main(monkeypatch, "traces", "export", "--journal", str(path), "--out", str(out)) == 0
    assert "exported 2 trace(s), 1 corrected" in capsys.readouterr().err
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert [json.loads(x)["corrected"] for x in out.read_text().splitlines()] == [True, False]
    argv = ("traces", "export", "--journal", str(path), "--only-corrected", "--since", "2000-01-01")
    assert run_main(monkeypatch, *argv) == 0
    captured = capsys.readouterr()
    [line] = captured.out.splitlines()
    assert json.loads(line)["corrected"] is True
    assert list(tmp_path.glob(".traces.jsonl.*")) == []


@pytest.mark.parametrize(
    ("setup", "argv_tail", "needle"),
    [
        ("absent", (), "no journal at"),
        ("text", (), "not a usable journal"),
        ("ok", ("--since", "yesterday"), "ISO 8601"),
    ],
)
def test_cli_errors_are_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    setup: str,
    argv_tail: tuple[str, ...],
    needle: str,
) -> None:
    path = tmp_path / "journal.db"
    if setup == "text":
        path.write_text("not sqlite\n" * 50)
    elif setup == "ok":
        Journal(path).close()
    code = run_main(monkeypatch, "traces", "export", "--journal", str(path), *argv_tail)
    err = capsys.readouterr().err
    assert code == 1
    [line] = err.strip().splitlines()
    assert line.startswith("edge-agent: error: ") and needle in line
    assert setup == "absent" or path.exists()
    assert setup != "absent" or not path.exists()  # export never creates a journal


def test_register_adds_traces_export() -> None:
    parser = argparse.ArgumentParser()
    traces_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["traces", "export", "--out", "x.jsonl", "--only-corrected"])
    assert (args.out, args.only_corrected, args.journal, args.since) == (
        "x.jsonl",
        True,
        None,
        None,
    )
    assert args.handler is traces_cli.run_export


# ---------------------------------------------------------------- end to end


def _even(count: int) -> int:
    if count % 2:
        raise ValueError("pizzas come in pairs: the count must be even")
    return count


def order_pizza(count: Annotated[int, AfterValidator(_even)]) -> dict[str, int]:
    """Order pizzas for delivery."""
    return {"ordered": count}


@pytest.mark.model
def test_smollm2_breaking_a_rule_is_journaled_and_exported(smol, tmp_path: Path) -> None:
    registry = Registry([tool_from_function(order_pizza, ToolPolicy())])
    agent = Agent(smol, registry)
    messages = [user_message("Order 3 pizzas")]
    result = agent.ask(messages, tool_choice="required")
    first = result.attempts[0]
    assert not first.valid, f"the tiny model obeyed the rule this time: {first.generation.text!r}"

    with Journal(tmp_path / "journal.db") as journal:
        rid = journal.accept(request_payload(messages, agent.specs), source="cli").id
        journal.start(rid)
        journal.record_attempts(rid, attempt_records(result, model=smol.model_name))
        if result.outcome == "invalid":
            journal.fail(rid, f"no valid call: {result.final.problem}")
        else:
            journal.finish(rid, result.to_json(), latency_s=result.latency_s)
        stats = journal.stats()
        [line] = export(journal)

    assert stats.valid_at_1 == 0.0 and stats.attempts == len(result.attempts)
    assert stats.prompt_tokens == result.prompt_tokens > 0
    assert line["id"] == rid and line["model"] == smol.model_name
    assert line["rejected"] == first.generation.text
    assert line["stage"] == "model" and "must be even" in line["problem"]
    [tool] = line["tools"]
    assert tool["function"]["name"] == "order_pizza"
    assert tool["function"]["parameters"]["properties"]["count"]["type"] == "integer"
    assert line["messages"][0] == {"role": "user", "content": "Order 3 pizzas"}
    corrected = next((a for a in result.attempts[1:] if a.valid), None)
    assert line["corrected"] is (corrected is not None)
    if corrected is not None:  # a later attempt fixed it: that is the target
        target = line["messages"][-1]
        assert target["role"] == "assistant"
        assert verify_output(parse_output(target["content"]), registry)[0].ok
    else:
        assert len(line["messages"]) == 1
