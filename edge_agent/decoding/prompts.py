"""Prompt building, in one place: chat template, tool block, repair message.

We render the model's *own* chat template (from the GGUF) so the model sees
the format it was trained on. Qwen2.5's template already knows ``tools`` and
asks for ``<tool_call>`` blocks. For templates that do not mention tools we
add an equivalent tool block to the system message ourselves, so every
family is asked for the same envelope (see ``edge_agent.decoding.calls``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from edge_agent.decoding.schema import ToolSpec
from edge_agent.errors import InputError, ModelError

Message = dict[str, Any]

# ChatML, the fallback when a GGUF carries no template at all.
_CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_TOOL_BLOCK = """# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{tools}
</tools>

For each function call, return a json object with function name and arguments \
within <tool_call></tool_call> XML tags:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>"""

NO_TOOL_HINT = "If none of the functions fits the request, answer briefly in plain text instead."


def system_text(extra: str | None, *, may_decline: bool) -> str | None:
    """The system instructions that precede the tool block.

    Qwen's tool block says only "you may call one or more functions", and a
    0.5B model reads that as "always call one". Saying it may answer in text
    instead, when it is free to (``tool_choice`` auto), lifted BFCL
    irrelevance from 0.58 to 0.78 on the tuning items 100-149 and moved
    simple_python (+1) and multiple (-1) by one item each.
    """
    parts = [p for p in (extra, NO_TOOL_HINT if may_decline else None) if p]
    return "\n\n".join(parts) or None


def build_prompt(
    template: str | None,
    messages: Sequence[Message],
    tools: Sequence[ToolSpec],
    *,
    system: str | None = None,
) -> str:
    """Render a conversation plus its tools into the text the model reads."""
    _check_messages(messages)
    msgs = [dict(m) for m in messages]
    if system is not None:
        msgs = _with_system(msgs, system)
    source = template or _CHATML
    tool_defs = [t.to_openai() for t in tools]
    if tools and "tools" not in source:
        msgs = _with_system(msgs, tool_block(tools))
        tool_defs = []
    return _render(source, msgs, tool_defs)


def tool_block(tools: Sequence[ToolSpec]) -> str:
    lines = "\n".join(json.dumps(t.to_openai(), ensure_ascii=False) for t in tools)
    return _TOOL_BLOCK.format(tools=lines)


def user_message(text: str) -> Message:
    return {"role": "user", "content": text}


def repair_message(problem: str) -> Message:
    """The verifier's complaint, phrased so a small model can act on it.

    It arrives as a tool response: instruct models are trained to read those
    and retry, and measured on the home tools the 0.5B model corrects an
    out-of-range argument far more often than after a plain user message.
    """
    content = {"error": f"call rejected: {problem}", "fix": "call again with corrected arguments"}
    return {"role": "tool", "content": json.dumps(content, ensure_ascii=False)}


def tool_result_message(name: str, result: Any) -> Message:
    """A tool's result, fed back for multi-step requests (Qwen's ``tool`` role)."""
    content = json.dumps({"name": name, "result": result}, ensure_ascii=False, default=str)
    return {"role": "tool", "content": content}


def _check_messages(messages: Sequence[Message]) -> None:
    if not messages:
        raise InputError("the conversation is empty", hint="pass a prompt")
    last = messages[-1]
    if last.get("role") in ("user", "tool") and not str(last.get("content") or "").strip():
        raise InputError("the prompt is empty", hint="pass a non-empty prompt")
    for m in messages:
        if m.get("role") not in ("system", "user", "assistant", "tool"):
            raise InputError(f"unknown message role {m.get('role')!r}")


def _with_system(msgs: list[Message], text: str) -> list[Message]:
    if msgs and msgs[0].get("role") == "system":
        first = {**msgs[0], "content": f"{msgs[0].get('content', '')}\n\n{text}".strip()}
        return [first, *msgs[1:]]
    return [{"role": "system", "content": text}, *msgs]


def _render(source: str, msgs: list[Message], tools: list[dict[str, Any]]) -> str:
    """Render; a broken or hostile template (it comes from the GGUF file) is
    an edge-agent error, never a jinja2 traceback."""
    from jinja2 import TemplateError

    kwargs: dict[str, Any] = {"messages": msgs, "add_generation_prompt": True}
    if tools:
        kwargs["tools"] = tools
    try:
        return str(_compile(source).render(bos_token="", eos_token="", **kwargs))
    except InputError:
        raise
    except (TemplateError, ArithmeticError, TypeError, ValueError, LookupError) as exc:
        raise ModelError(f"the model's chat template failed: {exc}") from exc


@lru_cache(maxsize=8)
def _compile(source: str) -> Any:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise InputError(f"chat template refused the conversation: {message}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(source)
