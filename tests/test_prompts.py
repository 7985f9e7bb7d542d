"""Prompt building with the models' own chat templates (read from the real GGUF
files through the real engine), plus the tool block, checks and repair turn."""

from __future__ import annotations

import json

import pytest

from edge_agent.decoding.prompts import (
    NO_TOOL_HINT,
    build_prompt,
    repair_message,
    system_text,
    tool_block,
    tool_result_message,
    user_message,
)
from edge_agent.decoding.schema import normalize_tools
from edge_agent.engine.llama import LlamaEngine
from edge_agent.errors import EdgeAgentError, InputError

TOOLS = normalize_tools(
    [
        {
            "name": "set_light",
            "description": "Switch a light.",
            "parameters": {
                "type": "object",
                "properties": {"room": {"type": "string", "enum": ["kitchen", "hall"]}},
                "required": ["room"],
            },
        },
        {"name": "now", "description": "The time, for the café ☕."},
    ]
)
ASK = [user_message("Turn on the kitchen light")]


def tools_lines(prompt: str) -> list[str]:
    inner = prompt.split("<tools>\n", 1)[1].split("\n</tools>", 1)[0]
    return inner.splitlines()


# --- Qwen2.5: a template that knows tools ---------------------------------------------


@pytest.mark.model
def test_qwen_renders_tools_into_its_tools_block(qwen: LlamaEngine) -> None:
    template = qwen.chat_template
    assert template is not None and "tools" in template
    prompt = build_prompt(template, ASK, TOOLS)
    assert prompt.startswith("<|im_start|>system\nYou are Qwen")
    assert prompt.count("<tools>\n") == 1  # one block (the instructions also say <tools>)
    assert [json.loads(line) for line in tools_lines(prompt)] == [t.to_openai() for t in TOOLS]
    assert "<tool_call>\n" in prompt and "</tool_call>" in prompt
    assert "<|im_start|>user\nTurn on the kitchen light<|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


@pytest.mark.model
def test_qwen_puts_our_system_text_before_the_tools(qwen: LlamaEngine) -> None:
    prompt = build_prompt(qwen.chat_template, ASK, TOOLS, system=NO_TOOL_HINT)
    assert prompt.startswith(f"<|im_start|>system\n{NO_TOOL_HINT}\n\n# Tools")
    assert "You are Qwen" not in prompt
    assert prompt.count("<|im_start|>system") == 1


@pytest.mark.model
def test_qwen_without_tools_has_no_tools_block(qwen: LlamaEngine) -> None:
    prompt = build_prompt(qwen.chat_template, ASK, [])
    assert "<tools>" not in prompt
    assert "# Tools" not in prompt


@pytest.mark.model
def test_qwen_renders_tool_results_as_tool_responses(qwen: LlamaEngine) -> None:
    conversation = [
        *ASK,
        {"role": "assistant", "content": '<tool_call>\n{"name": "now"}\n</tool_call>'},
        tool_result_message("now", {"time": "07:00"}),
    ]
    prompt = build_prompt(qwen.chat_template, conversation, TOOLS)
    assert '<tool_response>\n{"name": "now", "result": {"time": "07:00"}}\n</tool_response>' in (
        prompt
    )


# --- SmolLM2: a template without tools support -----------------------------------------


@pytest.mark.model
def test_smol_gets_the_tool_block_in_its_system_message(smol: LlamaEngine) -> None:
    template = smol.chat_template
    assert template is not None and "tools" not in template
    prompt = build_prompt(template, ASK, TOOLS)
    assert prompt.startswith("<|im_start|>system\n# Tools\n")
    assert "SmolLM" not in prompt  # our system message replaces the template's default
    assert prompt.count("<|im_start|>system") == 1
    assert [json.loads(line) for line in tools_lines(prompt)] == [t.to_openai() for t in TOOLS]
    assert "café ☕" in prompt  # not \\u-escaped
    assert "<|im_start|>user\nTurn on the kitchen light<|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


@pytest.mark.model
def test_smol_merges_an_existing_system_message(smol: LlamaEngine) -> None:
    conversation = [{"role": "system", "content": "You run a house."}, *ASK]
    prompt = build_prompt(smol.chat_template, conversation, TOOLS, system="Be brief.")
    assert prompt.startswith("<|im_start|>system\nYou run a house.\n\nBe brief.\n\n# Tools\n")
    assert prompt.count("<|im_start|>system") == 1


@pytest.mark.model
def test_smol_without_tools_keeps_its_default_system(smol: LlamaEngine) -> None:
    prompt = build_prompt(smol.chat_template, ASK, [])
    assert "SmolLM" in prompt
    assert "# Tools" not in prompt


# --- no template, and the template's own checks ------------------------------------------


def test_no_template_falls_back_to_chatml_with_the_tool_block() -> None:
    prompt = build_prompt(None, ASK, TOOLS)
    assert prompt.startswith("<|im_start|>system\n" + tool_block(TOOLS) + "<|im_end|>\n")
    assert prompt.endswith(
        "<|im_start|>user\nTurn on the kitchen light<|im_end|>\n<|im_start|>assistant\n"
    )


def test_the_input_messages_are_not_modified() -> None:
    conversation = [{"role": "system", "content": "House."}, *ASK]
    before = json.dumps(conversation)
    build_prompt(None, conversation, TOOLS, system="Be brief.")
    assert json.dumps(conversation) == before


def test_a_template_that_refuses_raises_input_error() -> None:
    template = (
        "{% if messages[0].role != 'system' %}{{ raise_exception('system first') }}{% endif %}"
    )
    with pytest.raises(InputError, match="chat template refused the conversation: system first"):
        build_prompt(template, ASK, [])


def test_templates_run_sandboxed() -> None:
    from edge_agent.errors import ModelError

    with pytest.raises(ModelError, match="unsafe"):
        build_prompt("{{ messages.__class__.__mro__ }}", ASK, [])


@pytest.mark.parametrize(
    "template", ["{{ messages.__class__.__mro__ }}", "{% for m in messages %}", "{{ 1 / 0 }}"]
)
def test_a_broken_or_hostile_template_is_an_edge_agent_error(template: str) -> None:
    with pytest.raises(EdgeAgentError):
        build_prompt(template, ASK, [])


@pytest.mark.parametrize(
    ("messages", "problem"),
    [
        ([], "the conversation is empty"),
        ([user_message("")], "the prompt is empty"),
        ([user_message("   \n")], "the prompt is empty"),
        ([{"role": "user"}], "the prompt is empty"),
        ([{"role": "tool", "content": ""}], "the prompt is empty"),
        ([{"role": "wizard", "content": "hi"}], "unknown message role 'wizard'"),
        ([{"content": "hi"}], "unknown message role None"),
        ([{"role": "narrator", "content": "x"}, user_message("hi")], "'narrator'"),
    ],
)
def test_bad_conversations_raise_input_error(messages: list[dict[str, str]], problem: str) -> None:
    with pytest.raises(InputError) as info:
        build_prompt(None, messages, TOOLS)
    assert problem in info.value.message


def test_an_empty_prompt_has_a_hint() -> None:
    with pytest.raises(InputError) as info:
        build_prompt(None, [user_message(" ")], [])
    assert info.value.hint == "pass a non-empty prompt"


# --- message helpers ----------------------------------------------------------------------


def test_repair_message_carries_the_problem_and_asks_for_a_corrected_call() -> None:
    problem = "set_light: argument 'room': 'attic' is not one of ['kitchen', 'hall']"
    message = repair_message(problem)
    assert message["role"] in ("user", "tool")
    assert problem in message["content"]
    assert "corrected" in message["content"]
    rejected_call = {"role": "assistant", "content": '{"name": "set_light"}'}
    prompt = build_prompt(None, [*ASK, rejected_call, message], TOOLS)
    assert prompt.endswith(f"{message['content']}<|im_end|>\n<|im_start|>assistant\n")


def test_tool_result_message_is_json() -> None:
    message = tool_result_message("now", {"at": "07:00", "where": "café"})
    assert message["role"] == "tool"
    assert json.loads(message["content"]) == {
        "name": "now",
        "result": {"at": "07:00", "where": "café"},
    }
    odd = json.loads(tool_result_message("now", object())["content"])
    assert odd["name"] == "now" and isinstance(odd["result"], str)


def test_tool_block_lists_one_json_line_per_tool() -> None:
    block = tool_block(TOOLS)
    assert block.startswith("# Tools\n")
    assert '{"name": <function-name>, "arguments": <args-json-object>}' in block
    assert [json.loads(line) for line in tools_lines(block)] == [t.to_openai() for t in TOOLS]


def test_the_decline_hint_joins_the_users_system_text() -> None:
    assert system_text(None, may_decline=False) is None
    assert system_text("Be brief.", may_decline=False) == "Be brief."
    assert system_text(None, may_decline=True) == NO_TOOL_HINT
    assert system_text("Be brief.", may_decline=True) == f"Be brief.\n\n{NO_TOOL_HINT}"
