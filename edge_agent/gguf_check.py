"""Bounded validation of a GGUF model header before llama.cpp ever opens it.

llama.cpp's GGUF loader has had several memory-safety bugs (CVE-2024-21802,
CVE-2025-49847, CVE-2025-53630) triggered by hostile headers: gigabyte-long
metadata strings, huge counts, tensor offsets outside the file. The ``gguf``
Python package does not help here: its reader memory-maps the file and trusts
the header. So edge-agent streams the header itself with :mod:`struct`, and
checks every claimed length against both a hard limit and the bytes actually
left in the file *before* acting on it. Only the header is read; tensor data
is never touched, so validating a multi-gigabyte model takes milliseconds.

The GGUF layout (v2 and v3, little-endian)::

    magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
    n_kv      x  (string key, u32 value_type, value)
    n_tensors x  (string name, u32 n_dims, u64 dims[n_dims], u32 ggml_type, u64 offset)
    padding to ``general.alignment`` | tensor data (offsets are relative to here)

where a string is a u64 byte length followed by UTF-8 bytes, and an array
value is a u32 element type, a u64 length, then the elements.
"""

from __future__ import annotations

import functools
import os
import stat
import struct
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import BinaryIO, NoReturn

from edge_agent.errors import GGUFFormatError, ModelError, ModelNotFoundError

__all__ = ["DEFAULT_LIMITS", "GGUFInfo", "GGUFLimits", "validate_gguf"]

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_ALIGNMENT = 1 << 20
MAX_ELEMENTS = 1 << 62
MAX_ARRAY_DEPTH = 2

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

_TYPE_UINT32 = 4
_TYPE_STRING = 8
_TYPE_ARRAY = 9
_TYPE_NAMES = {
    0: "u8",
    1: "i8",
    2: "u16",
    3: "i16",
    4: "u32",
    5: "i32",
    6: "f32",
    7: "bool",
    8: "str",
    9: "array",
    10: "u64",
    11: "i64",
    12: "f64",
}
_SCALAR_FORMATS = {
    0: struct.Struct("<B"),
    1: struct.Struct("<b"),
    2: struct.Struct("<H"),
    3: struct.Struct("<h"),
    4: struct.Struct("<I"),
    5: struct.Struct("<i"),
    6: struct.Struct("<f"),
    7: struct.Struct("<?"),
    10: struct.Struct("<Q"),
    11: struct.Struct("<q"),
    12: struct.Struct("<d"),
}
_INT_TYPES = frozenset({0, 1, 2, 3, 4, 5, 10, 11})
# The fewest bytes one element of each value type can occupy in the file: a
# string is at least its u64 length, a nested array its u32 type + u64 length.
_MIN_VALUE_BYTES = {t: s.size for t, s in _SCALAR_FORMATS.items()} | {
    _TYPE_STRING: 8,
    _TYPE_ARRAY: 12,
}
# A key/value pair: u64 length + 1 key byte + u32 type + 1 value byte.
_MIN_KV_BYTES = 8 + 1 + 4 + 1
# A tensor info: u64 length + 1 name byte + u32 n_dims + one u64 dim + u32 type + u64 offset.
_MIN_TENSOR_INFO_BYTES = 8 + 1 + 4 + 8 + 4 + 8


@dataclass(frozen=True)
class GGUFLimits:
    """Hard ceilings on what a header may claim.

    The defaults are far above any real model (real ones have < 2,000 tensors,
    < 100 metadata pairs, ~10 KB chat templates and vocabularies of < 300k
    tokens) yet low enough that a hostile header cannot make us allocate or
    loop without bound.
    """

    max_kv: int = 10_000
    max_tensors: int = 100_000
    max_key_bytes: int = 1024
    max_string_bytes: int = 1 << 20
    max_array_len: int = 4_000_000
    max_header_bytes: int = 256 << 20
    max_dims: int = 4  # GGML_MAX_DIMS
    max_name_bytes: int = 63  # GGML_MAX_NAME - 1 (the C name buffer holds a NUL)


DEFAULT_LIMITS = GGUFLimits()


@dataclass(frozen=True)
class GGUFInfo:
    """What the header says about a model that passed validation.

    ``metadata`` holds the scalar and string values; an array value is kept
    only as a summary such as ``"<array of 49152 str>"`` so that a
    vocabulary is never loaded into memory.
    """

    version: int
    n_tensors: int
    n_kv: int
    architecture: str | None
    name: str | None
    context_length: int | None
    chat_template: str | None
    alignment: int
    data_offset: int
    file_size: int
    metadata: dict[str, object] = field(repr=False)


@dataclass(frozen=True)
class _Array:
    """An array value that was bounds-checked and skipped, not loaded."""

    elem_type: int
    length: int

    def summary(self) -> str:
        return f"<array of {self.length} {_TYPE_NAMES[self.elem_type]}>"


_Value = int | float | bool | str | _Array


@dataclass(frozen=True)
class _Tensor:
    name: str
    offset: int
    nbytes: int


class _Reader:
    """Sequential reader over the header that refuses to read past its bounds.

    Every read is checked against the bytes left in the file and against
    ``max_header_bytes`` *before* any ``read`` happens, so a claimed length
    can never make us allocate more than the file actually holds. Reads go
    through a small buffer because headers are mostly tiny fields.
    """

    _CHUNK = 1 << 16

    def __init__(self, f: BinaryIO, file_size: int, label: str, max_header_bytes: int) -> None:
        self._f = f
        self.file_size = file_size
        self.label = label
        self.max_header_bytes = max_header_bytes
        self.pos = 0
        self._buf = b""
        self._off = 0

    @property
    def remaining(self) -> int:
        return self.file_size - self.pos

    def fail(self, message: str) -> NoReturn:
        raise GGUFFormatError(f"{self.label}: {message}")

    def _check(self, n: int, what: str) -> None:
        if n > self.remaining:
            self.fail(
                f"truncated: {what} needs {n} bytes at byte {self.pos} "
                f"but only {self.remaining} remain (file has {self.file_size})"
            )
        if self.pos + n > self.max_header_bytes:
            self.fail(
                f"header too large: {what} at byte {self.pos} runs past "
                f"the {self.max_header_bytes}-byte header limit"
            )

    def take(self, n: int, what: str) -> bytes:
        """Return the next ``n`` bytes; ``n`` is checked before anything is read."""
        self._check(n, what)
        if n > len(self._buf) - self._off:
            self._refill(n)
        out = self._buf[self._off : self._off + n]
        self._off += n
        self.pos += n
        return out

    def _refill(self, n: int) -> None:
        rest = self._buf[self._off :]
        unread = self.remaining - len(rest)
        want = max(n - len(rest), min(self._CHUNK, unread))
        data = self._f.read(want)
        if len(rest) + len(data) < n:
            self.fail(f"file shrank while being read (at byte {self.pos})")
        self._buf = rest + data
        self._off = 0

    def skip(self, n: int, what: str) -> None:
        """Move past ``n`` bytes without reading them when they are not buffered."""
        self._check(n, what)
        if n <= len(self._buf) - self._off:
            self._off += n
        else:
            self._f.seek(self.pos + n)
            self._buf = b""
            self._off = 0
        self.pos += n

    def u32(self, what: str) -> int:
        value: int = _U32.unpack(self.take(4, what))[0]
        return value

    def u64(self, what: str) -> int:
        value: int = _U64.unpack(self.take(8, what))[0]
        return value

    def string(self, limit: int, what: str) -> bytes:
        """A length-prefixed string, its length checked against ``limit`` and the file."""
        n = self.u64(f"length of {what}")
        if n > limit:
            self.fail(f"{what} claims {n} bytes (limit {limit})")
        if n > self.remaining:
            self.fail(f"truncated: {what} claims {n} bytes but only {self.remaining} remain")
        return self.take(n, what)

    def text(self, limit: int, what: str) -> str:
        raw = self.string(limit, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.fail(f"{what} is not valid UTF-8")

    def skip_strings(self, count: int, limit: int, where: str) -> None:
        """Skip ``count`` strings (a vocabulary), checking each length, loading none.

        Vocabularies hold up to a few hundred thousand strings, so strings that
        lie wholly inside the buffer are walked in a tight loop; the one that
        straddles the buffer's end goes through the checked slow path.
        """
        what = f"strings in {where}"
        i = 0
        while i < count:
            i = self._skip_buffered_strings(i, count, limit, what)
            if i < count:
                n = self.u64(what)
                if n > limit:
                    self.fail(f"string #{i} in {where} claims {n} bytes (limit {limit})")
                self.skip(n, what)
                i += 1

    def _skip_buffered_strings(self, i: int, count: int, limit: int, what: str) -> int:
        """Skip strings ``i``.. that lie inside the buffer; return the next index."""
        buf, off, end, unpack = self._buf, self._off, len(self._buf), _U64.unpack_from
        while i < count and off + 8 <= end:
            n = unpack(buf, off)[0]
            if n > limit or off + 8 + n > end:
                break  # the slow path reports it, or refills the buffer
            off += 8 + n
            i += 1
        # Only buffered bytes were walked, so they are inside the file; the
        # header limit still applies.
        self._check(off - self._off, what)
        self.pos += off - self._off
        self._off = off
        return i


@functools.cache
def _quant_sizes() -> dict[int, tuple[str, int, int]]:
    """ggml type id -> (name, block size, bytes per block), from the gguf package.

    Imported lazily: ``gguf`` pulls in numpy, which the CLI need not pay for
    on every start.
    """
    from gguf.constants import GGML_QUANT_SIZES

    return {int(t): (t.name, block, size) for t, (block, size) in GGML_QUANT_SIZES.items()}


def _gguf_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gguf")
    except PackageNotFoundError:
        return "unknown"


def validate_gguf(path: str | os.PathLike[str], limits: GGUFLimits = DEFAULT_LIMITS) -> GGUFInfo:
    """Check that ``path`` is a well-formed, bounded GGUF file and summarise it.

    Raises :class:`ModelNotFoundError` for a missing file and
    :class:`GGUFFormatError` for anything llama.cpp should not be shown.
    """
    p = Path(path)
    label = p.name or str(p)
    size = _regular_file_size(p, label)
    try:
        with p.open("rb") as f:
            return _parse(_Reader(f, size, label, limits.max_header_bytes), limits)
    except OSError as exc:
        raise ModelError(
            f"{label}: cannot read: {exc.strerror or exc}", hint="check the file's permissions"
        ) from exc


def _regular_file_size(p: Path, label: str) -> int:
    """Stat first, so a directory or a FIFO is refused before ``open`` can block."""
    try:
        st = p.stat()
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise ModelNotFoundError(f"{p}: no such model file") from exc
    except OSError as exc:
        raise ModelError(
            f"{label}: cannot stat: {exc.strerror or exc}", hint="check the file's permissions"
        ) from exc
    if stat.S_ISDIR(st.st_mode):
        raise GGUFFormatError(f"{label}: is a directory, not a GGUF file")
    if not stat.S_ISREG(st.st_mode):
        raise GGUFFormatError(f"{label}: is not a regular file")
    if st.st_size == 0:
        raise GGUFFormatError(f"{label}: file is empty (0 bytes)")
    return st.st_size


def _parse(r: _Reader, limits: GGUFLimits) -> GGUFInfo:
    version = _read_version(r)
    n_tensors, n_kv = _read_counts(r, limits)
    kv = _read_metadata(r, n_kv, limits)
    alignment = _alignment(r, kv)
    tensors = _read_tensor_infos(r, n_tensors, limits)
    data_offset = -(-r.pos // alignment) * alignment
    _check_layout(r, tensors, data_offset, alignment)
    architecture = _opt_str(r, kv, "general.architecture")
    context_key = f"{architecture}.context_length"
    return GGUFInfo(
        version=version,
        n_tensors=n_tensors,
        n_kv=n_kv,
        architecture=architecture,
        name=_opt_str(r, kv, "general.name"),
        context_length=_opt_int(r, kv, context_key) if architecture else None,
        chat_template=_opt_str(r, kv, "tokenizer.chat_template"),
        alignment=alignment,
        data_offset=data_offset,
        file_size=r.file_size,
        metadata={k: v.summary() if isinstance(v, _Array) else v for k, (_, v) in kv.items()},
    )


def _read_version(r: _Reader) -> int:
    """Magic and version; a big-endian file shows up as a byte-swapped version."""
    if r.file_size < len(GGUF_MAGIC):
        r.fail(f"not a GGUF file (only {r.file_size} bytes)")
    magic = r.take(len(GGUF_MAGIC), "magic")
    if magic != GGUF_MAGIC:
        r.fail(f"not a GGUF file (magic {magic!r}, expected {GGUF_MAGIC!r})")
    version = r.u32("version")
    if version in SUPPORTED_VERSIONS:
        return version
    if version == 1:
        r.fail("GGUF version 1 is not supported (need 2 or 3); convert the model again")
    swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
    if swapped in (1, *SUPPORTED_VERSIONS):
        r.fail(f"big-endian GGUF is not supported (version field reads {version:#010x})")
    r.fail(f"unsupported GGUF version {version} (need 2 or 3)")


def _read_counts(r: _Reader, limits: GGUFLimits) -> tuple[int, int]:
    """Tensor and metadata counts, bounded by the limits and by the file size."""
    n_tensors = r.u64("tensor count")
    n_kv = r.u64("metadata count")
    if n_tensors > limits.max_tensors:
        r.fail(f"header claims {n_tensors} tensors (limit {limits.max_tensors})")
    if n_kv > limits.max_kv:
        r.fail(f"header claims {n_kv} metadata pairs (limit {limits.max_kv})")
    need = n_kv * _MIN_KV_BYTES + n_tensors * _MIN_TENSOR_INFO_BYTES
    if need > r.remaining:
        r.fail(
            f"truncated: header claims {n_kv} metadata pairs and {n_tensors} tensors, "
            f"which need at least {need} bytes, but only {r.remaining} remain"
        )
    return n_tensors, n_kv


def _read_metadata(r: _Reader, n_kv: int, limits: GGUFLimits) -> dict[str, tuple[int, _Value]]:
    """All key/value pairs as key -> (value type, value); keys must be unique."""
    kv: dict[str, tuple[int, _Value]] = {}
    for i in range(n_kv):
        key = r.text(limits.max_key_bytes, f"metadata key #{i}")
        if not key:
            r.fail(f"metadata key #{i} is empty")
        if key in kv:
            r.fail(f"duplicate metadata key {key!r}")
        vtype = r.u32(f"value type of {key!r}")
        kv[key] = (vtype, _read_value(r, vtype, key, limits))
    return kv


def _read_value(r: _Reader, vtype: int, key: str, limits: GGUFLimits) -> _Value:
    if vtype == _TYPE_STRING:
        return r.text(limits.max_string_bytes, f"metadata string at key {key!r}")
    if vtype == _TYPE_ARRAY:
        return _read_array(r, key, limits, depth=1)
    fmt = _SCALAR_FORMATS.get(vtype)
    if fmt is None:
        r.fail(f"metadata key {key!r} has unknown value type {vtype}")
    value: int | float | bool = fmt.unpack(r.take(fmt.size, f"value of {key!r}"))[0]
    return value


def _read_array(r: _Reader, key: str, limits: GGUFLimits, depth: int) -> _Array:
    """Check an array's type and length against limits and file bytes, then skip it."""
    where = f"array at key {key!r}"
    etype = r.u32(f"element type of {where}")
    if etype == _TYPE_ARRAY and depth >= MAX_ARRAY_DEPTH:
        r.fail(f"{where} nests arrays deeper than {MAX_ARRAY_DEPTH} levels")
    min_size = _MIN_VALUE_BYTES.get(etype)
    if min_size is None:
        r.fail(f"{where} has unknown element type {etype}")
    n = r.u64(f"length of {where}")
    if n > limits.max_array_len:
        r.fail(f"{where} claims {n} elements (limit {limits.max_array_len})")
    if n * min_size > r.remaining:
        r.fail(
            f"truncated: {where} claims {n} elements (at least {n * min_size} bytes) "
            f"but only {r.remaining} bytes remain"
        )
    if etype == _TYPE_STRING:
        r.skip_strings(n, limits.max_string_bytes, where)
    elif etype == _TYPE_ARRAY:
        _skip_nested(r, n, key, limits, depth)
    else:
        r.skip(n * min_size, where)
    return _Array(etype, n)


def _skip_nested(r: _Reader, n: int, key: str, limits: GGUFLimits, depth: int) -> None:
    """Inner arrays share the outer one's element budget, so nesting can't multiply it."""
    total = 0
    for _ in range(n):
        total += _read_array(r, key, limits, depth + 1).length
        if total > limits.max_array_len:
            r.fail(f"nested arrays at key {key!r} hold more than {limits.max_array_len} elements")


def _alignment(r: _Reader, kv: dict[str, tuple[int, _Value]]) -> int:
    """``general.alignment``: llama.cpp reads it as u32 and aborts on any other type."""
    entry = kv.get("general.alignment")
    if entry is None:
        return DEFAULT_ALIGNMENT
    vtype, value = entry
    if vtype != _TYPE_UINT32 or not isinstance(value, int):
        r.fail(f"general.alignment has type {_TYPE_NAMES.get(vtype, vtype)}, expected u32")
    if value <= 0 or value & (value - 1) or value > MAX_ALIGNMENT:
        r.fail(f"general.alignment {value} is not a power of two up to {MAX_ALIGNMENT}")
    return value


def _read_tensor_infos(r: _Reader, n_tensors: int, limits: GGUFLimits) -> list[_Tensor]:
    tensors: list[_Tensor] = []
    seen: set[str] = set()
    for i in range(n_tensors):
        tensor = _read_tensor_info(r, i, limits)
        if tensor.name in seen:
            r.fail(f"duplicate tensor name {tensor.name!r}")
        seen.add(tensor.name)
        tensors.append(tensor)
    return tensors


def _read_tensor_info(r: _Reader, index: int, limits: GGUFLimits) -> _Tensor:
    name = r.text(limits.max_name_bytes, f"name of tensor #{index}")
    if not name:
        r.fail(f"tensor #{index} has an empty name")
    where = f"tensor {name!r}"
    n_dims = r.u32(f"dimension count of {where}")
    if not 1 <= n_dims <= limits.max_dims:
        r.fail(f"{where} has {n_dims} dimensions (must be 1 to {limits.max_dims})")
    dims = [r.u64(f"dimensions of {where}") for _ in range(n_dims)]
    n_elements = _element_count(r, where, dims)
    ggml_type = r.u32(f"ggml type of {where}")
    offset = r.u64(f"data offset of {where}")
    return _Tensor(name, offset, _tensor_nbytes(r, where, ggml_type, dims[0], n_elements))


def _element_count(r: _Reader, where: str, dims: list[int]) -> int:
    """Product of the dims; ggml stores them as int64, so cap well below overflow."""
    count = 1
    for d in dims:
        if d == 0:
            r.fail(f"{where} has a zero dimension (shape {dims})")
        count *= d
        if count > MAX_ELEMENTS:
            r.fail(f"{where} shape {dims} overflows: more than 2**62 elements")
    return count


def _tensor_nbytes(r: _Reader, where: str, ggml_type: int, ne0: int, n_elements: int) -> int:
    """Bytes of tensor data; rows must hold whole quantization blocks, as ggml requires."""
    sizes = _quant_sizes().get(ggml_type)
    if sizes is None:
        r.fail(f"{where} has unknown ggml type {ggml_type} (gguf {_gguf_version()})")
    type_name, block, type_size = sizes
    if ne0 % block:
        r.fail(
            f"{where} has {ne0} elements per row, not a multiple of the "
            f"{type_name} block size {block}"
        )
    return n_elements // block * type_size


def _check_layout(r: _Reader, tensors: list[_Tensor], data_offset: int, alignment: int) -> None:
    """Every tensor is aligned, inside the file, and disjoint from the others."""
    for t in tensors:
        if t.offset % alignment:
            r.fail(f"tensor {t.name!r} offset {t.offset} is not a multiple of {alignment}")
        start = data_offset + t.offset
        if start >= r.file_size:
            r.fail(f"tensor {t.name!r} starts at byte {start}, past the end of the file")
        end = start + t.nbytes
        if end > r.file_size:
            r.fail(
                f"truncated: tensor {t.name!r} ends at byte {end} but the file has {r.file_size}"
            )
    for prev, cur in pairwise(sorted(tensors, key=lambda t: t.offset)):
        if cur.offset < prev.offset + prev.nbytes:
            r.fail(
                f"tensors {prev.name!r} and {cur.name!r} overlap: the first ends at data "
                f"byte {prev.offset + prev.nbytes}, the second starts at {cur.offset}"
            )


def _opt_str(r: _Reader, kv: dict[str, tuple[int, _Value]], key: str) -> str | None:
    entry = kv.get(key)
    if entry is None:
        return None
    if not isinstance(entry[1], str):
        r.fail(f"{key} has type {_TYPE_NAMES[entry[0]]}, expected str")
    return entry[1]


def _opt_int(r: _Reader, kv: dict[str, tuple[int, _Value]], key: str) -> int | None:
    entry = kv.get(key)
    if entry is None:
        return None
    vtype, value = entry
    if vtype not in _INT_TYPES or not isinstance(value, int):
        r.fail(f"{key} has type {_TYPE_NAMES[vtype]}, expected an integer")
    return value
