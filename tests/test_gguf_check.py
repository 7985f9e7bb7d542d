"""Tests for the bounded GGUF header validator.

Valid files come from ``gguf.GGUFWriter``; hostile ones are assembled byte by
byte with :mod:`struct` so that every claimed length and count can lie.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.errors import GGUFFormatError, ModelNotFoundError
from edge_agent.gguf_check import GGUFLimits, validate_gguf

CHAT_TEMPLATE = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"

# GGUF value types and ggml tensor types used below.
T_U8, T_U32, T_I32, T_STR, T_ARR, T_U64 = 0, 4, 5, 8, 9, 10
F32, Q4_0 = 0, 2


# --- valid files from gguf.GGUFWriter ----------------------------------------


def write_valid(path: Path) -> Path:
    """A small but realistic model file: kv pairs, a vocab array, two F32 tensors."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-test")
    w.add_context_length(2048)
    w.add_block_count(1)
    w.add_chat_template(CHAT_TEMPLATE)
    w.add_token_list(["<s>", "</s>", "hello", "world"])
    w.add_array("tokenizer.ggml.token_type", [1, 3, 1, 1])
    w.add_float32("llama.rope.freq_base", 10000.0)
    w.add_bool("tokenizer.ggml.add_bos_token", True)
    w.add_tensor("token_embd.weight", np.arange(32, dtype=np.float32).reshape(4, 8))
    w.add_tensor("output_norm.weight", np.ones(8, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def valid_file(tmp_path: Path) -> Path:
    return write_valid(tmp_path / "model.gguf")


def test_valid_file_info(valid_file: Path) -> None:
    info = validate_gguf(valid_file)
    assert info.version == 3
    assert info.n_tensors == 2
    assert info.architecture == "llama"
    assert info.name == "tiny-test"
    assert info.context_length == 2048
    assert info.chat_template == CHAT_TEMPLATE
    assert info.alignment == 32
    assert info.file_size == valid_file.stat().st_size
    assert info.data_offset % 32 == 0
    assert info.n_kv == len(info.metadata)
    assert info.metadata["llama.block_count"] == 1
    assert info.metadata["tokenizer.ggml.add_bos_token"] is True
    assert info.metadata["tokenizer.ggml.tokens"] == "<array of 4 str>"
    assert info.metadata["tokenizer.ggml.token_type"] == "<array of 4 i32>"


def test_agrees_with_gguf_reader(valid_file: Path) -> None:
    reader = gguf.GGUFReader(str(valid_file))
    info = validate_gguf(valid_file)
    assert info.data_offset == reader.data_offset
    assert info.n_tensors == len(reader.tensors)
    assert set(info.metadata) == {k for k in reader.fields if not k.startswith("GGUF.")}


def test_version_2_is_accepted(valid_file: Path) -> None:
    blob = bytearray(valid_file.read_bytes())
    blob[4:8] = struct.pack("<I", 2)
    valid_file.write_bytes(bytes(blob))
    assert validate_gguf(valid_file).version == 2


def test_custom_alignment(tmp_path: Path) -> None:
    w = gguf.GGUFWriter(str(tmp_path / "a.gguf"), "llama")
    w.add_custom_alignment(64)
    w.add_tensor("a", np.ones(16, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    info = validate_gguf(tmp_path / "a.gguf")
    assert info.alignment == 64
    assert info.data_offset % 64 == 0
    assert info.context_length is None
    assert info.chat_template is None


def test_tighter_limits_reject_a_valid_file(valid_file: Path) -> None:
    with pytest.raises(GGUFFormatError, match=r"tokenizer\.chat_template"):
        validate_gguf(valid_file, GGUFLimits(max_string_bytes=16))
    with pytest.raises(GGUFFormatError, match="header too large"):
        validate_gguf(valid_file, GGUFLimits(max_header_bytes=64))


def test_large_vocabulary_crosses_buffer_boundaries(tmp_path: Path) -> None:
    """A vocabulary far larger than the reader's buffer, with strings of every length."""
    tokens = [f"tok{i}" + "x" * (i % 97) for i in range(30_000)]
    w = gguf.GGUFWriter(str(tmp_path / "v.gguf"), "llama")
    w.add_token_list(tokens)
    w.add_chat_template(CHAT_TEMPLATE)
    w.add_tensor("a", np.ones(8, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    info = validate_gguf(tmp_path / "v.gguf")
    assert info.metadata["tokenizer.ggml.tokens"] == "<array of 30000 str>"
    assert info.chat_template == CHAT_TEMPLATE
    with pytest.raises(GGUFFormatError, match="header too large"):
        validate_gguf(tmp_path / "v.gguf", GGUFLimits(max_header_bytes=100_000))
    with pytest.raises(GGUFFormatError, match=r"string #5 in array .* claims 9 bytes \(limit 8\)"):
        validate_gguf(tmp_path / "v.gguf", GGUFLimits(max_string_bytes=8))


def test_bad_string_deep_in_a_vocabulary(tmp_path: Path) -> None:
    """The 20,000th string lies past the first buffer load; its lie is still caught."""
    good = b"".join(gstr(f"token{i}") for i in range(20_000))
    body = good + gstr("", claimed=2**33)
    blob = build(kvs=[kv("tokenizer.ggml.tokens", T_ARR, arr(T_STR, 20_001, body))])
    (tmp_path / "m.gguf").write_bytes(blob)
    with pytest.raises(
        GGUFFormatError,
        match=re.escape("string #20000 in array at key 'tokenizer.ggml.tokens' claims 8589934592"),
    ):
        validate_gguf(tmp_path / "m.gguf")


# --- hostile files, byte by byte ------------------------------------------------


def gstr(text: str | bytes, claimed: int | None = None) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw) if claimed is None else claimed) + raw


def kv(key: str | bytes, vtype: int, payload: bytes, key_len: int | None = None) -> bytes:
    return gstr(key, key_len) + struct.pack("<I", vtype) + payload


def kv_str(key: str, value: str, claimed: int | None = None) -> bytes:
    return kv(key, T_STR, gstr(value, claimed))


def kv_u32(key: str, value: int) -> bytes:
    return kv(key, T_U32, struct.pack("<I", value))


def arr(elem_type: int, count: int, body: bytes = b"") -> bytes:
    return struct.pack("<IQ", elem_type, count) + body


def tinfo(name: str | bytes, dims: Sequence[int], ggml_type: int = F32, offset: int = 0) -> bytes:
    shape = struct.pack(f"<{len(dims)}Q", *dims)
    return gstr(name) + struct.pack("<I", len(dims)) + shape + struct.pack("<IQ", ggml_type, offset)


def build(
    kvs: Sequence[bytes] = (kv_str("general.architecture", "llama"),),
    tensors: Sequence[bytes] = (tinfo("a", [8]),),
    data: bytes = bytes(32),
    magic: bytes = b"GGUF",
    **over: int,
) -> bytes:
    """A GGUF file with arbitrary claims; ``over`` overrides version, n_tensors or n_kv."""
    counts = (over.get("n_tensors", len(tensors)), over.get("n_kv", len(kvs)))
    head = magic + struct.pack("<IQQ", over.get("version", 3), *counts)
    header = head + b"".join(kvs) + b"".join(tensors)
    return header + bytes(-len(header) % 32) + data


def test_handcrafted_baseline_is_valid(tmp_path: Path) -> None:
    """The builder's defaults make a valid file, so each hostile case fails for its own reason."""
    path = tmp_path / "model.gguf"
    path.write_bytes(build())
    info = validate_gguf(path)
    assert (info.architecture, info.n_tensors, info.n_kv) == ("llama", 1, 1)
    path.write_bytes(build(tensors=[tinfo("a", [8]), tinfo("b", [32], Q4_0, 32)], data=bytes(64)))
    assert validate_gguf(path).n_tensors == 2


def test_nested_arrays_share_one_element_budget(tmp_path: Path) -> None:
    inner = arr(T_U8, 2, b"\x01\x02")
    path = tmp_path / "model.gguf"
    path.write_bytes(build(kvs=[kv("x", T_ARR, arr(T_ARR, 2, inner + inner))]))
    assert validate_gguf(path).metadata["x"] == "<array of 2 array>"
    with pytest.raises(GGUFFormatError, match="nested arrays at key 'x' hold more than 3 elements"):
        validate_gguf(path, GGUFLimits(max_array_len=3))


def big_endian() -> bytes:
    return b"GGUF" + struct.pack(">IQQ", 3, 0, 0)


HOSTILE = [
    pytest.param(build(magic=b"GGML"), "not a GGUF file (magic b'GGML'", id="bad-magic"),
    pytest.param(b"GG", "not a GGUF file (only 2 bytes)", id="two-bytes"),
    pytest.param(b"GGUF\x03\x00", "truncated: version", id="cut-in-version"),
    pytest.param(build(version=1), "GGUF version 1 is not supported", id="v1"),
    pytest.param(build(version=7), "unsupported GGUF version 7", id="v7"),
    pytest.param(big_endian(), "big-endian GGUF is not supported", id="big-endian"),
    pytest.param(build(n_kv=2**40), "claims 1099511627776 metadata pairs (limit", id="huge-n-kv"),
    pytest.param(
        build(n_tensors=2**40), "claims 1099511627776 tensors (limit", id="huge-n-tensors"
    ),
    pytest.param(build(n_kv=9000), "which need at least", id="n-kv-beyond-file"),
    pytest.param(
        build(kvs=[kv_str("general.name", "x", claimed=2**30)]),
        "metadata string at key 'general.name' claims 1073741824 bytes (limit 1048576)",
        id="string-1gib",
    ),
    pytest.param(
        build(kvs=[kv_str("general.name", "x", claimed=100_000)], tensors=[], data=b""),
        "truncated: metadata string at key 'general.name' claims 100000 bytes but only",
        id="string-past-eof",
    ),
    pytest.param(
        build(kvs=[kv("general.name", T_U8, b"\x01", key_len=2**62)]),
        "metadata key #0 claims 4611686018427387904 bytes (limit",
        id="huge-key-length",
    ),
    pytest.param(build(kvs=[kv(b"\xff\xfe", T_U8, b"\x01")]), "not valid UTF-8", id="bad-key"),
    pytest.param(build(kvs=[kv("", T_U8, b"\x01")]), "metadata key #0 is empty", id="empty-key"),
    pytest.param(
        build(kvs=[kv_u32("a.b", 1), kv_u32("a.b", 2)]),
        "duplicate metadata key 'a.b'",
        id="dup-key",
    ),
    pytest.param(
        build(kvs=[kv("general.name", T_STR, gstr(b"\xc3\x28"))]),
        "metadata string at key 'general.name' is not valid UTF-8",
        id="bad-utf8-value",
    ),
    pytest.param(build(kvs=[kv("x", 13, b"\x00")]), "unknown value type 13", id="value-type-13"),
    pytest.param(
        build(kvs=[kv("tokenizer.ggml.tokens", T_ARR, arr(T_STR, 2**40))]),
        "claims 1099511627776 elements (limit",
        id="array-2-40",
    ),
    pytest.param(
        build(kvs=[kv("x", T_ARR, arr(T_U32, 1_000_000))]),
        "claims 1000000 elements (at least 4000000 bytes) but only",
        id="array-past-eof",
    ),
    pytest.param(build(kvs=[kv("x", T_ARR, arr(13, 1))]), "unknown element type 13", id="arr-13"),
    pytest.param(
        build(kvs=[kv("x", T_ARR, arr(T_STR, 2, gstr("ok") + gstr("", claimed=2**31)))]),
        "string #1 in array at key 'x' claims 2147483648 bytes (limit",
        id="array-string-huge",
    ),
    pytest.param(
        build(kvs=[kv("x", T_ARR, arr(T_ARR, 1, arr(T_ARR, 1, arr(T_U8, 1, b"\x00"))))]),
        "nests arrays deeper than 2 levels",
        id="array-depth-3",
    ),
    pytest.param(
        build(kvs=[kv("general.alignment", T_U32, struct.pack("<I", 48))]),
        "general.alignment 48 is not a power of two",
        id="alignment-48",
    ),
    pytest.param(
        build(kvs=[kv("general.alignment", T_U32, struct.pack("<I", 0))]),
        "general.alignment 0 is not a power of two",
        id="alignment-0",
    ),
    pytest.param(
        build(kvs=[kv("general.alignment", T_U32, struct.pack("<I", 1 << 21))]),
        "general.alignment 2097152 is not a power of two up to 1048576",
        id="alignment-2mib",
    ),
    pytest.param(
        build(kvs=[kv("general.alignment", T_U64, struct.pack("<Q", 32))]),
        "general.alignment has type u64, expected u32",
        id="alignment-u64",
    ),
    pytest.param(
        build(kvs=[kv_u32("general.architecture", 1)]),
        "general.architecture has type u32, expected str",
        id="arch-not-str",
    ),
    pytest.param(
        build(kvs=[kv_str("general.architecture", "llama"), kv_str("llama.context_length", "x")]),
        "llama.context_length has type str, expected an integer",
        id="ctx-not-int",
    ),
    pytest.param(build(tensors=[tinfo("a", [8], 99)]), "unknown ggml type 99", id="ggml-type-99"),
    pytest.param(build(tensors=[tinfo("a", [8] * 5)]), "has 5 dimensions", id="n-dims-5"),
    pytest.param(build(tensors=[tinfo("a", [])]), "has 0 dimensions", id="n-dims-0"),
    pytest.param(build(tensors=[tinfo("a", [8, 0])]), "has a zero dimension", id="zero-dim"),
    pytest.param(
        build(tensors=[tinfo("a", [2**32, 2**32, 2**32])]),
        "overflows: more than 2**62 elements",
        id="dims-overflow",
    ),
    pytest.param(
        build(tensors=[tinfo("a", [33], Q4_0)]),
        "33 elements per row, not a multiple of the Q4_0 block size 32",
        id="partial-block",
    ),
    pytest.param(build(tensors=[tinfo("a", [8], offset=4)]), "not a multiple of 32", id="misalign"),
    pytest.param(
        build(tensors=[tinfo("a", [8], offset=2**40)]),
        "starts at byte",
        id="offset-past-eof",
    ),
    pytest.param(
        build(tensors=[tinfo("a", [8])], data=bytes(16)),
        "truncated: tensor 'a' ends at byte",
        id="tensor-past-eof",
    ),
    pytest.param(
        build(tensors=[tinfo("a", [16]), tinfo("b", [8], offset=32)], data=bytes(64)),
        "tensors 'a' and 'b' overlap",
        id="overlap",
    ),
    pytest.param(
        build(tensors=[tinfo("a", [8]), tinfo("a", [8], offset=32)], data=bytes(64)),
        "duplicate tensor name 'a'",
        id="dup-tensor",
    ),
    pytest.param(build(tensors=[tinfo("", [8])]), "tensor #0 has an empty name", id="no-name"),
    pytest.param(
        build(tensors=[tinfo("n" * 64, [8])]),
        "name of tensor #0 claims 64 bytes (limit 63)",
        id="long-name",
    ),
    pytest.param(
        build(tensors=[tinfo("a", [8])], n_tensors=2),
        "tensor #1 has an empty name",
        id="missing-tensor-info",
    ),
]


class SpyFile(io.BufferedReader):
    """Records the largest single read, to prove no claimed length reaches read()."""

    largest = 0

    def read(self, n: int | None = -1) -> bytes:
        assert n is not None and n >= 0, "unbounded read"
        SpyFile.largest = max(SpyFile.largest, n)
        return super().read(n)


@pytest.mark.parametrize(("blob", "expected"), HOSTILE)
def test_hostile_file_is_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, blob: bytes, expected: str
) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(blob)
    SpyFile.largest = 0
    real_open = Path.open

    def spy_open(p: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if mode == "rb":
            return SpyFile(io.FileIO(p, "r"))
        return real_open(p, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", spy_open)
    with pytest.raises(GGUFFormatError, match=re.escape(expected)) as err:
        validate_gguf(path)
    assert str(err.value).startswith("model.gguf: ")
    assert "\n" not in str(err.value)
    assert SpyFile.largest <= max(len(blob), 1)


def test_truncated_in_header(valid_file: Path) -> None:
    blob = valid_file.read_bytes()
    info = validate_gguf(valid_file)
    for cut in (5, 20, 60, info.data_offset // 2, info.data_offset - 40):
        valid_file.write_bytes(blob[:cut])
        with pytest.raises(GGUFFormatError, match="truncated"):
            validate_gguf(valid_file)


def test_truncated_in_data(valid_file: Path) -> None:
    blob = valid_file.read_bytes()
    valid_file.write_bytes(blob[:-10])
    with pytest.raises(GGUFFormatError, match=r"truncated: tensor '.+' ends at byte \d+ but"):
        validate_gguf(valid_file)


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "e.gguf").write_bytes(b"")
    with pytest.raises(GGUFFormatError, match="empty"):
        validate_gguf(tmp_path / "e.gguf")


def test_directory(tmp_path: Path) -> None:
    (tmp_path / "d.gguf").mkdir()
    with pytest.raises(GGUFFormatError, match="is a directory"):
        validate_gguf(tmp_path / "d.gguf")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs mkfifo")
def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "p.gguf")
    with pytest.raises(GGUFFormatError, match="not a regular file"):
        validate_gguf(tmp_path / "p.gguf")


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="no such model file"):
        validate_gguf(tmp_path / "nope.gguf")
    with pytest.raises(ModelNotFoundError):
        validate_gguf(tmp_path / "nope" / "x.gguf")


# --- fuzzing --------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_corruption_only_raises_format_errors(fuzz_dir: Path, data: st.DataObject) -> None:
    source = fuzz_dir / "source.gguf"
    if not source.exists():
        write_valid(source)
    blob = bytearray(source.read_bytes())
    header_end = validate_gguf(source).data_offset
    flips = data.draw(st.lists(st.tuples(st.integers(0, header_end - 1), st.integers(1, 255))))
    for index, mask in flips:
        blob[index] ^= mask
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(blob))))
    target = fuzz_dir / "mutant.gguf"
    target.write_bytes(bytes(blob[:cut]))
    with contextlib.suppress(GGUFFormatError):
        validate_gguf(target)
