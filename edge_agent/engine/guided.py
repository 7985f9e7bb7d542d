"""Grammar-guided decoding with llguidance token masks and fast-forward tokens.

:class:`GuidedLlamaEngine` implements :class:`~edge_agent.engine.base.Engine`
on the same loaded ``llama_cpp.Llama`` as :class:`~edge_agent.engine.llama.LlamaEngine`,
but runs its own decode loop instead of llama.cpp's GBNF sampler:

* **Masks.** :mod:`edge_agent.decoding.grammar` writes each tool grammar in
  llguidance's Lark as well as in GBNF: the same rules, except that numeric
  ranges, ``pattern`` and ``format`` become ``%json`` leaves compiled by
  llguidance's JSON-schema compiler, so they hold while decoding. Tool-call
  tags such as Qwen's ``<tool_call>`` become the model's special tokens, and
  an ``LLMatcher`` checks each step.
  Greedy decoding only needs to know whether the model's own best token is
  allowed, which llguidance answers for one token in microseconds; the whole
  151k-entry mask is computed only when it is not.
* **Fast-forward.** Where the grammar allows exactly one continuation
  (``"arguments": {"room": "`` after a tool name), llguidance returns the
  forced tokens, tokenized canonically (it backs off at the end so no token
  boundary is forced that the tokenizer would not produce). They are
  appended without sampling and evaluated as one batch with the sampled
  token, so ten forced tokens cost about one decode step. llama.cpp's
  batched kernels round differently from its one-token kernels: the keys and
  values of a batch differ slightly, and every later logit moves by a few
  hundredths. That is enough to flip a near-tie, so the model would pick
  differently from the GBNF engine, which never batches. When the two best
  allowed tokens are closer than ``tie_margin`` and a batch was evaluated
  since the last re-check, the tokens from that batch on are evaluated again
  one at a time before the choice (``DecodeStats.reevaluated``). Near-ties
  are rare, so this keeps most of the speed and makes the output the same
  as without fast-forward.
* **Call intent** (``call_bias``, a number; None keeps the plain rule).
  Where the grammar admits both a text answer and a call (``tool_choice``
  auto), the first token decides between them, and a model need not open a
  call the way our grammar spells it: Qwen2.5-Coder-1.5B starts nearly
  every call with a Markdown fence or ``{`` (the ``<tool_call>`` token sits
  about 20 logits below), which the grammar's text branch refuses, so under
  the plain rule the model was pushed into prose for requests a tool fits.
  With ``call_bias`` set, the best logit among the tokens that open a call
  (the tag, or ``{``, ``[``, ``<`` or a backtick first) is weighed against
  the best among the rest, plus ``call_bias``; the winner picks the tag or
  the best text token. Scores stay the model's own;
  :attr:`DecodeStats.call_margin` keeps the difference, so a bias can be
  replayed without decoding again.
* **Lazy constraint** (``lazy=True``). When the grammar also admits a
  plain-text answer, the model decodes freely until it opens a call: the
  ``<tool_call>`` token anywhere, or ``{``, ``[``, ``<`` or a backtick as its
  first visible character. From that token on the call grammar applies. When
  the grammar admits no text (``tool_choice`` required or a named tool), it
  applies from the first token, as without ``lazy``.

* **Drafts** (``generate(..., draft=text)``). A guess at the answer, such
  as the call a smaller model on the ladder proposed, is evaluated in one
  batch behind the last chosen token, and the model's own choice at each
  position is compared with it: while they agree, the tokens are taken
  without a decode step each (speculative decoding, with a draft decoded
  beforehand). At the first disagreement the rest of the draft is dropped
  from the KV cache and decoding goes on as usual, so the output is what
  the model alone writes (up to the near-ties above, which are re-checked
  the same way), for a fraction of its decode steps.
  ``DecodeStats.drafted`` and ``draft_accepted`` count the draft's tokens
  and how many were taken.

Each sampled token's score is taken from the raw logits *before* the mask,
as in :mod:`edge_agent.engine.llama`. Forced tokens are not decisions of the
model, and scoring them costs a row of logits each (the output layer is a
quarter of a 0.5B model's weights), so ``score_forced`` is off by default:
forced tokens carry ``logprob = top_logprob = entropy = 0`` ("the grammar
left no choice") and :attr:`DecodeStats.forced_at` lists their positions, so
a confidence model can skip them rather than read them as certainty.
``score_forced=True`` is for callers that want the model's own opinion of
the forced text too; it computes their real unconstrained log-probabilities
from the same batch, at the price of those rows and of one extra batch when
a call ends on forced tokens. :func:`~edge_agent.engine.load_engine`
turns it on: the shipped confidence model was fitted on GBNF runs, where
every token is scored, and the measured cost was within noise.

Prompt-prefix KV reuse works as in ``Llama.generate``: the longest common
prefix with what the context already holds is kept (see
:mod:`edge_agent.engine.prefix_cache`).

Limits: temperature 0 only; one sequence at a time; the Llama object must not
be used from two threads at once (true of llama.cpp in general).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import llguidance
import numpy as np
import numpy.typing as npt

from edge_agent.decoding.calls import CALL_CLOSE, CALL_OPEN, closes_a_repeat
from edge_agent.decoding.grammar import Grammar, lark_grammar
from edge_agent.engine.base import FinishReason, Generation, Timings, TokenScore
from edge_agent.engine.prefix_cache import reuse_prefix, truncate
from edge_agent.engine.text_stream import NO_TEXT_OPTIONS, TextOptions, TextStream
from edge_agent.errors import EngineError, InputError, UnsupportedSchemaError

if TYPE_CHECKING:
    from edge_agent.engine.llama import LlamaEngine

Logits = npt.NDArray[np.float32]
log = logging.getLogger(__name__)

_TEXT_RULE = "text-answer"
_MAX_GRAMMARS = 64
_TAGS = (CALL_OPEN.strip(), CALL_CLOSE.strip())
_CLOSE_BYTES = CALL_CLOSE.strip().encode()
# First visible characters that open a call (the hard grammar's text answer
# may not start with them either).
_CALL_STARTS = ("{", "[", "<", "`")
# Logit gap under which a choice made after a batched evaluation is re-checked
# token by token. Batching moved the leading logits of Qwen2.5-0.5B by up to
# about 0.05 in traces; at 0.25, 400 BFCL items (benchmarks/decode.py) came out
# identical to the GBNF engine, with a re-check on 39 of them.
TIE_MARGIN = 0.25


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class DecodeStats:
    """What the decode loop did, beyond :class:`Timings`.

    ``prompt_evaluated`` counts the prompt tokens actually run through the
    model after prefix reuse; ``grammar_s`` is the time spent in llguidance
    (checks, masks, fast-forward), ``full_masks`` how many steps needed the
    whole vocabulary mask. ``reevaluated`` counts the near-ties that made
    the loop evaluate its batched tokens again one at a time, and
    ``replayed`` how many tokens that took. ``triggered_at`` is the index of the first
    constrained token in lazy mode (None: the model answered in free text);
    ``forced_at`` the indices of fast-forwarded tokens in ``tokens``.
    ``gbnf_fallback``: llguidance could not compile the grammar, so llama.cpp's
    GBNF sampler decoded this call (and none of the other fields apply).
    ``call_margin``: with a call-intent rule (``call_bias``), the best
    call-opening logit minus the best other one at the first token.
    ``drafted``/``draft_accepted``: the tokens of a draft and how many of
    them the model agreed with (see the module notes).
    """

    prompt_reused: int = 0
    prompt_evaluated: int = 0
    sampled: int = 0
    forced: int = 0
    grammar_s: float = 0.0
    grammar_steps: int = 0
    full_masks: int = 0
    decode_batches: int = 0
    reevaluated: int = 0
    replayed: int = 0
    triggered_at: int | None = None
    forced_at: tuple[int, ...] = ()
    gbnf_fallback: bool = False
    call_margin: float | None = None
    drafted: int = 0
    draft_accepted: int = 0

    @property
    def ff_share(self) -> float:
        total = self.sampled + self.forced
        return self.forced / total if total else 0.0


@dataclass(frozen=True)
class GuidedGeneration(Generation):
    """A :class:`Generation` plus the guided loop's :class:`DecodeStats`."""

    stats: DecodeStats = field(default_factory=DecodeStats)


# --------------------------------------------------------------------------- grammar


def allows_text(grammar: Grammar) -> bool:
    """Whether the grammar's root admits a plain-text answer (``tool_choice=auto``)."""
    root = grammar.text.split("\n", 1)[0]
    return root.startswith("root ::=") and _TEXT_RULE in root.split()


@dataclass(frozen=True)
class _Compiled:
    """A grammar ready for llguidance: the full one, and the calls-only one
    a lazy trigger switches to (None when the grammar admits no text)."""

    full: llguidance.LLMatcher
    calls: llguidance.LLMatcher | None


# --------------------------------------------------------------------------- the engine


class GuidedLlamaEngine:
    """The :class:`Engine` protocol on a loaded llama.cpp model, with llguidance masks.

    Built from a :class:`LlamaEngine` (the model is shared, not reloaded).
    ``fast_forward`` feeds forced tokens as one batch; ``lazy`` lets the model
    answer freely until it opens a call; ``score_forced`` (off by default,
    since it costs a logits row per forced token) computes the unconstrained
    log-probability of forced tokens as well, instead of leaving them at 0.
    ``tie_margin`` (logits) is the gap under which a choice after a batch is
    re-checked token by token; 0 turns the re-check off. ``call_bias``
    (logits, or None for the plain rule) weighs the model's intent to open a
    call against a text answer at the first token (see the module notes).
    """

    def __init__(  # noqa: PLR0913 - keyword-only decoding options
        self,
        engine: LlamaEngine,
        *,
        fast_forward: bool = True,
        lazy: bool = False,
        score_forced: bool = False,
        tie_margin: float = TIE_MARGIN,
        call_bias: float | None = None,
        text: TextOptions = NO_TEXT_OPTIONS,
    ) -> None:
        self._engine = engine
        self._llm: Any = engine.llama
        self.fast_forward = fast_forward
        self.lazy = lazy
        self.score_forced = score_forced
        self.tie_margin = tie_margin
        self.call_bias = call_bias
        self.text = text
        self._n_vocab = int(self._llm.n_vocab())
        self._shared = _Shared(self._llm)

    def with_options(self, **options: bool | float | TextOptions | None) -> GuidedLlamaEngine:
        """The same model, tokenizer and grammar cache, with other options."""
        known = {"fast_forward", "lazy", "score_forced", "tie_margin", "call_bias", "text"}
        unknown = set(options) - known
        if unknown:
            raise TypeError(f"unknown options: {', '.join(sorted(unknown))}")
        clone = copy.copy(self)
        for name, value in options.items():
            setattr(clone, name, value)
        return clone

    @property
    def model_name(self) -> str:
        return self._engine.model_name

    @property
    def chat_template(self) -> str | None:
        return self._engine.chat_template

    @property
    def llama(self) -> Any:
        return self._llm

    @property
    def load_s(self) -> float:
        return self._engine.load_s

    @property
    def n_ctx(self) -> int:
        return int(self._llm.n_ctx())

    @property
    def n_threads(self) -> int:
        return self._engine.n_threads

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def tokenize(self, text: str) -> list[int]:
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=True))

    def generate(
        self,
        prompt: str,
        *,
        grammar: Grammar | None = None,
        max_tokens: int = 256,
        draft: str | None = None,
    ) -> GuidedGeneration:
        tokens = self.tokenize(prompt)
        if len(tokens) + max_tokens > self.n_ctx:
            raise InputError(
                f"prompt is {len(tokens)} tokens; with {max_tokens} to generate it exceeds "
                f"the context of {self.n_ctx}",
                hint="shorten the conversation or pass fewer tools",
            )
        try:
            constraint = self._constraint(grammar)
        except UnsupportedSchemaError as exc:
            assert grammar is not None  # no grammar, nothing to read
            return self._fallback(prompt, grammar, max_tokens, exc)
        run = _Run(self, constraint, max_tokens)
        if draft:
            run.draft = list(self._llm.tokenize(draft.encode("utf-8"), add_bos=False, special=True))
        return run.execute(tokens)

    def _fallback(
        self, prompt: str, grammar: Grammar, max_tokens: int, exc: UnsupportedSchemaError
    ) -> GuidedGeneration:
        """A grammar llguidance cannot compile (a ``pattern`` its regex engine
        refuses, such as a look-ahead; a leaf schema no value satisfies) is
        still enforced, by llama.cpp's GBNF sampler: our GBNF is written for
        it, so the request is answered (slower, with ranges, patterns and
        formats left to the verifier) rather than refused."""
        if grammar.key not in self._shared.fell_back:
            self._shared.fell_back.add(grammar.key)
            log.warning("llguidance: %s; this grammar is decoded by the GBNF sampler", exc)
        gen = self._engine.generate(prompt, grammar=grammar, max_tokens=max_tokens)
        fields = {f.name: getattr(gen, f.name) for f in dataclasses.fields(Generation)}
        return GuidedGeneration(**fields, stats=DecodeStats(gbnf_fallback=True))

    def _constraint(self, grammar: Grammar | None) -> _Constraint:
        if grammar is None:
            return _Constraint(None, None, plain=True)
        compiled = self._shared.compile(grammar)
        if grammar.value:
            return _Constraint(compiled.full.deep_copy(), None, plain=True)
        either = compiled.calls is not None  # text or a call may come first
        if self.lazy and compiled.calls is not None:
            return _Constraint(None, compiled.calls.deep_copy(), either)
        return _Constraint(compiled.full.deep_copy(), None, either)


class _Shared:
    """Per-model state shared by :meth:`GuidedLlamaEngine.with_options` clones."""

    def __init__(self, llm: Any) -> None:
        self._llm = llm
        self._tokenizer: llguidance.LLTokenizer | None = None
        self._eog: frozenset[int] | None = None
        self._grammars: OrderedDict[str, _Compiled] = OrderedDict()
        self.pieces: dict[int, bytes] = {}
        self.fell_back: set[str] = set()  # grammar keys already logged as unreadable
        self._openers: npt.NDArray[np.intp] | None = None

    @property
    def eog(self) -> frozenset[int]:
        if self._eog is None:
            import llama_cpp

            vocab = self._llm._model.vocab
            n = int(self._llm.n_vocab())
            self._eog = frozenset(t for t in range(n) if llama_cpp.llama_vocab_is_eog(vocab, t))
        return self._eog

    @property
    def tokenizer(self) -> llguidance.LLTokenizer:
        """llguidance's view of the llama.cpp vocabulary (about 1 s to build)."""
        if self._tokenizer is None:
            import llguidance.llamacpp

            with warnings.catch_warnings():
                # llguidance 1.9 still calls llama_token_get_attr, which
                # llama-cpp-python 0.3.36 flags as deprecated.
                warnings.filterwarnings("ignore", "llama_token_get_attr", DeprecationWarning)
                self._tokenizer = llguidance.llamacpp.lltokenizer_from_vocab(
                    self._llm._model.vocab, eos_token=sorted(self.eog)
                )
        return self._tokenizer

    def piece(self, token: int) -> bytes:
        if token not in self.pieces:
            self.pieces[token] = bytes(self._llm.detokenize([token], special=True))
        return self.pieces[token]

    def call_openers(self, tag: int) -> npt.NDArray[np.intp]:
        """Ids of the tokens that open a call in the model's own way: the
        tag, and every token whose first visible character is one of
        ``{ [ < ``` `` (end-of-generation tokens aside). Computed once per
        model (a pass over the vocabulary, about a second)."""
        if self._openers is None:
            starts = tuple(c.encode() for c in _CALL_STARTS)
            ids = [tag]
            for token in range(int(self._llm.n_vocab())):
                piece = bytes(self._llm.detokenize([token], special=True))
                if token not in self.eog and piece.lstrip().startswith(starts):
                    ids.append(token)
            self._openers = np.array(sorted(set(ids)), dtype=np.intp)
        return self._openers

    def special_id(self, tag: str) -> int | None:
        """The token id of ``tag`` if the vocabulary has it as one special token."""
        ids = self.tokenizer.tokenize_str(tag, parse_special=True)
        if len(ids) == 1 and self.tokenizer.is_special_token(ids[0]):
            return int(ids[0])
        return None

    def compile(self, grammar: Grammar) -> _Compiled:
        """The grammar's matchers, kept for the last few grammars used."""
        compiled = self._grammars.pop(grammar.key, None)
        if compiled is None:
            calls = self._matcher(grammar, calls_only=True) if allows_text(grammar) else None
            compiled = _Compiled(self._matcher(grammar), calls)
        self._grammars[grammar.key] = compiled
        while len(self._grammars) > _MAX_GRAMMARS:
            self._grammars.popitem(last=False)
        return compiled

    def _matcher(self, grammar: Grammar, *, calls_only: bool = False) -> llguidance.LLMatcher:
        special = [tag for tag in _TAGS if self.special_id(tag) is not None]
        lark = lark_grammar(grammar, special, calls_only=calls_only)
        matcher = llguidance.LLMatcher(
            self.tokenizer, llguidance.LLMatcher.grammar_from_lark(lark), log_level=0
        )
        if matcher.is_error():
            raise UnsupportedSchemaError(f"llguidance rejected the grammar: {matcher.get_error()}")
        return matcher


@dataclass
class _Constraint:
    """The matcher in force (None: free decoding) and, in lazy mode, the one
    waiting for the model to open a call."""

    active: llguidance.LLMatcher | None
    waiting: llguidance.LLMatcher | None
    either: bool = False  # the grammar admits a text answer as well as calls
    plain: bool = False  # no calls at all: free text, or a JSON value (response_format)

    def trigger(self) -> bool:
        if self.waiting is None:
            return False
        self.active, self.waiting = self.waiting, None
        return True


# --------------------------------------------------------------------------- the loop


@dataclass
class _Counters:
    sampled: int = 0
    forced: int = 0
    grammar_s: float = 0.0
    grammar_steps: int = 0
    full_masks: int = 0
    decode_batches: int = 0
    reevaluated: int = 0
    replayed: int = 0
    triggered_at: int | None = None
    forced_at: list[int] = field(default_factory=list)
    call_margin: float | None = None
    drafted: int = 0
    draft_accepted: int = 0


class _Run:
    """One ``generate`` call: evaluate, score, pick, consume, fast-forward."""

    def __init__(self, engine: GuidedLlamaEngine, constraint: _Constraint, max_tokens: int) -> None:
        self.e = engine
        self.llm = engine._llm
        self.shared = engine._shared
        self.c = constraint
        self.max_tokens = max_tokens
        self.tokens: list[int] = []
        self.scores: list[TokenScore] = []
        self.out = bytearray()
        self.n = _Counters()
        self._bitmask: npt.NDArray[np.int32] | None = None
        # The last full mask and the step it was computed at: a tie check that
        # needed it leaves it for the choice that follows at the same step.
        self._mask_at: tuple[int, npt.NDArray[np.intp]] | None = None
        self._open_tag: int | None = None
        # Where the first batch of generated tokens since the last re-check
        # starts in the KV cache (None: every generated token so far was
        # evaluated alone).
        self._batched_from: int | None = None
        # The client's view of a text answer (stop strings, streaming); made
        # once the first visible token shows the answer is text, not a call.
        self.stream: TextStream | None = None
        if constraint.waiting is not None or (constraint.either and engine.call_bias is not None):
            self._open_tag = self.shared.special_id("<tool_call>")
        # A guess at the output (see the module notes); ``_spec`` are its
        # tokens evaluated behind the chosen ones and not yet agreed with,
        # ``_spec_rows`` the logits after each of them.
        self.draft: list[int] = []
        self._spec: list[int] = []
        self._spec_rows: list[Logits] = []

    def execute(self, prompt: list[int]) -> GuidedGeneration:
        start = time.perf_counter()
        reused = reuse_prefix(self.llm, prompt)
        self.n.drafted = len(self.draft)
        first_at, finish = self._loop(prompt[reused:], start)
        self._drop_spec()
        end = time.perf_counter()
        timings = Timings(self.e.load_s, first_at - start, end - first_at)
        counters = dataclasses.asdict(self.n)
        counters["forced_at"] = tuple(counters["forced_at"])
        stats = DecodeStats(prompt_reused=reused, prompt_evaluated=len(prompt) - reused, **counters)
        text = self.stream.close() if self.stream else self.out.decode("utf-8", errors="replace")
        return GuidedGeneration(text, tuple(self.scores), len(prompt), finish, timings, stats=stats)

    def _loop(self, pending: list[int], start: float) -> tuple[float, FinishReason]:
        first_at = 0.0
        forced: list[int] = []
        logits: Logits | None = None  # known already when the model agreed with the draft
        while True:
            if logits is None:
                guess = self._guess(pending)
                if (forced or guess) and self._batched_from is None:
                    self._batched_from = int(self.llm.n_tokens)
                logits = self._eval_with_guess(pending, forced, guess)
                if not first_at:
                    first_at = time.perf_counter()
            if len(self.tokens) >= self.max_tokens:
                return first_at, "length"
            if self._batched_from is not None and self._near_tie(logits):
                self._drop_spec()
                logits = self._replay(self._batched_from)
                self._batched_from = None
            token = self._pick(self._biased(logits))
            if token in self.shared.eog:
                return first_at, "stop"
            self._emit(token, self._score(logits, token))
            forced = self._advance(token)
            logits = self._follow_draft(token, forced)
            pending = [] if logits is not None else [token, *forced]
            if self._stopped_by_client(token, forced):
                return first_at, "stop"
            if self.c.active is not None and (self.c.active.is_stopped() or self._repeated()):
                if pending:
                    self._finish_forced(token, forced)
                return first_at, "stop"
            if logits is not None:
                forced = []

    # ---- drafts

    def _guess(self, pending: list[int]) -> list[int]:
        """The draft's tokens after ``pending``, while every token chosen so
        far agrees with it; as many as fit behind ``pending`` in the last
        batch and under ``max_tokens``."""
        done = len(self.tokens)
        if not self.draft or not done or self.draft[:done] != self.tokens:
            return []  # not before the first choice: the prompt's logits stay as without a draft
        n_batch = int(self.llm.n_batch)
        room = n_batch - 1 - (len(pending) - 1) % n_batch
        return self.draft[done : done + min(room, self.max_tokens - done)]

    def _eval_with_guess(self, pending: list[int], forced: list[int], guess: list[int]) -> Logits:
        """Evaluate ``pending`` and the ``guess`` behind it in one batch;
        score ``forced`` (the tail of ``pending``) and return the logits
        after ``pending``. The guess's rows are kept for :meth:`_follow_draft`."""
        n_forced = len(forced) if self.e.score_forced else 0
        rows = self._eval([*pending, *guess], n_forced + 1 + len(guess))
        if guess:
            self._spec = list(guess)
            self._spec_rows = [row.copy() for row in rows[len(rows) - len(guess) :]]
            rows = rows[: len(rows) - len(guess)]
        self._score_forced(forced, rows[:-1])
        return rows[-1]

    def _follow_draft(self, token: int, forced: list[int]) -> Logits | None:
        """After choosing ``token`` (and its ``forced`` tokens): when they are
        the draft's next tokens, already evaluated, take them and return the
        logits that follow; otherwise drop the draft from the KV cache and
        return None, so the loop evaluates them."""
        taken = [token, *forced]
        if not self._spec or self._spec[: len(taken)] != taken:
            self._drop_spec()
            return None
        rows = self._spec_rows[: len(taken)]
        self._spec, self._spec_rows = self._spec[len(taken) :], self._spec_rows[len(taken) :]
        self.n.draft_accepted += len(taken)
        if forced:
            if self.e.score_forced:
                self.scores.extend(self._score(r, t) for r, t in zip(rows, forced, strict=False))
            else:
                self.scores.extend(self._unscored(t) for t in forced)
        return rows[-1]

    def _drop_spec(self) -> None:
        """Forget the draft tokens evaluated but not agreed with."""
        if self._spec:
            truncate(self.llm, int(self.llm.n_tokens) - len(self._spec))
            self._spec, self._spec_rows = [], []

    # ---- model

    def _eval(self, tokens: list[int], n_rows: int) -> list[Logits]:
        """Evaluate ``tokens``; return the logits of the last ``n_rows`` positions.

        Chunks of ``n_batch`` start at the front, as in ``Llama.eval``, so the
        same prompt gives bit-identical logits in both engines.
        """
        n_batch = int(self.llm.n_batch)
        chunks = [tokens[i : i + n_batch] for i in range(0, len(tokens), n_batch)]
        n_rows = min(n_rows, len(chunks[-1]))
        for chunk in chunks[:-1]:
            self._decode(chunk, 1)
        last = chunks[-1]
        self._decode(last, n_rows)
        rows = []
        for i in range(len(last) - n_rows, len(last)):
            ptr = self.llm._ctx.get_logits_ith(i)
            rows.append(np.ctypeslib.as_array(ptr, shape=(self.e._n_vocab,)))
        return rows

    def _replay(self, start: int) -> Logits:
        """Drop the KV cache from position ``start`` on and evaluate those
        tokens again one at a time; return the last one's logits."""
        tokens = [int(t) for t in self.llm.input_ids[start : self.llm.n_tokens]]
        truncate(self.llm, start)
        for token in tokens:
            self._decode([token], 1)
        self.n.reevaluated += 1
        self.n.replayed += len(tokens)
        return np.ctypeslib.as_array(self.llm._ctx.get_logits_ith(0), shape=(self.e._n_vocab,))

    def _decode(self, batch: list[int], n_rows: int) -> None:
        llm = self.llm
        n_past = int(llm.n_tokens)
        llm._batch.set_batch(batch=batch, n_past=n_past, logits_all=False)
        for i in range(max(len(batch) - n_rows, 0), len(batch)):
            llm._batch.batch.logits[i] = True
        try:
            llm._ctx.decode(llm._batch)
        except RuntimeError as exc:
            raise EngineError(f"llama.cpp failed to decode: {exc}", retryable=True) from exc
        llm.input_ids[n_past : n_past + len(batch)] = batch
        llm.n_tokens = n_past + len(batch)
        llm._requires_eval = False
        self.n.decode_batches += 1

    def _score(self, logits: Logits, token: int) -> TokenScore:
        """log p(token) under the raw logits, before any mask."""
        top = float(logits.max())
        shifted = logits - np.float32(top)
        exp = np.exp(shifted)
        z = float(exp.sum(dtype=np.float64))
        log_z = math.log(z)
        entropy = log_z - float(np.dot(exp, shifted)) / z
        return TokenScore(
            token=token,
            text=self.shared.piece(token).decode("utf-8", errors="replace"),
            logprob=float(shifted[token]) - log_z,
            top_logprob=-log_z,
            entropy=max(entropy, 0.0),
            top=self._top(shifted, log_z),
        )

    def _top(self, shifted: Logits, log_z: float) -> tuple[tuple[str, float], ...]:
        """The ``top_logprobs`` best tokens, best first (empty unless asked)."""
        k = min(self.e.text.top_logprobs, self.e._n_vocab)
        if k <= 0:
            return ()
        best = np.argpartition(shifted, -k)[-k:]
        best = best[np.argsort(shifted[best])[::-1]]
        piece = self.shared.piece
        return tuple(
            (piece(int(t)).decode("utf-8", errors="replace"), float(shifted[t]) - log_z)
            for t in best
        )

    def _stopped_by_client(self, token: int, forced: list[int]) -> bool:
        """Hand a text answer's new text on; True when a stop string ended it.
        Whether the answer is text is known at its first visible token: a
        call opens with the tag or ``{ [ <`` or a backtick."""
        options = self.e.text
        if not options.streams:
            return False
        if self.stream is None:
            if not self.out.strip() or not self._is_text_answer(token):
                return False
            self.stream = TextStream(options.stop, options.on_text)
            return self.stream.feed(bytes(self.out).lstrip())
        piece = b"".join(self.shared.piece(t) for t in (token, *forced))
        return self.stream.feed(piece)

    def _is_text_answer(self, first: int) -> bool:
        if self.c.plain:
            return True
        if not self.c.either or first == self._open_tag:
            return False
        visible = bytes(self.out).lstrip().decode("utf-8", errors="replace")
        return not visible.startswith(_CALL_STARTS)

    def _emit(self, token: int, score: TokenScore) -> None:
        self.tokens.append(token)
        self.scores.append(score)
        self.out += self.shared.piece(token)

    # ---- grammar

    def _pick(self, logits: Logits) -> int:
        """Greedy choice: the model's best token if the grammar allows it,
        else the best token of the full mask."""
        best = int(np.argmax(logits))
        if self.c.active is None and not self._opens_call(best):
            return best
        started = time.perf_counter()
        if self.c.active is None:
            self.c.trigger()
            self.n.triggered_at = len(self.tokens)
        matcher = self.c.active
        assert matcher is not None
        self.n.grammar_steps += 1
        if matcher.validate_tokens([best]) != 1:
            best = self._masked_argmax(matcher, logits)
        self.n.grammar_s += time.perf_counter() - started
        return best

    def _biased(self, logits: Logits) -> Logits:
        """The logits the first choice is made from. With a call-intent rule
        and a grammar that leaves text or a call open: the tag's logit raised
        above all when the model's best call-opening token (plus
        ``call_bias``) beats its best other token, else every call opener
        pushed out of reach, so the choice after this is plain."""
        bias, tag = self.e.call_bias, self._open_tag
        if self.tokens or not self.c.either or bias is None or tag is None:
            return logits
        openers = self.shared.call_openers(tag)
        others: Logits = logits.copy()
        others[openers] = -np.inf
        others[list(self.shared.eog)] = -np.inf
        margin = float(logits[openers].max()) - float(others.max())
        self.n.call_margin = margin
        if margin + bias >= 0:
            chosen: Logits = np.full_like(logits, -np.inf)
            chosen[tag] = 0.0
            return chosen
        return others

    def _masked_argmax(self, matcher: llguidance.LLMatcher, logits: Logits) -> int:
        allowed = self._allowed(matcher)
        return int(allowed[int(np.argmax(logits[allowed]))])

    def _allowed(self, matcher: llguidance.LLMatcher) -> npt.NDArray[np.intp]:
        """The ids of every token the grammar allows next (the full mask)."""
        from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask

        if self._mask_at is not None and self._mask_at[0] == len(self.tokens):
            return self._mask_at[1]

        if self._bitmask is None:
            self._bitmask = allocate_token_bitmask(1, self.e._n_vocab)
        fill_next_token_bitmask(matcher, self._bitmask)
        self.n.full_masks += 1
        if matcher.is_error():
            raise EngineError(f"llguidance failed: {matcher.get_error()}")
        bits = np.unpackbits(self._bitmask.view(np.uint8), bitorder="little")
        allowed = np.flatnonzero(bits[: self.e._n_vocab])
        if allowed.size == 0:
            raise EngineError("the grammar allows no token at all; this is a bug")
        self._mask_at = (len(self.tokens), allowed)
        return allowed

    def _near_tie(self, logits: Logits) -> bool:
        """Are the two best tokens the grammar allows within ``tie_margin``?

        Usually the model's best token is allowed; then it is a tie only if
        another allowed token lies within the margin, and the tokens that
        close are few, so checking them costs microseconds. Only when the
        best token is refused is the full mask computed.
        """
        matcher = self.c.active
        margin = self.e.tie_margin
        if matcher is None or margin <= 0:
            return False
        started = time.perf_counter()
        best = int(np.argmax(logits))
        if matcher.validate_tokens([best]) == 1:
            close = np.flatnonzero(logits > logits[best] - np.float32(margin))
            tie = any(t != best and matcher.validate_tokens([int(t)]) == 1 for t in close)
        else:
            allowed = self._allowed(matcher)
            top2 = np.sort(logits[allowed])[-2:]
            tie = allowed.size > 1 and float(top2[-1] - top2[0]) < margin
        self.n.grammar_s += time.perf_counter() - started
        return tie

    def _opens_call(self, token: int) -> bool:
        """Lazy mode: does this token open a tool call?"""
        if self.c.waiting is None:
            return False
        if token == self._open_tag:
            return True
        if self.out.strip():
            return False
        visible = self.shared.piece(token).lstrip()
        return visible.decode("utf-8", errors="replace").startswith(_CALL_STARTS)

    def _advance(self, token: int) -> list[int]:
        """Consume the chosen token; return the forced tokens that follow it."""
        matcher = self.c.active
        if matcher is None:
            self.n.sampled += 1
            return []
        started = time.perf_counter()
        if not matcher.consume_token(token):
            raise EngineError(f"llguidance refused token {token}: {matcher.get_error()}")
        self.n.sampled += 1
        forced: list[int] = []
        if self.e.fast_forward and not matcher.is_stopped():
            forced = matcher.compute_ff_tokens()[: self._room()]
            if forced and not matcher.consume_tokens(forced):
                raise EngineError(f"llguidance refused its own forced tokens: {forced}")
        self.n.grammar_s += time.perf_counter() - started
        for tok in forced:
            self.n.forced_at.append(len(self.tokens))
            self.tokens.append(tok)
            self.out += self.shared.piece(tok)
        self.n.forced += len(forced)
        return forced

    def _repeated(self) -> bool:
        """A call block just closed and repeats an earlier one: the model is
        looping, and the parser drops the repeat anyway."""
        if self.c.plain or not self.out.rstrip().endswith(_CLOSE_BYTES):
            return False
        return closes_a_repeat(self.out.decode("utf-8", errors="replace"))

    def _room(self) -> int:
        """How many forced tokens still fit under max_tokens (and in one batch)."""
        return max(0, min(self.max_tokens - len(self.tokens), int(self.llm.n_batch) - 1))

    def _score_forced(self, forced: list[int], rows: Sequence[Logits]) -> None:
        """Scores of forced tokens, in order, once their logits exist."""
        if not forced:
            return
        scored = (
            [self._score(r, t) for r, t in zip(rows, forced, strict=True)]
            if self.e.score_forced
            else [self._unscored(t) for t in forced]
        )
        self.scores.extend(scored)

    def _unscored(self, token: int) -> TokenScore:
        text = self.shared.piece(token).decode("utf-8", errors="replace")
        return TokenScore(token=token, text=text, logprob=0.0, top_logprob=0.0, entropy=0.0)

    def _finish_forced(self, token: int, forced: list[int]) -> None:
        """The grammar is complete: forced tokens at the end need no further
        decoding unless their scores are wanted."""
        if not forced:
            return
        rows = self._eval([token, *forced[:-1]], len(forced)) if self.e.score_forced else []
        self._score_forced(forced, rows)
