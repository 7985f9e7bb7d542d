"""The private llama-cpp-python surface the engines rely on, touched one by one.

``engine/llama.py``, ``engine/guided.py`` and ``engine/prefix_cache.py`` go
below ``Llama``'s public API: the context's raw logits (``_ctx``), its batch
(``_batch``), its bookkeeping of the KV cache (``input_ids``, ``n_tokens``,
``_requires_eval``), the vocabulary handle (``_model.vocab``) and a few C
functions. None of that is promised across releases, so an upgrade that
moves any of it must fail here, in CI, and not in a user's daemon.
constraints.txt pins the version these tests last passed on; the first test
fails when the installed one differs, so a bump always reruns this file.

Every test drives a real ``Llama`` on SmolLM2-135M, built here directly
(not through our engine), so a failure names the library, not our code.
"""

from __future__ import annotations

import ctypes
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.models import fetch_model, resolve_model
from tests.conftest import REPO, TEST_THREADS

pytestmark = pytest.mark.model

llama_cpp = pytest.importorskip("llama_cpp")
PROMPT = "The kitchen light is"


@pytest.fixture(scope="module")
def llm() -> Iterator[Any]:
    fetch_model("smollm2-135m", progress=False)
    path = resolve_model("smollm2-135m").path
    yield llama_cpp.Llama(
        model_path=str(path),
        n_ctx=512,
        n_threads=TEST_THREADS,
        n_threads_batch=TEST_THREADS,
        n_gpu_layers=0,
        verbose=False,
    )


def tokens_of(llm: Any, text: str = PROMPT) -> list[int]:
    return list(llm.tokenize(text.encode("utf-8"), add_bos=True, special=True))


def raw_logits(llm: Any, row: int) -> np.ndarray:
    """What the engines read: the context's logits row as a numpy view."""
    ptr = llm._ctx.get_logits_ith(row)
    return np.ctypeslib.as_array(ptr, shape=(int(llm.n_vocab()),)).astype(np.float64)


def test_the_installed_version_is_the_pinned_one() -> None:
    pins = (REPO / "constraints.txt").read_text(encoding="utf-8")
    pinned = re.search(r"^llama[-_]cpp[-_]python==(\S+)$", pins, re.MULTILINE | re.IGNORECASE)
    assert pinned, "constraints.txt must pin llama-cpp-python"
    assert llama_cpp.__version__ == pinned.group(1), (
        "llama-cpp-python differs from constraints.txt: run this file against the new "
        "version, then update the pin"
    )


def test_public_calls_the_engines_make(llm: Any) -> None:
    assert int(llm.n_ctx()) == 512
    assert int(llm.n_vocab()) > 1000
    assert isinstance(llm.n_batch, int) and llm.n_batch >= 1
    assert isinstance(llm.metadata, dict)
    assert isinstance(llm.metadata.get("tokenizer.chat_template"), str)
    ids = tokens_of(llm)
    assert ids and all(isinstance(t, int) for t in ids)
    assert isinstance(llm.detokenize([ids[-1]], special=True), bytes)
    assert Path(llm.model_path) == resolve_model("smollm2-135m").path
    assert llm.model_params.n_gpu_layers == 0


def test_vocab_handle_and_end_of_generation(llm: Any) -> None:
    vocab = llm._model.vocab
    assert llama_cpp.llama_vocab_is_eog(vocab, llm.token_eos())
    assert not llama_cpp.llama_vocab_is_eog(vocab, tokens_of(llm)[-1])


def test_generate_leaves_the_raw_pre_grammar_logits_in_the_context(llm: Any) -> None:
    """LlamaEngine scores each yielded token from ``_ctx.get_logits_ith(-1)``:
    they must be the model's logits for that step, before the grammar mask."""
    ids = tokens_of(llm)
    stream = llm.generate(ids, temp=0.0, top_k=1, grammar=None, reset=True)
    token = next(stream)
    logits = raw_logits(llm, -1)
    stream.close()
    assert int(np.argmax(logits)) == token  # greedy: these logits chose it

    grammar = llama_cpp.LlamaGrammar.from_string('root ::= "zebra"', verbose=False)
    stream = llm.generate(ids, temp=0.0, top_k=1, grammar=grammar, reset=True)
    forced = next(stream)
    logits = raw_logits(llm, -1)
    stream.close()
    assert llm.detokenize([forced], special=True).strip().startswith(b"z")
    assert np.isfinite(logits).all(), "masked logits: the grammar ran before we read them"
    assert int(np.argmax(logits)) != forced


def test_eval_keeps_the_kv_bookkeeping_the_prefix_cache_reads(llm: Any) -> None:
    ids = tokens_of(llm)
    llm.reset()
    llm.eval(ids)
    assert int(llm.n_tokens) == len(ids)
    assert list(llm.input_ids[: llm.n_tokens]) == ids
    assert isinstance(llm._requires_eval, bool)
    assert llm._ctx.kv_cache_seq_rm(-1, 2, -1)  # keep two tokens
    llm.n_tokens = 2
    llm._ctx.kv_cache_clear()
    llm.n_tokens = 0


def test_a_batch_decoded_by_hand_matches_eval(llm: Any) -> None:
    """GuidedLlamaEngine decodes through ``_batch`` and ``_ctx.decode`` and
    keeps ``input_ids``/``n_tokens`` itself; the logits must be eval's."""
    ids = tokens_of(llm)
    llm.reset()
    llm._ctx.kv_cache_clear()
    llm.eval(ids)
    expected = raw_logits(llm, -1)

    llm._ctx.kv_cache_clear()
    llm.n_tokens = 0
    llm._batch.set_batch(batch=ids, n_past=0, logits_all=False)
    for i in range(len(ids) - 2, len(ids)):
        llm._batch.batch.logits[i] = True
    llm._ctx.decode(llm._batch)
    llm.input_ids[: len(ids)] = ids
    llm.n_tokens = len(ids)
    llm._requires_eval = False
    rows = [raw_logits(llm, i) for i in range(len(ids) - 2, len(ids))]  # by batch position
    assert np.array_equal(rows[1], expected)  # same chunks as eval: bit-identical
    assert not np.allclose(rows[0], rows[1])


def test_kv_state_files_round_trip(llm: Any, tmp_path: Path) -> None:
    ids = tokens_of(llm)
    llm.reset()
    llm._ctx.kv_cache_clear()
    llm.eval(ids)
    path = tmp_path / "prefix.kv"
    array = (llama_cpp.llama_token * len(ids))(*ids)
    assert llama_cpp.llama_state_seq_save_file(llm._ctx.ctx, str(path).encode(), 0, array, len(ids))
    llm._ctx.kv_cache_clear()
    back = (llama_cpp.llama_token * len(ids))()
    count = ctypes.c_size_t(0)
    read = llama_cpp.llama_state_seq_load_file(
        llm._ctx.ctx, str(path).encode(), 0, back, len(ids), ctypes.byref(count)
    )
    assert read and count.value == len(ids) and list(back) == ids


def test_llguidance_reads_the_vocab_handle(llm: Any) -> None:
    import llguidance.llamacpp

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "llama_token_get_attr", DeprecationWarning)
        tokenizer = llguidance.llamacpp.lltokenizer_from_vocab(
            llm._model.vocab, eos_token=[llm.token_eos()]
        )
    assert tokenizer.tokenize_str("kitchen")


def test_gpu_offload_query_exists() -> None:
    assert isinstance(bool(llama_cpp.llama_supports_gpu_offload()), bool)
