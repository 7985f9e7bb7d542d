"""Failed and repaired attempts from the journal, as JSONL for LoRA fine-tuning.

One line per request whose *first* attempt was rejected by the verifier.
When a later attempt (a local repair, or an offload) passed, its output is the
training target; the rejected first output is kept for preference tuning
(DPO/ORPO: ``messages`` minus its last turn is the prompt, that turn is
"chosen", ``rejected`` is "rejected")::

    {
      "id": "3f2a…",                        # journal request id
      "received_at": "2025-06-01T12:00:00+00:00",
      "source": "api",
      "model": "qwen2.5-coder-0.5b",        # the model that was wrong
      "tools": [{"type": "function", "function": {"name", "description", "parameters"}}],
      "messages": [
        {"role": "system", "content": "…"},     # only if the request had one
        {"role": "user", "content": "Order 3 pizzas"},
        {"role": "assistant", "content": "<tool_call>\\n{…}\\n</tool_call>"}  # corrected only
      ],
      "rejected": "<tool_call>\\n{\\"name\\": \\"order_pizza\\", …}\\n</tool_call>",
      "problem": "order_pizza: argument 'count': Value error, must be even",
      "stage": "model",                     # verifier stage: parse/tool/schema/model/rules/no_call
      "corrected": true,
      "corrected_by": {"kind": "repair", "route": "local", "model": "qwen2.5-coder-0.5b"}
    }

Details:

* ``messages`` are the request's conversation as the journal stored it (its
  payload's ``messages``; a payload ``options.system_prompt`` is merged into
  the system message, as the agent does). The repair turns are *not*
  included: the target answers the original request in one go.
* ``tools`` are the tools the request offered, in OpenAI form (BFCL-style
  definitions are normalised). A tool stored only by name is exported as
  ``{"type": "function", "function": {"name": …}}``.
* The assistant target is the corrected output in the tool-call envelope the
  SLM emits (``edge_agent.decoding.calls``): calls found in it are re-rendered
  canonically, so an offloaded answer (fenced JSON, OpenAI ``tool_calls``)
  trains the same format as a local one. A corrected plain-text answer is
  kept as text. ``rejected`` is the first output verbatim.
* Without a correction, ``messages`` ends with the user's turn,
  ``corrected`` is false and ``corrected_by`` null: useful for review or for
  labelling by hand; ``only_corrected`` leaves these out.

The export contains users' prompts: the output file is created 0600.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TextIO

from edge_agent.decoding.calls import parse_output, render_call
from edge_agent.decoding.schema import normalize_tool
from edge_agent.errors import InputError, SchemaError
from edge_agent.records.journal import AttemptRow, Journal, RequestRow


@dataclass(frozen=True)
class Exported:
    lines: int
    corrected: int


def export_traces(
    journal: Journal, out: TextIO, *, since: float | None = None, only_corrected: bool = False
) -> Exported:
    """Write one JSON line per request with a rejected first attempt."""
    lines = corrected = 0
    for request, attempts in journal.failed_first(since):
        line = trace(request, attempts)
        if line is None or (only_corrected and not line["corrected"]):
            continue
        out.write(json.dumps(line, ensure_ascii=False) + "\n")
        lines += 1
        corrected += bool(line["corrected"])
    return Exported(lines, corrected)


def trace(request: RequestRow, attempts: Sequence[AttemptRow]) -> dict[str, Any] | None:
    """The training line for one request, or None when its first attempt passed."""
    if not attempts or attempts[0].n != 1 or attempts[0].record.valid:
        return None
    first = attempts[0].record
    good = next((a.record for a in attempts[1:] if a.record.valid), None)
    messages = training_messages(request.payload)
    if good is not None:
        messages.append({"role": "assistant", "content": target_text(good.raw_output)})
    return {
        "id": request.id,
        "received_at": datetime.fromtimestamp(request.received_at, timezone.utc).isoformat(),
        "source": request.source,
        "model": first.model,
        "tools": [_openai_tool(t) for t in request.payload.get("tools") or []],
        "messages": messages,
        "rejected": first.raw_output,
        "problem": first.problem,
        "stage": first.stage,
        "corrected": good is not None,
        "corrected_by": (
            {"kind": good.kind, "route": good.route, "model": good.model} if good else None
        ),
    }


def training_messages(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's conversation in chat format, as the request carried it."""
    messages = [dict(m) for m in payload.get("messages") or [] if isinstance(m, dict)]
    if not messages and isinstance(payload.get("prompt"), str):
        messages = [{"role": "user", "content": payload["prompt"]}]
    system = (payload.get("options") or {}).get("system_prompt")
    if isinstance(system, str) and system.strip():
        if messages and messages[0]["role"] == "system":
            messages[0]["content"] = f"{messages[0]['content']}\n\n{system}".strip()
        else:
            messages.insert(0, {"role": "system", "content": system})
    return messages


def target_text(raw_output: str) -> str:
    """A corrected output in the SLM's own envelope (calls re-rendered)."""
    parsed = parse_output(raw_output)
    if parsed.calls and not parsed.errors:
        return "\n".join(render_call(c) for c in parsed.calls)
    return raw_output.strip()


def parse_since(text: str) -> float:
    """An ISO 8601 date or date-time as epoch seconds. A time without an
    offset is local time; ``Z`` means UTC."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(
            f"--since {text!r} is not an ISO 8601 date",
            hint="e.g. 2025-06-01 or 2025-06-01T12:00:00Z",
        ) from None
    return moment.timestamp()


def _openai_tool(entry: object) -> dict[str, Any]:
    if isinstance(entry, str):
        return {"type": "function", "function": {"name": entry}}
    try:
        return normalize_tool(entry).to_openai()
    except SchemaError:
        return dict(entry) if isinstance(entry, dict) else {"type": "function", "function": {}}


__all__ = ["Exported", "export_traces", "parse_since", "target_text", "trace"]
