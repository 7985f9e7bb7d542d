"""The tool-call envelope and its lenient parser.

Whatever a model writes, ``parse_output`` returns data: calls, a plain-text
answer, or errors naming the fragments that looked like calls but were not.
It never raises on model output.
"""

from __future__ import annotations

import json

import pytest

from edge_agent.decoding.calls import (
    CALL_CLOSE,
    CALL_OPEN,
    ParsedOutput,
    ToolCall,
    closes_a_repeat,
    parse_output,
    render_call,
)

LIGHT = ToolCall("set_light", {"room": "kitchen", "on": True})
NOTE = ToolCall("add_note", {"text": "buy milk", "tags": ["home"]})


def bare(call: ToolCall) -> str:
    return json.dumps(call.to_dict())


def tagged(call: ToolCall) -> str:
    return f"<tool_call>\n{bare(call)}\n</tool_call>"


def test_a_tagged_block() -> None:
    out = parse_output(tagged(LIGHT))
    assert out == ParsedOutput(calls=(LIGHT,))
    assert out.is_call
    assert not out.errors


def test_tags_tolerate_missing_newlines_and_surrounding_text() -> None:
    text = f"Sure! <tool_call>{bare(LIGHT)}</tool_call> Done."
    assert parse_output(text).calls == (LIGHT,)


def test_an_unclosed_tag_still_yields_its_call() -> None:
    assert parse_output(f"<tool_call>\n{bare(LIGHT)}\n").calls == (LIGHT,)


def test_several_blocks_are_parallel_calls_in_order() -> None:
    text = f"{tagged(LIGHT)}\n{tagged(NOTE)}"
    assert parse_output(text).calls == (LIGHT, NOTE)


def test_a_bare_json_object() -> None:
    assert parse_output(f"  {bare(LIGHT)}\n").calls == (LIGHT,)


def test_bare_objects_separated_by_newlines() -> None:
    assert parse_output(f"{bare(LIGHT)}\n{bare(NOTE)}").calls == (LIGHT, NOTE)
    assert parse_output(f"{bare(LIGHT)}{bare(NOTE)}").calls == (LIGHT, NOTE)


def test_a_json_list_of_calls() -> None:
    text = json.dumps([LIGHT.to_dict(), NOTE.to_dict()])
    assert parse_output(text).calls == (LIGHT, NOTE)
    assert parse_output(f"<tool_call>\n{text}\n</tool_call>").calls == (LIGHT, NOTE)


@pytest.mark.parametrize("fence", ["```json\n{}\n```", "```\n{}\n```", "```tool_call\n{}```"])
def test_markdown_fences(fence: str) -> None:
    text = "Here you go:\n" + fence.replace("{}", bare(LIGHT)) + "\nHope that helps."
    assert parse_output(text).calls == (LIGHT,)


def test_several_fences() -> None:
    text = f"```json\n{bare(LIGHT)}\n```\nand\n```json\n{bare(NOTE)}\n```"
    assert parse_output(text).calls == (LIGHT, NOTE)


def test_a_fenced_broken_call_is_reported() -> None:
    out = parse_output('```json\n{"name": "set_light", "arguments": {\n```')
    assert not out.calls
    assert len(out.errors) == 1


def test_openai_function_shape_with_string_arguments() -> None:
    item = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "set_light", "arguments": json.dumps(LIGHT.arguments)},
    }
    assert parse_output(json.dumps(item)).calls == (LIGHT,)
    note = {
        "type": "function",
        "function": {"name": "add_note", "arguments": json.dumps(NOTE.arguments)},
    }
    assert parse_output(json.dumps([item, note])).calls == (LIGHT, NOTE)


def test_parameters_is_accepted_for_arguments_and_missing_arguments_are_empty() -> None:
    text = json.dumps({"name": "set_light", "parameters": LIGHT.arguments})
    assert parse_output(text).calls == (LIGHT,)
    assert parse_output('{"name": "now"}').calls == (ToolCall("now", {}),)


def test_arguments_as_an_invalid_json_string() -> None:
    text = json.dumps({"name": "set_light", "arguments": "{room: kitchen"})
    out = parse_output(text)
    assert out.calls == ()
    assert out.errors == ("arguments of 'set_light' are not valid JSON",)


@pytest.mark.parametrize("arguments", [[1, 2], "[1, 2]", '"on"', 3, None])
def test_non_object_arguments(arguments: object) -> None:
    out = parse_output(json.dumps({"name": "set_light", "arguments": arguments}))
    assert out.calls == ()
    assert out.errors == ("arguments of 'set_light' must be an object",)


@pytest.mark.parametrize(
    "item", [{"arguments": {}}, {"name": 3}, {"function": "set_light"}, "set_light", 42]
)
def test_json_that_is_not_a_call_is_an_error(item: object) -> None:
    out = parse_output(f"<tool_call>\n{json.dumps(item)}\n</tool_call>")
    assert out.calls == ()
    assert len(out.errors) == 1
    assert "a call must be an object with a string 'name'" in out.errors[0]


@pytest.mark.parametrize(
    "text",
    [
        "The kitchen light is already on.",
        "  I cannot do that.\n",
        "",
        "Call me {maybe} later",
    ],
)
def test_plain_text_is_an_answer(text: str) -> None:
    out = parse_output(text)
    assert out == ParsedOutput(text=text.strip())
    assert not out.is_call


def test_broken_json_inside_a_tag_is_an_error_not_an_exception() -> None:
    text = '<tool_call>\n{"name": "set_light", "arguments": {"room": \n</tool_call>'
    out = parse_output(text)
    assert out.calls == ()
    [error] = out.errors
    assert error.startswith("not valid JSON (")
    assert "set_light" in error  # the fragment is quoted for the repair message


def test_one_good_and_one_broken_block() -> None:
    text = f"{tagged(LIGHT)}\n<tool_call>\n{{oops}}\n</tool_call>"
    out = parse_output(text)
    assert out.calls == (LIGHT,)
    assert len(out.errors) == 1


def test_bare_json_followed_by_junk_keeps_the_call_and_reports_the_rest() -> None:
    out = parse_output(f"{bare(LIGHT)}\nthanks!")
    assert out.calls == (LIGHT,)
    assert len(out.errors) == 1
    assert "thanks!" in out.errors[0]


def test_long_fragments_are_shortened_in_errors() -> None:
    out = parse_output("<tool_call>\n{" + "x" * 500 + "\n</tool_call>")
    [error] = out.errors
    assert len(error) < 200


@pytest.mark.parametrize(
    "call",
    [
        LIGHT,
        NOTE,
        ToolCall("now", {}),
        ToolCall("say", {"text": 'café "quoted" \\ back\nslash 雪 😀'}),
        ToolCall("nested", {"a": {"b": [1, 2.5, None, False]}}),
    ],
)
def test_render_call_round_trips(call: ToolCall) -> None:
    text = render_call(call)
    assert text.startswith(CALL_OPEN)
    assert text.endswith(CALL_CLOSE)
    assert "雪" in render_call(ToolCall("say", {"text": "雪"}))  # not \\u-escaped
    assert parse_output(text) == ParsedOutput(calls=(call,))


def test_rendered_calls_concatenate_into_parallel_output() -> None:
    text = "\n".join(render_call(c) for c in (LIGHT, NOTE))
    assert parse_output(text).calls == (LIGHT, NOTE)


def test_a_text_answer_with_a_code_fence_stays_a_text_answer() -> None:
    text = "Use a loop:\n```python\nfor i in range(3):\n    print(i)\n```"
    assert parse_output(text) == ParsedOutput(text=text)


# --- tags inside string arguments (once known bugs) ---------------------------------------


def test_a_closing_tag_inside_a_string_argument() -> None:
    # Was a strict xfail: the block regex stopped at the first closing tag.
    call = ToolCall("add_note", {"text": "the model said </tool_call> here"})
    assert parse_output(tagged(call)).calls == (call,)


def test_an_opening_tag_inside_a_bare_call() -> None:
    # Was a strict xfail: tags were looked for before bare JSON.
    call = ToolCall("add_note", {"text": "wrap calls in <tool_call> tags"})
    assert parse_output(bare(call)).calls == (call,)


def test_parallel_blocks_with_tags_inside_their_strings() -> None:
    first = ToolCall("add_note", {"text": "ends with </tool_call>"})
    second = ToolCall("add_note", {"text": "starts a <tool_call> here"})
    assert parse_output(tagged(first) + "\n" + tagged(second)).calls == (first, second)


def test_an_unclosed_unreadable_block_is_still_a_parse_error() -> None:
    parsed = parse_output('<tool_call>\n{"name": "add_note", "arguments": {"text": "cut')
    assert parsed.calls == () and len(parsed.errors) == 1


# --- a model caught in a loop -------------------------------------------------------------


def test_a_call_repeated_word_for_word_is_kept_once() -> None:
    # Key order is not a difference: the repeat is the same call.
    reordered = '{"arguments": {"on": true, "room": "kitchen"}, "name": "set_light"}'
    text = "\n".join(
        [tagged(LIGHT), tagged(NOTE), tagged(LIGHT), f"<tool_call>{reordered}</tool_call>"]
    )
    assert parse_output(text).calls == (LIGHT, NOTE)
    assert parse_output(f"[{bare(LIGHT)}, {bare(LIGHT)}]").calls == (LIGHT,)


def test_calls_that_differ_in_one_argument_are_both_kept() -> None:
    other = ToolCall("set_light", {"room": "kitchen", "on": False})
    assert parse_output(f"{tagged(LIGHT)}\n{tagged(other)}").calls == (LIGHT, other)


@pytest.mark.parametrize(
    ("text", "repeats"),
    [
        (f"{tagged(LIGHT)}\n{tagged(NOTE)}\n{tagged(LIGHT)}", True),
        (f"{tagged(LIGHT)}\n{tagged(LIGHT)}\n", True),
        (f"{tagged(LIGHT)}\n{tagged(NOTE)}", False),
        (tagged(LIGHT), False),
        (f"{tagged(LIGHT)}\n<tool_call>\n{bare(LIGHT)}", False),  # not closed yet
        (f"{tagged(LIGHT)}\n<tool_call>\n{{broken}}\n</tool_call>", False),
    ],
)
def test_closes_a_repeat_is_asked_after_each_closing_tag(text: str, *, repeats: bool) -> None:
    assert closes_a_repeat(text) is repeats
