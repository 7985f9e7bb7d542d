"""The llama.cpp engine (llama-cpp-python), kept thin.

We drive ``Llama.generate`` ourselves rather than ``create_completion`` for
one reason: per-token log-probabilities without ``logits_all=True``, which
would keep n_ctx × n_vocab floats (1.2 GiB for Qwen at 2k context). After each
sampled token the context still holds the raw logits of that step, *before*
the grammar mask, which is exactly the uncertainty signal routing needs.

Prompt-prefix KV reuse comes from ``generate(reset=True)``: a repeated system
prompt and tool block is not re-read.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent.decoding.grammar import Grammar
from edge_agent.engine.base import FinishReason, Generation, Timings, TokenScore
from edge_agent.errors import EngineError, InputError

if TYPE_CHECKING:
    import llama_cpp

# llama_cpp ships no type information; grammar objects are typed as Any.


def default_threads() -> int:
    """Physical cores: hyper-threads only slow llama.cpp's matmuls down."""
    import psutil

    return max(1, psutil.cpu_count(logical=False) or os.cpu_count() or 1)


class LlamaEngine:
    """Loads a GGUF once; generates with an optional GBNF grammar at temperature 0.

    The caller is responsible for validating the file first
    (``edge_agent.models.resolve_model``); llama.cpp's loader trusts headers.
    """

    def __init__(
        self,
        model_path: Path,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
        name: str | None = None,
    ) -> None:
        import llama_cpp

        self._llama_cpp: Any = llama_cpp
        self._name = name or model_path.stem
        self.n_threads = n_threads or default_threads()
        start = time.perf_counter()
        try:
            with _quiet_stderr():
                self._llm = llama_cpp.Llama(
                    model_path=str(model_path),
                    n_ctx=n_ctx,
                    n_threads=self.n_threads,
                    n_threads_batch=self.n_threads,
                    n_gpu_layers=n_gpu_layers,
                    verbose=False,
                )
        except (ValueError, RuntimeError, OSError) as exc:
            raise EngineError(f"llama.cpp could not load {model_path}: {exc}") from exc
        self.load_s = time.perf_counter() - start
        self._grammars: dict[str, Any] = {}
        self._n_vocab = self._llm.n_vocab()

    @property
    def model_name(self) -> str:
        return self._name

    @property
    def chat_template(self) -> str | None:
        template = self._llm.metadata.get("tokenizer.chat_template")
        return template if isinstance(template, str) else None

    @property
    def n_ctx(self) -> int:
        return int(self._llm.n_ctx())

    @property
    def llama(self) -> llama_cpp.Llama:
        """The underlying ``Llama``, for benchmarks that compare against it."""
        return self._llm

    def count_tokens(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=True))

    def generate(
        self,
        prompt: str,
        *,
        grammar: Grammar | None = None,
        max_tokens: int = 256,
        draft: str | None = None,
    ) -> Generation:
        del draft  # llama.cpp's sampler checks no guess
        tokens = self._llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
        if len(tokens) + max_tokens > self.n_ctx:
            raise InputError(
                f"prompt is {len(tokens)} tokens; with {max_tokens} to generate it exceeds "
                f"the context of {self.n_ctx}",
                hint="shorten the conversation or pass fewer tools",
            )
        return self._run(tokens, self._grammar(grammar), max_tokens)

    def _grammar(self, grammar: Grammar | None) -> Any | None:
        if grammar is None:
            return None
        if grammar.key not in self._grammars:
            lg = self._llama_cpp.LlamaGrammar.from_string(grammar.text, verbose=False)
            self._grammars[grammar.key] = lg
        return self._grammars[grammar.key]

    def _run(self, tokens: list[int], grammar: Any | None, max_tokens: int) -> Generation:
        scores: list[TokenScore] = []
        out = bytearray()
        finish: FinishReason = "length"
        start = time.perf_counter()
        first_at = start
        stream = self._llm.generate(tokens, temp=0.0, top_k=1, grammar=grammar, reset=True)
        for token in stream:
            if not scores and not out:
                first_at = time.perf_counter()
            if self._is_eog(token):
                finish = "stop"
                break
            piece = self._llm.detokenize([token], special=True)
            out += piece
            scores.append(self._score(token, piece))
            if len(scores) >= max_tokens:
                break
        stream.close()
        end = time.perf_counter()
        if first_at == start:
            first_at = end
        timings = Timings(load_s=self.load_s, prefill_s=first_at - start, decode_s=end - first_at)
        text = out.decode("utf-8", errors="replace")
        return Generation(text, tuple(scores), len(tokens), finish, timings)

    def _is_eog(self, token: int) -> bool:
        vocab = self._llm._model.vocab
        return bool(self._llama_cpp.llama_vocab_is_eog(vocab, token))

    def _score(self, token: int, piece: bytes) -> TokenScore:
        """log p(token) under the raw logits that produced it (pre-grammar)."""
        ptr: Any = self._llm._ctx.get_logits_ith(-1)
        logits = np.ctypeslib.as_array(ptr, shape=(self._n_vocab,)).astype(np.float64)
        top = float(logits.max())
        shifted = logits - top
        log_z = math.log(float(np.exp(shifted).sum()))
        logprobs = shifted - log_z
        probs = np.exp(logprobs)
        entropy = float(-(probs * logprobs).sum())
        return TokenScore(
            token=token,
            text=piece.decode("utf-8", errors="replace"),
            logprob=float(logprobs[token]),
            top_logprob=float(-log_z),
            entropy=entropy,
        )


@contextlib.contextmanager
def _quiet_stderr() -> Any:
    """llama.cpp prints loader chatter straight to fd 2; keep the CLI clean."""
    if os.environ.get("EDGE_AGENT_LLAMA_VERBOSE"):
        yield
        return
    try:
        fd = os.dup(2)
    except (OSError, io.UnsupportedOperation):
        yield
        return
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(fd, 2)
            os.close(fd)
