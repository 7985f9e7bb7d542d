"""KV-cache reuse of the prompt prefix, in memory and on disk.

Every request with the same tools starts with the same tokens: the system
prompt and the tool block. llama.cpp keeps the keys and values of evaluated
tokens, so a request whose prompt starts like the previous one only has to
evaluate the new suffix (:func:`reuse_prefix`). On a Raspberry Pi the tool
block alone costs tens of seconds to read, so :class:`PrefixCache` also stores
its KV state on disk (``llama_state_seq_save_file``), keyed by the model file,
the tools, the chat template and the prefix tokens themselves, and a restarted
process loads it instead of evaluating it again.

Limits, said plainly: a state file is only valid for the exact model file and
llama.cpp build that wrote it. The key includes both, and a file llama.cpp
refuses to load is recomputed, never trusted. Files are not signed: anyone
who can write the cache folder can change what the model has "read".
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from edge_agent.decoding.prompts import Message, build_prompt, user_message
from edge_agent.decoding.schema import ToolSpec, schema_hash
from edge_agent.errors import EngineError

PrefixSource = Literal["memory", "disk", "computed"]

# Two user messages that differ in their first character: the rendered
# prompts agree exactly up to where the user's text starts.
_PROBES = ("a", "z")


TokenIds = Sequence[int] | npt.NDArray[np.intc]


def common_prefix_len(a: TokenIds, b: TokenIds) -> int:
    """How many leading tokens two sequences share."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(diff[0]) if diff.size else n


def reuse_prefix(llm: Any, tokens: Sequence[int]) -> int:
    """Keep the cached KV of the longest common prefix of ``tokens``; drop the rest.

    At most ``len(tokens) - 1`` tokens are kept, so at least one is evaluated
    and the logits are fresh. Returns the number of reused tokens; the caller
    evaluates ``tokens[n:]``. ``llm`` is a ``llama_cpp.Llama`` whose
    ``input_ids``/``n_tokens`` describe its KV cache (as ``Llama.eval`` keeps
    them), so the GBNF engine and the guided engine can share one model.
    """
    keep = min(common_prefix_len(llm.input_ids[: llm.n_tokens], tokens), len(tokens) - 1)
    truncate(llm, max(keep, 0))
    return int(llm.n_tokens)


def truncate(llm: Any, keep: int) -> None:
    """Forget the KV cache beyond its first ``keep`` tokens."""
    keep = min(keep, int(llm.n_tokens))
    if not llm._ctx.kv_cache_seq_rm(-1, keep, -1):
        keep = 0
        llm._ctx.kv_cache_clear()
    llm.n_tokens = keep


def stable_prefix(
    llm: Any,
    template: str | None,
    tools: Sequence[ToolSpec],
    *,
    system: str | None = None,
    history: Sequence[Message] = (),
) -> list[int]:
    """The tokens every request with these tools and this system prompt starts with.

    Two prompts are rendered that differ only in the user's text; their common
    token prefix is what the KV cache can keep across requests.
    """
    prompts = [
        build_prompt(template, [*history, user_message(p)], tools, system=system) for p in _PROBES
    ]
    a, b = (llm.tokenize(p.encode("utf-8"), add_bos=True, special=True) for p in prompts)
    return list(a[: common_prefix_len(a, b)])


def model_identity(llm: Any) -> str:
    """What a KV state depends on: the model file and the llama.cpp build."""
    import llama_cpp

    path = Path(llm.model_path)
    stat = path.stat()
    return f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}:{llama_cpp.__version__}"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("EDGE_AGENT_KV_DIR", Path(base) / "edge-agent" / "kv"))


@dataclass(frozen=True)
class WarmPrefix:
    """What :meth:`PrefixCache.warm` did: where the prefix KV came from and how long it took."""

    key: str
    n_tokens: int
    source: PrefixSource
    seconds: float


class PrefixCache:
    """KV states of stable prompt prefixes, one file per (model, tools, template, tokens).

    Use :meth:`warm` once after loading a model (or when the tool set
    changes); later ``generate`` calls then reuse the prefix through the
    ordinary in-memory prefix match.
    """

    def __init__(self, directory: Path | None = None, *, keep: int = 8) -> None:
        self.directory = directory or default_cache_dir()
        self.keep = keep

    @staticmethod
    def key(llm: Any, tokens: Sequence[int], *, tools: str = "", template: str = "") -> str:
        """``<model>-<tools>-<template>-<tokens>``, each a short hash."""
        model = _short(model_identity(llm))
        token_bytes = np.asarray(tokens, dtype=np.int32).tobytes()
        return f"{model}-{tools[:8] or 'none'}-{template[:8] or 'none'}-{_short(token_bytes)}"

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.kv"

    def warm_tools(
        self,
        llm: Any,
        template: str | None,
        tools: Sequence[ToolSpec],
        *,
        system: str | None = None,
    ) -> WarmPrefix:
        """Make the system prompt and tool block of these tools resident in the KV cache."""
        tokens = stable_prefix(llm, template, tools, system=system)
        template_hash = hashlib.sha256((template or "").encode()).hexdigest()
        key = self.key(llm, tokens, tools=schema_hash(tools, system or ""), template=template_hash)
        return self.warm(llm, tokens, key)

    def warm(self, llm: Any, tokens: Sequence[int], key: str) -> WarmPrefix:
        """Make the KV state of ``tokens`` resident: from memory, from disk, or by
        evaluating them; a state not on disk yet is saved."""
        start = time.perf_counter()
        if not tokens:
            return WarmPrefix(key, 0, "memory", 0.0)
        path = self.path(key)
        source = self._restore(llm, tokens, path)
        if not path.is_file():
            truncate(llm, len(tokens))  # the file must hold exactly the prefix
            self._save(llm, path, tokens)
            self._prune()
        elif source == "disk":
            os.utime(path)  # recently used: the last to be pruned
        return WarmPrefix(key, len(tokens), source, time.perf_counter() - start)

    def _restore(self, llm: Any, tokens: Sequence[int], path: Path) -> PrefixSource:
        resident = common_prefix_len(llm.input_ids[: llm.n_tokens], tokens)
        if resident == len(tokens):
            return "memory"
        if path.is_file() and self._load(llm, path, tokens):
            return "disk"
        truncate(llm, resident)
        llm.eval(list(tokens[resident:]))
        return "computed"

    def _prune(self) -> None:
        """Keep the ``keep`` most recently used states: each is tens of MB
        (a 0.5B model's KV for a 12-tool block is about 20 MB), and every
        change to the tools or the model leaves one behind."""
        states = sorted(self.directory.glob("*.kv"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in states[self.keep :]:
            old.unlink(missing_ok=True)

    def _save(self, llm: Any, path: Path, tokens: Sequence[int]) -> None:
        import llama_cpp

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        array = (llama_cpp.llama_token * len(tokens))(*tokens)
        written = llama_cpp.llama_state_seq_save_file(
            llm._ctx.ctx, str(tmp).encode(), 0, array, len(tokens)
        )
        if not written:
            tmp.unlink(missing_ok=True)
            raise EngineError(f"llama.cpp could not write the KV state to {tmp}")
        tmp.replace(path)

    def _load(self, llm: Any, path: Path, tokens: Sequence[int]) -> bool:
        """Restore a saved prefix; False (and an empty cache) if it does not fit."""
        import llama_cpp

        capacity = len(tokens)
        array = (llama_cpp.llama_token * capacity)()
        count = ctypes.c_size_t(0)
        truncate(llm, 0)
        read = llama_cpp.llama_state_seq_load_file(
            llm._ctx.ctx, str(path).encode(), 0, array, capacity, ctypes.byref(count)
        )
        if not read or count.value != capacity or list(array) != list(tokens):
            llm._ctx.kv_cache_clear()
            return False
        llm.input_ids[:capacity] = tokens
        llm.n_tokens = capacity
        llm._requires_eval = True  # the KV is back, the logits are not
        return True


def _short(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return hashlib.sha256(raw).hexdigest()[:12]
