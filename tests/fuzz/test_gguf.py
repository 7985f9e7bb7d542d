"""Door: GGUF headers (``edge_agent.gguf_check.validate_gguf``).

Headers are assembled from parts (magic, version, counts, key/value pairs of
every value type, tensor infos, padding), with claimed lengths and counts
that sometimes lie, then sometimes mutated; raw bytes and flipped real
headers go in too. Every file must give a ``GGUFInfo`` or a
:class:`~edge_agent.errors.ModelError` (``GGUFFormatError`` for a bad
header); nothing else may escape, and a header can never make the reader
allocate or loop past its limits (the per-input deadline)."""

from __future__ import annotations

import struct
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from edge_agent.errors import ModelError
from edge_agent.gguf_check import GGUFInfo, GGUFLimits, validate_gguf
from tests.fuzz.conftest import FUZZ, Door
from tests.fuzz.strategies import mutated

SCALAR_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
                  10: "<Q", 11: "<q", 12: "<d"}  # fmt: skip
KEYS = ["general.architecture", "general.name", "general.alignment", "llama.context_length",
        "tokenizer.chat_template", "tokenizer.ggml.tokens", "x"]  # fmt: skip
# Small limits, so generated headers reach every limit check quickly.
LIMITS = GGUFLimits(max_kv=64, max_tensors=64, max_key_bytes=64, max_string_bytes=256,
                    max_array_len=64, max_header_bytes=16_384)  # fmt: skip


def u32(n: int) -> bytes:
    return struct.pack("<I", n % 2**32)


def u64(n: int) -> bytes:
    return struct.pack("<Q", n % 2**64)


@st.composite
def gstring(draw: st.DrawFn, texts: st.SearchStrategy[bytes]) -> bytes:
    """A u64 length and bytes; the length lies one time in eight."""
    data = draw(texts)
    lie = draw(st.integers(0, 7)) == 0
    claimed = draw(st.sampled_from([0, len(data) + 1, 2**63, 2**64 - 1])) if lie else len(data)
    return u64(claimed) + data


TEXT = st.one_of(st.sampled_from(KEYS).map(str.encode), st.binary(max_size=24))


@st.composite
def value(draw: st.DrawFn, depth: int = 0) -> tuple[int, bytes]:
    vtype = draw(st.one_of(st.integers(0, 12), st.integers(0, 2**32 - 1)))
    if vtype in SCALAR_FORMATS:
        fmt = SCALAR_FORMATS[vtype]
        size = struct.calcsize(fmt)
        return vtype, draw(st.binary(min_size=size, max_size=size))
    if vtype == 8:
        return vtype, draw(gstring(TEXT))
    if vtype == 9 and depth < 3:
        items = draw(st.lists(value(depth + 1), max_size=4))
        etype = items[0][0] if items else draw(st.integers(0, 12))
        count = len(items) if draw(st.integers(0, 5)) else draw(st.integers(0, 2**64 - 1))
        return vtype, u32(etype) + u64(count) + b"".join(v for _, v in items)
    return vtype, draw(st.binary(max_size=8))


@st.composite
def tensor_info(draw: st.DrawFn) -> bytes:
    dims = draw(st.lists(st.one_of(st.integers(0, 64), st.integers(0, 2**64 - 1)), max_size=5))
    n_dims = len(dims) if draw(st.integers(0, 5)) else draw(st.integers(0, 2**32 - 1))
    ggml_type = draw(st.one_of(st.integers(0, 40), st.integers(0, 2**32 - 1)))
    offset = draw(st.one_of(st.integers(0, 4096).map(lambda n: n * 32), st.integers(0, 2**64 - 1)))
    name = draw(gstring(st.one_of(st.just(b"w"), st.binary(max_size=70))))
    return name + u32(n_dims) + b"".join(u64(d) for d in dims) + u32(ggml_type) + u64(offset)


@st.composite
def headers(draw: st.DrawFn) -> bytes:
    magic = draw(st.sampled_from([b"GGUF", b"GGUF", b"GGUF", b"FUGG", b"GGU"]))
    version = draw(st.sampled_from([3, 3, 2, 1, 0x03000000, 7]))
    kvs = draw(st.lists(st.tuples(gstring(TEXT), value()), max_size=6))
    tensors = draw(st.lists(tensor_info(), max_size=4))
    n_kv = len(kvs) if draw(st.integers(0, 5)) else draw(st.integers(0, 2**64 - 1))
    n_t = len(tensors) if draw(st.integers(0, 5)) else draw(st.integers(0, 2**64 - 1))
    blob = magic + u32(version) + u64(n_t) + u64(n_kv)
    blob += b"".join(key + u32(vtype) + raw for key, (vtype, raw) in kvs)
    blob += b"".join(tensors)
    blob += b"\0" * draw(st.integers(0, 64)) + draw(st.binary(max_size=256))
    return draw(mutated(blob)) if draw(st.integers(0, 3)) == 0 else blob


FILES = st.one_of(headers(), headers(), headers(), st.binary(max_size=512))


def test_gguf_headers(door: Door, tmp_path: Path) -> None:
    path = tmp_path / "fuzz.gguf"

    @FUZZ
    @given(blob=FILES, small=st.booleans())
    def one(blob: bytes, small: bool) -> None:
        path.write_bytes(blob)
        limits = LIMITS if small else GGUFLimits()
        result = door.run(lambda: validate_gguf(path, limits), ModelError)
        assert isinstance(result, GGUFInfo | ModelError)
        if isinstance(result, ModelError):
            assert result.message and "\n" not in result.message.strip()
            words = result.message.partition(": ")[2].split()
            door.tally(" ".join(words[:2]))

    one()
