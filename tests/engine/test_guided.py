"""The llguidance engine with the real models: grammar conversion, fast-forward,
validity, lazy trigger, prefix reuse, persisted KV state, top-k tool selection.

Model-backed tests share the session's ``qwen``/``smol`` engines; every test
that needs a known cache state sets it itself.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import llguidance
import pytest

from edge_agent.agent import Agent, system_for
from edge_agent.config import AgentSettings, EdgeAgentConfig
from edge_agent.decoding.calls import CALL_CLOSE, CALL_OPEN, ToolCall, parse_output, render_call
from edge_agent.decoding.grammar import GrammarOptions, build_grammar, lark_grammar
from edge_agent.decoding.prompts import build_prompt, user_message
from edge_agent.decoding.schema import ToolSpec, normalize_tools
from edge_agent.decoding.tool_select import ToolIndex, select_tools, terms
from edge_agent.engine.guided import (
    DecodeStats,
    GuidedGeneration,
    GuidedLlamaEngine,
    allows_text,
)
from edge_agent.engine.llama import LlamaEngine
from edge_agent.engine.prefix_cache import PrefixCache, common_prefix_len, stable_prefix
from edge_agent.models import resolve_model
from edge_agent.runtime.daemon import build_registry
from edge_agent.toolbox.verify import verify_output
from tests.conftest import DATA, REPO, TEST_THREADS

HOME8 = json.loads((REPO / "benchmarks" / "data" / "home8.json").read_text())
HOME_TOOLS = normalize_tools(HOME8["tools"])
TAGS = {CALL_OPEN.strip(), CALL_CLOSE.strip()}
AUTO = GrammarOptions(allow_text=True)
REQUIRED = GrammarOptions()
BFCL_TUNING = ("simple_python", "multiple", "parallel", "parallel_multiple", "irrelevance")


def bfcl_rows(per_category: int | None = None) -> list[dict[str, Any]]:
    rows = []
    for category in BFCL_TUNING:
        path = DATA / "bfcl" / f"BFCL_v4_{category}.json"
        lines = path.read_text().splitlines()[:per_category]
        rows += [json.loads(line) for line in lines]
    return rows


def bfcl_tool_sets() -> list[tuple[str, list[ToolSpec]]]:
    return [(row["id"], normalize_tools(row["function"])) for row in bfcl_rows()]


def prompt_for(engine: LlamaEngine, text: str, tools: list[ToolSpec] = HOME_TOOLS) -> str:
    return build_prompt(engine.chat_template, [user_message(text)], tools)


def forget_kv(engine: LlamaEngine) -> None:
    llm = engine.llama
    llm._ctx.kv_cache_seq_rm(-1, 0, -1)
    llm.n_tokens = 0


def assert_valid_call(text: str, tools: list[ToolSpec]) -> None:
    parsed = parse_output(text)
    assert parsed.is_call, text
    verdicts = verify_output(parsed, tools)
    assert all(v.ok for v in verdicts), (text, [v.message for v in verdicts])


@pytest.fixture(scope="module")
def guided_qwen(qwen: LlamaEngine) -> GuidedLlamaEngine:
    return GuidedLlamaEngine(qwen)


# --------------------------------------------------------------------------- grammar conversion


def test_tags_become_special_tokens_outside_terminals() -> None:
    """Each tag is its special token (a rule of its own, so llguidance
    matches the token) or the same tag spelled as text, as GBNF accepts it."""
    lark = lark_grammar(build_grammar(HOME_TOOLS, AUTO), TAGS)
    assert 'tool-call-open: (<tool_call> | "<tool_call>") "\\n"' in lark
    assert 'tool-call-close: "\\n" (</tool_call> | "</tool_call>")' in lark


def test_tags_stay_text_without_the_special_token() -> None:
    lark = lark_grammar(build_grammar(HOME_TOOLS, AUTO))
    assert 'tool-call-open: "<tool_call>\\n"' in lark


def test_calls_only_drops_the_text_answer() -> None:
    grammar = build_grammar(HOME_TOOLS, AUTO)
    assert allows_text(grammar)
    assert not allows_text(build_grammar(HOME_TOOLS, REQUIRED))
    assert "start: tool-calls | text-answer\n" in lark_grammar(grammar, TAGS)
    assert "start: tool-calls\n" in lark_grammar(grammar, TAGS, calls_only=True)


@pytest.mark.parametrize(
    "options", [REQUIRED, AUTO, GrammarOptions(parallel=True, allow_text=True)]
)
def test_every_sample_grammar_compiles(guided_qwen: GuidedLlamaEngine, options) -> None:
    tool_sets = [("home8", HOME_TOOLS), *bfcl_tool_sets()]
    for name, tools in tool_sets:
        compiled = guided_qwen._shared.compile(build_grammar(tools, options))
        assert not compiled.full.is_error(), name


def test_tokenizer_sees_qwen_tags_as_special(guided_qwen: GuidedLlamaEngine) -> None:
    open_id = guided_qwen._shared.special_id("<tool_call>")
    assert open_id is not None
    assert guided_qwen.tokenize("<tool_call>")[-1] == open_id


def test_with_options_rejects_unknown_names(guided_qwen: GuidedLlamaEngine) -> None:
    with pytest.raises(TypeError):
        guided_qwen.with_options(fast=True)


# --------------------------------------------------------------------------- fast-forward, validity

HOME_PROMPTS = [
    "Turn on the kitchen light",
    "Set the bathroom thermostat to 22.5 degrees",
    "What is the humidity in the bathroom?",
    "Close the main water valve completely",
]


@pytest.mark.parametrize("text", HOME_PROMPTS)
def test_fast_forward_matches_the_gbnf_engine(
    qwen: LlamaEngine, guided_qwen: GuidedLlamaEngine, text: str
) -> None:
    grammar = build_grammar(HOME_TOOLS, AUTO)
    prompt = prompt_for(qwen, text)
    reference = qwen.generate(prompt, grammar=grammar)
    plain = guided_qwen.with_options(fast_forward=False).generate(prompt, grammar=grammar)
    fast = guided_qwen.generate(prompt, grammar=grammar)
    assert plain.text == reference.text
    assert fast.text == reference.text
    assert fast.stats.forced > 0 and plain.stats.forced == 0
    assert fast.stats.decode_batches < plain.stats.decode_batches
    assert fast.finish_reason == "stop"
    assert_valid_call(fast.text, HOME_TOOLS)


def test_a_near_tie_after_a_batch_is_rechecked_token_by_token(
    qwen: LlamaEngine, guided_qwen: GuidedLlamaEngine
) -> None:
    """BFCL multiple_152: after ``"event_type": ["War"`` the model's two options,
    close the list or add a value, are a near-tie (p 0.49 against 0.46).
    Forced tokens evaluated in batches leave slightly different keys and
    values, and the model added three more values. Re-checked token by token,
    fast-forward picks what the GBNF engine picks."""
    row = json.loads((DATA / "bfcl" / "near_tie" / "BFCL_v4_multiple.json").read_text())
    tools = normalize_tools(row["function"])
    system = system_for(AgentSettings(), tools, allow_text=True)
    prompt = build_prompt(qwen.chat_template, row["question"][0], tools, system=system)
    grammar = build_grammar(tools, AUTO)
    forget_kv(qwen)
    reference = qwen.generate(prompt, grammar=grammar)
    forget_kv(qwen)
    fast = guided_qwen.generate(prompt, grammar=grammar)
    assert fast.text == reference.text
    assert fast.stats.reevaluated >= 1 and fast.stats.forced > 0
    # Which side of the tie wins (["War"] or more values) depends on the
    # kernels llama.cpp was built with for this CPU; that both engines agree
    # is what matters.


@pytest.mark.parametrize("text", HOME_PROMPTS[:2])
def test_rechecking_every_choice_replays_batches_and_changes_nothing(
    qwen: LlamaEngine, guided_qwen: GuidedLlamaEngine, text: str
) -> None:
    """With an infinite tie margin every choice after a batch replays it one
    token at a time: the KV cache is rebuilt mid-call and the text must be
    exactly what decoding without fast-forward gives."""
    grammar = build_grammar(HOME_TOOLS, AUTO)
    prompt = prompt_for(qwen, text)
    plain = guided_qwen.with_options(fast_forward=False).generate(prompt, grammar=grammar)
    always = guided_qwen.with_options(tie_margin=math.inf).generate(prompt, grammar=grammar)
    never = guided_qwen.with_options(tie_margin=0.0).generate(prompt, grammar=grammar)
    assert always.text == plain.text == never.text
    assert always.stats.reevaluated > 0 and always.stats.replayed >= always.stats.forced
    assert never.stats.reevaluated == never.stats.replayed == 0
    assert [s.token for s in always.tokens] == [s.token for s in plain.tokens]


def test_every_chosen_token_is_in_the_full_mask(
    qwen: LlamaEngine, guided_qwen: GuidedLlamaEngine
) -> None:
    """The fast path (is the model's best token allowed?) never lets through a
    token the full llguidance mask would refuse: replay the output through a
    fresh matcher, mask by mask."""
    from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask

    grammar = build_grammar(HOME_TOOLS, AUTO)
    out = guided_qwen.generate(
        prompt_for(qwen, "Dim the living room light to 30 percent"), grammar=grammar
    )
    matcher = guided_qwen._shared.compile(grammar).full.deep_copy()
    mask = allocate_token_bitmask(1, qwen.llama.n_vocab())
    for score in out.tokens:
        fill_next_token_bitmask(matcher, mask)
        assert (int(mask[0, score.token // 32]) >> (score.token % 32)) & 1, score
        assert matcher.consume_token(score.token)
    assert matcher.is_stopped() or matcher.is_accepting()


def test_forced_tokens_are_marked_and_optionally_scored(
    qwen: LlamaEngine, guided_qwen: GuidedLlamaEngine
) -> None:
    grammar = build_grammar(HOME_TOOLS, REQUIRED)
    prompt = prompt_for(qwen, "Lock the front door")
    fast = guided_qwen.generate(prompt, grammar=grammar)
    scored = guided_qwen.with_options(score_forced=True).generate(prompt, grammar=grammar)
    assert fast.text == scored.text
    assert fast.stats.forced_at == scored.stats.forced_at != ()
    for i in fast.stats.forced_at:
        assert fast.tokens[i].logprob == 0.0 and fast.tokens[i].entropy == 0.0
        assert scored.tokens[i].logprob <= 0.0
    assert any(scored.tokens[i].logprob < 0.0 for i in scored.stats.forced_at)
    assert [t.token for t in fast.tokens] == [t.token for t in scored.tokens]
    assert len(fast.tokens) == fast.completion_tokens == len(scored.tokens)


def test_sampled_token_scores_match_the_gbnf_engine(
    qwen: LlamaEngine, guided_qwen: GuidedLlamaEngine
) -> None:
    """From the same cache state, the raw logits are the same, so the scores are."""
    grammar = build_grammar(HOME_TOOLS, REQUIRED)
    prompt = prompt_for(qwen, "Turn on the kitchen light")
    forget_kv(qwen)
    reference = qwen.generate(prompt, grammar=grammar)
    forget_kv(qwen)
    plain = guided_qwen.with_options(fast_forward=False).generate(prompt, grammar=grammar)
    assert [t.token for t in plain.tokens] == [t.token for t in reference.tokens]
    for ours, theirs in zip(plain.tokens, reference.tokens, strict=True):
        assert ours.logprob == pytest.approx(theirs.logprob, abs=1e-4)
        assert ours.top_logprob == pytest.approx(theirs.top_logprob, abs=1e-4)
        assert ours.entropy == pytest.approx(theirs.entropy, abs=1e-3)


def test_full_mask_when_the_model_wants_text(
    qwen: LlamaEngine, guided_qwen: GuidedLlamaEngine
) -> None:
    """A named tool forces a call on a request that does not want one."""
    tools = [t for t in HOME_TOOLS if t.name == "set_fan"]
    out = guided_qwen.generate(
        prompt_for(qwen, "Write a haiku about autumn", tools),
        grammar=build_grammar(tools, REQUIRED),
    )
    assert out.stats.full_masks >= 1 or out.stats.forced > 0
    assert_valid_call(out.text, tools)


def test_every_constrained_bfcl_output_validates(
    qwen: LlamaEngine, guided_qwen: GuidedLlamaEngine
) -> None:
    """The first two items of each BFCL tuning category (new tools each; the
    irrelevance ones too, since the grammar forces a call): every call that
    ends is one the verifier accepts. A schema array without ``maxItems`` can
    still run to ``max_tokens`` (parallel_multiple_21: Qwen invents floats for
    ``x``); that must be the model's doing, so the GBNF engine must run off
    on the same call too, and it must stay the exception."""
    rows = bfcl_rows(per_category=2)
    assert len(rows) == 2 * len(BFCL_TUNING)
    truncated = []
    for row in rows:
        tools = normalize_tools(row["function"])
        prompt = build_prompt(qwen.chat_template, row["question"][0], tools)
        grammar = build_grammar(tools, REQUIRED)
        out = guided_qwen.generate(prompt, grammar=grammar, max_tokens=256)
        if out.finish_reason == "length":
            truncated.append(row["id"])
            ref = qwen.generate(prompt, grammar=grammar, max_tokens=256)
            # Forced tokens split the text differently, so the runs drift apart
            # after a while; they start the same call and both run off.
            assert ref.finish_reason == "length"
            assert ref.text[:100] == out.text[:100]
            continue
        assert_valid_call(out.text, tools)
    assert len(truncated) <= 1, truncated


# ------------------------------------------------------------------- decode-time constraints


def one_tool(name: str, prop: str, schema: dict[str, Any], about: str) -> list[ToolSpec]:
    params = {"type": "object", "properties": {prop: schema}, "required": [prop]}
    return normalize_tools([{"name": name, "description": about, "parameters": params}])


CONSTRAINED = [
    (
        one_tool(
            "book_dentist", "day", {"type": "string", "format": "date"}, "Book a dentist visit."
        ),
        "Book me a dentist visit next tuesday",
    ),
    (
        one_tool(
            "track_parcel",
            "code",
            {"type": "string", "pattern": r"^[A-Z]{2}-\d{4}$", "description": "e.g. AB-1234"},
            "Track a parcel by its code.",
        ),
        "Where is my parcel? The code is ab123456",
    ),
    (
        one_tool(
            "set_volume",
            "level",
            {"type": "integer", "minimum": 0, "maximum": 100},
            "Set the speaker volume.",
        ),
        "Set the speaker volume to 500",
    ),
]


@pytest.mark.parametrize(("tools", "text"), CONSTRAINED, ids=["date", "pattern", "range"])
def test_format_pattern_and_range_hold_while_decoding(
    qwen: LlamaEngine, guided_qwen: GuidedLlamaEngine, tools: list[ToolSpec], text: str
) -> None:
    """The model's own text already satisfies the schema: llguidance's JSON
    compiler enforced it token by token, before any verifier saw it. The
    GBNF engine, which leaves these to the verifier, writes a date-time, a
    code without its dash and 500 for the same prompts."""
    prompt, grammar = prompt_for(qwen, text, tools), build_grammar(tools, REQUIRED)
    unchecked = qwen.generate(prompt, grammar=grammar, max_tokens=64)
    assert not all(v.ok for v in verify_output(parse_output(unchecked.text), tools))
    out = guided_qwen.generate(prompt, grammar=grammar, max_tokens=64)
    assert not out.stats.gbnf_fallback and out.finish_reason == "stop", out.text
    assert_valid_call(out.text, tools)  # the verifier checks format too


def test_a_pattern_llguidance_refuses_falls_back_to_gbnf(
    qwen: LlamaEngine, guided_qwen: GuidedLlamaEngine
) -> None:
    tools = one_tool("tag", "label", {"type": "string", "pattern": "(?=x)x+"}, "Tag a photo.")
    out = guided_qwen.generate(
        prompt_for(qwen, "Tag the photo xx", tools),
        grammar=build_grammar(tools, REQUIRED),
        max_tokens=32,
    )
    assert out.stats.gbnf_fallback
    assert parse_output(out.text).is_call


# --------------------------------------------------------------------------- lazy trigger


def test_lazy_leaves_a_text_answer_free(qwen: LlamaEngine, guided_qwen: GuidedLlamaEngine) -> None:
    lazy = guided_qwen.with_options(lazy=True)
    out = lazy.generate(
        prompt_for(qwen, "Hi! Who are you? Answer in one short sentence, no tools."),
        grammar=build_grammar(HOME_TOOLS, AUTO),
        max_tokens=48,
    )
    assert out.stats.triggered_at is None
    assert out.stats.grammar_steps == 0
    assert not parse_output(out.text).is_call and out.text.strip()


def test_lazy_constrains_a_call_once_opened(
    qwen: LlamaEngine, guided_qwen: GuidedLlamaEngine
) -> None:
    lazy = guided_qwen.with_options(lazy=True)
    out = lazy.generate(
        prompt_for(qwen, "Turn on the kitchen light"), grammar=build_grammar(HOME_TOOLS, AUTO)
    )
    assert out.stats.triggered_at is not None
    assert out.stats.grammar_steps > 0 and out.stats.forced > 0
    assert_valid_call(out.text, HOME_TOOLS)


def test_lazy_turns_a_fenced_answer_into_a_valid_call(
    qwen: LlamaEngine, guided_qwen: GuidedLlamaEngine
) -> None:
    """Unconstrained, Qwen answers this one in a Markdown fence; the backtick
    opens a call, so the grammar takes over from that very token."""
    prompt = prompt_for(qwen, "Set the bathroom thermostat to 22.5 degrees")
    free = qwen.generate(prompt)
    out = guided_qwen.with_options(lazy=True).generate(
        prompt, grammar=build_grammar(HOME_TOOLS, AUTO)
    )
    if free.text.lstrip().startswith("`"):
        assert out.stats.triggered_at == 0
    assert_valid_call(out.text, HOME_TOOLS)


@pytest.mark.parametrize("lazy", [False, True], ids=["hard", "lazy"])
def test_call_bias_moves_the_border_between_text_and_a_call(
    qwen: LlamaEngine, guided_qwen: GuidedLlamaEngine, lazy: bool
) -> None:
    """A request the model answers in text becomes a call under a large
    bias; the first token's score stays the model's own (how far it was
    from calling), and a bias changes nothing where text is not allowed."""
    prompt = prompt_for(qwen, "Hi! Who are you? Answer in one short sentence, no tools.")
    auto = build_grammar(HOME_TOOLS, AUTO)
    plain = guided_qwen.with_options(lazy=lazy).generate(prompt, grammar=auto, max_tokens=48)
    assert not parse_output(plain.text).is_call
    biased = guided_qwen.with_options(lazy=lazy, call_bias=100.0)
    forced = biased.generate(prompt, grammar=auto, max_tokens=64)
    assert_valid_call(forced.text, HOME_TOOLS)
    first = forced.tokens[0]
    assert first.text == CALL_OPEN.strip()
    assert first.logprob < first.top_logprob  # the model itself preferred text
    assert forced.stats.call_margin is not None and forced.stats.call_margin < 0
    at_zero = guided_qwen.with_options(lazy=lazy, call_bias=0.0)
    assert at_zero.generate(prompt, grammar=auto, max_tokens=48).text == plain.text
    required = build_grammar(HOME_TOOLS, REQUIRED)
    unbiased = guided_qwen.with_options(lazy=lazy).generate(prompt, grammar=required)
    assert biased.generate(prompt, grammar=required).text == unbiased.text


def test_required_is_constrained_from_the_first_token(
    qwen: LlamaEngine, guided_qwen: GuidedLlamaEngine
) -> None:
    lazy = guided_qwen.with_options(lazy=True)
    out = lazy.generate(
        prompt_for(qwen, "Hi! Who are you?"), grammar=build_grammar(HOME_TOOLS, REQUIRED)
    )
    assert out.stats.triggered_at is None  # no trigger needed: active from the start
    assert out.stats.grammar_steps >= 1
    assert_valid_call(out.text, HOME_TOOLS)


def test_decoding_stops_at_the_first_repeated_call(smol: LlamaEngine) -> None:
    """SmolLM2 asked to ping a host three times writes the same tagged call
    until ``max_tokens`` (measured: 7 blocks, cut at 200 tokens, without
    the rule); the engine stops at the first repeat and the parser keeps
    one call."""
    ping = {"type": "object", "properties": {"host": {"type": "string"}}, "required": ["host"]}
    tools = normalize_tools([{"name": "ping", "description": "Ping a host.", "parameters": ping}])
    request = "Ping example.com, then ping example.com again, then once more."
    prompt = build_prompt(smol.chat_template, [user_message(request)], tools)
    grammar = build_grammar(tools, GrammarOptions(parallel=True))
    out = GuidedLlamaEngine(smol).generate(prompt, grammar=grammar, max_tokens=200)
    assert out.finish_reason == "stop"
    assert out.text.count(CALL_OPEN.strip()) == 2, out.text
    assert parse_output(out.text).calls == (ToolCall("ping", {"host": "example.com"}),)


@pytest.mark.parametrize("locked", [True, False])
def test_a_draft_changes_nothing_but_the_decode_steps(
    qwen: LlamaEngine, guided_qwen: GuidedLlamaEngine, *, locked: bool
) -> None:
    """A draft (a lower tier's call) is checked in one batch: the answer is
    the model's own whether the draft is right or wrong, and the tokens it
    agrees with cost no decode step each."""
    # Tagged calls, as the ladder's tiers write them (call_bias set).
    engine = guided_qwen.with_options(score_forced=True, call_bias=0.0)
    prompt = prompt_for(qwen, "Lock the back door.")
    grammar = build_grammar(HOME_TOOLS, AUTO)
    alone = engine.generate(prompt, grammar=grammar)
    assert parse_output(alone.text).calls == (
        ToolCall("lock_door", {"door": "back", "locked": True}),
    )
    draft = render_call(ToolCall("lock_door", {"door": "back", "locked": locked}))
    drafted = engine.generate(prompt, grammar=grammar, draft=draft)
    assert drafted.text == alone.text
    assert [t.token for t in drafted.tokens] == [t.token for t in alone.tokens]
    assert drafted.stats.drafted > 0
    # The first token is chosen from the prompt's own logits, as without a
    # draft; the draft's tokens are taken from the second on.
    taken = engine.llama.detokenize(
        [t.token for t in alone.tokens][: 1 + drafted.stats.draft_accepted]
    )
    assert drafted.stats.draft_accepted >= 15  # the tool, the door and the JSON around them
    assert drafted.stats.decode_batches < alone.stats.decode_batches
    if not locked:  # never past the flag the model disagrees with
        assert b"true" not in taken


def test_tagged_call_is_matched_by_the_special_tokens(guided_qwen: GuidedLlamaEngine) -> None:
    """``<tool_call>`` is one token in Qwen's vocabulary: the grammar takes the
    token and fast-forwards after it, and also takes the tag spelled out as
    text (as the GBNF engine does), so a model whose best token is a plain
    ``<`` still makes its call."""
    shared = guided_qwen._shared
    open_id = shared.special_id("<tool_call>")
    matcher = shared.compile(build_grammar(HOME_TOOLS, REQUIRED)).full.deep_copy()
    llm = guided_qwen.llama
    # llama.cpp parses the tag into its token even with special=False, so spell it in parts.
    spelled = [t for part in (b"<tool", b"_call>") for t in llm.tokenize(part, add_bos=False)]
    assert shared.tokenizer.decode_str(spelled) == "<tool_call>" and len(spelled) > 1
    assert matcher.deep_copy().validate_tokens(spelled) == len(spelled)
    assert matcher.consume_token(open_id)
    forced = shared.tokenizer.decode_str(matcher.compute_ff_tokens())
    assert forced.startswith('\n{"name":')  # ' "' is left out: it may merge with the name


# --------------------------------------------------------------------------- prefix cache


def test_second_request_evaluates_only_the_suffix(
    qwen: LlamaEngine, guided_qwen: GuidedLlamaEngine
) -> None:
    grammar = build_grammar(HOME_TOOLS, AUTO)
    prefix = stable_prefix(qwen.llama, qwen.chat_template, HOME_TOOLS)
    forget_kv(qwen)
    first = guided_qwen.generate(prompt_for(qwen, "Lock the front door"), grammar=grammar)
    second = guided_qwen.generate(prompt_for(qwen, "Unlock the garage door"), grammar=grammar)
    assert first.stats.prompt_reused == 0
    assert first.stats.prompt_evaluated == first.prompt_tokens
    assert second.stats.prompt_reused >= len(prefix) > 100
    assert second.stats.prompt_evaluated == second.prompt_tokens - second.stats.prompt_reused
    assert second.stats.prompt_evaluated < 30


def test_engines_share_the_prefix_cache(qwen: LlamaEngine, guided_qwen: GuidedLlamaEngine) -> None:
    """The GBNF engine's Llama.generate and ours keep one consistent KV cache."""
    grammar = build_grammar(HOME_TOOLS, AUTO)
    forget_kv(qwen)
    qwen.generate(prompt_for(qwen, "Lock the front door"), grammar=grammar)
    out = guided_qwen.generate(prompt_for(qwen, "Unlock the garage door"), grammar=grammar)
    prefix = stable_prefix(qwen.llama, qwen.chat_template, HOME_TOOLS)
    assert out.stats.prompt_reused >= len(prefix)
    again = qwen.generate(prompt_for(qwen, "Unlock the garage door"), grammar=grammar)
    assert again.text == out.text


def test_common_prefix_len() -> None:
    assert common_prefix_len([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix_len([1, 2], [1, 2, 3]) == 2
    assert common_prefix_len([], [1]) == 0
    assert common_prefix_len([5], [6]) == 0


def test_persisted_kv_state_reloads_in_a_new_engine(smol: LlamaEngine, tmp_path: Path) -> None:
    cache = PrefixCache(tmp_path)
    grammar = build_grammar(HOME_TOOLS, AUTO)
    prompt = prompt_for(smol, "Turn on the kitchen light")
    forget_kv(smol)
    warm = cache.warm_tools(smol.llama, smol.chat_template, HOME_TOOLS)
    assert warm.source == "computed" and cache.path(warm.key).is_file()
    assert cache.warm_tools(smol.llama, smol.chat_template, HOME_TOOLS).source == "memory"
    before = GuidedLlamaEngine(smol).generate(prompt, grammar=grammar)

    fresh = LlamaEngine(resolve_model("smollm2-135m").path, n_ctx=4096, n_threads=TEST_THREADS)
    loaded = cache.warm_tools(fresh.llama, fresh.chat_template, HOME_TOOLS)
    assert loaded.source == "disk" and loaded.key == warm.key
    after = GuidedLlamaEngine(fresh).generate(prompt, grammar=grammar)
    assert after.text == before.text
    assert after.stats.prompt_reused == warm.n_tokens
    assert after.stats.prompt_evaluated == after.prompt_tokens - warm.n_tokens


def test_only_the_most_recently_used_states_are_kept(tmp_path: Path) -> None:
    import os

    for i in range(5):
        state = tmp_path / f"s{i}.kv"
        state.write_bytes(b"x")
        os.utime(state, (1_000_000 + i, 1_000_000 + i))
    PrefixCache(tmp_path, keep=2)._prune()
    assert sorted(p.name for p in tmp_path.glob("*.kv")) == ["s3.kv", "s4.kv"]


def test_a_foreign_state_file_is_recomputed(smol: LlamaEngine, tmp_path: Path) -> None:
    cache = PrefixCache(tmp_path)
    forget_kv(smol)
    tokens = stable_prefix(smol.llama, smol.chat_template, HOME_TOOLS)
    key = cache.key(smol.llama, tokens)
    cache.path(key).write_bytes(b"not a llama.cpp state file")
    forget_kv(smol)
    warm = cache.warm(smol.llama, tokens, key)
    assert warm.source == "computed"
    assert common_prefix_len(smol.llama.input_ids[: smol.llama.n_tokens], tokens) == len(tokens)


# --------------------------------------------------------------------------- tool selection


@pytest.mark.parametrize(
    ("request_text", "tool"),
    [
        ("Turn on the kitchen light", "set_light"),
        ("Open the bedroom blinds fully", "set_blinds"),
        ("Turn the bedroom fan on high", "set_fan"),
        ("Lock the front door", "lock_door"),
        ("What is the humidity in the bathroom?", "read_sensor"),
        ("Disarm the alarm system", "set_alarm"),
    ],
)
def test_top_k_keeps_the_right_tool(request_text: str, tool: str) -> None:
    chosen = ToolIndex(HOME_TOOLS).top_k(request_text, 2)
    assert tool in [t.name for t in chosen]
    assert [t.name for t in chosen] == [t.name for t in HOME_TOOLS if t in chosen]  # stable order


def test_selection_only_past_the_threshold() -> None:
    assert select_tools("lock the door", HOME_TOOLS, k=2, max_tools=8) == HOME_TOOLS
    assert len(select_tools("lock the door", HOME_TOOLS, k=2, max_tools=4)) == 2


def test_terms_split_and_stem() -> None:
    assert terms("Switch off the lights") == ["switch", "off", "light"]
    assert terms("readSensor set_light") == ["read", "sensor", "light"]


def test_model_calls_the_selected_tool(qwen: LlamaEngine, guided_qwen: GuidedLlamaEngine) -> None:
    for text, tool in [
        ("Close the blinds in the kitchen", "set_blinds"),
        ("Lock the back door", "lock_door"),
    ]:
        tools = ToolIndex(HOME_TOOLS).top_k(text, 3)
        out = guided_qwen.generate(
            prompt_for(qwen, text, tools), grammar=build_grammar(tools, AUTO)
        )
        assert isinstance(out, GuidedGeneration) and isinstance(out.stats, DecodeStats)
        calls = parse_output(out.text).calls
        assert calls and calls[0].name == tool, out.text


def test_the_agent_offers_only_the_selected_tools_past_its_threshold(qwen: LlamaEngine) -> None:
    everything = Agent(qwen, HOME_TOOLS).ask("Lock the back door", execute=False)
    settings = AgentSettings(select_tools_above=4, select_tools_k=2)
    selected = Agent(qwen, HOME_TOOLS, settings).ask("Lock the back door", execute=False)
    assert [c.name for c in selected.calls] == ["lock_door"]
    # two tool definitions instead of eight: the prompt is much shorter
    shorter = selected.final.generation.prompt_tokens / everything.final.generation.prompt_tokens
    assert shorter < 0.6


def test_the_agents_prompt_starts_with_the_block_it_warms(
    smol: LlamaEngine, tmp_path: Path
) -> None:
    """`ask` and the daemon warm the tool block before the first request; if
    the agent rendered a different system text, no request would reuse it (and
    nothing would fail, it would just be slow), so the tokens are compared."""
    config = EdgeAgentConfig.model_validate({})
    registry = build_registry(config)
    agent = Agent(smol, registry, config.agent)
    forget_kv(smol)
    warm = agent.warm(tmp_path)
    assert warm is not None and warm.source == "computed" and warm.n_tokens > 500
    specs = registry.specs()
    prompt = build_prompt(
        smol.chat_template,
        [user_message("Turn on the kitchen light")],
        specs,
        system=agent.system(specs, allow_text=True),
    )
    tokens = smol.llama.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
    assert list(smol.llama.input_ids[: warm.n_tokens]) == tokens[: warm.n_tokens]
    assert agent.warm(tmp_path).source == "memory"  # type: ignore[union-attr]
    assert agent.warm(tmp_path, tool_choice="none") is None
    selecting = Agent(smol, registry, AgentSettings(select_tools_above=4))
    assert selecting.warm(tmp_path) is None  # each request has its own tool block


def test_llguidance_version_is_recent() -> None:
    major, minor = (int(x) for x in llguidance.__version__.split(".")[:2])
    assert (major, minor) >= (1, 0)
