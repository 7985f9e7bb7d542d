"""Local notes: BM25 search over a folder of text files, and adding a note.

The folder is ``$EDGE_AGENT_NOTES_DIR`` (default
``~/.local/share/edge-agent/notes``); ``*.txt`` and ``*.md`` files in it and
its sub-folders are searched, hidden ones skipped. The index is rebuilt on
every search, which is fine for the few hundred notes a device keeps; files
past :data:`MAX_FILES` or bytes past :data:`MAX_FILE_BYTES` are not read.
"""

from __future__ import annotations

import math
import os
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from edge_agent import tool

NOTES_ENV = "EDGE_AGENT_NOTES_DIR"
DEFAULT_NOTES_DIR = "~/.local/share/edge-agent/notes"
SUFFIXES = (".txt", ".md")
MAX_FILES = 2000
MAX_FILE_BYTES = 256 * 1024
MAX_TITLE = 120
MAX_TEXT = 64 * 1024
SNIPPET_CHARS = 200
K1, B = 1.5, 0.75

_TOKEN_RE = re.compile(r"\w+")
_UNSAFE_RE = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Document:
    name: str
    text: str
    terms: Counter[str]
    length: int


@tool("Search the user's local notes for a query.", tags=("notes",), state=True)
def search_notes(query: str, limit: Annotated[int, Field(ge=1, le=10)] = 3) -> dict[str, Any]:
    terms = tokenize(query)
    if not terms:
        raise ValueError("the query has no words to search for")
    docs = load_documents(notes_dir())
    ranked = rank(terms, docs)[:limit]
    results = [
        {"file": doc.name, "score": round(score, 3), "snippet": snippet(doc.text, terms)}
        for doc, score in ranked
    ]
    return {"query": query, "results": results, "searched": len(docs)}


@tool(
    "Save a new note with a title and text.",
    side_effect="actuate",
    tags=("notes",),
    state=True,
    say="Note '{title}' saved.",
)
def add_note(title: str, text: str) -> dict[str, Any]:
    if not title.strip():
        raise ValueError("the title is empty")
    if len(title) > MAX_TITLE:
        raise ValueError(f"the title is longer than {MAX_TITLE} characters")
    if len(text) > MAX_TEXT:
        raise ValueError(f"the text is longer than {MAX_TEXT} characters")
    folder = notes_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = _create_unique(folder, safe_filename(title), f"# {title.strip()}\n\n{text.strip()}\n")
    return {"file": path.name, "title": title.strip(), "bytes": path.stat().st_size}


def notes_dir() -> Path:
    """``$EDGE_AGENT_NOTES_DIR``, else ``notes/`` in the tool's persistent
    sandbox folder (``$EDGE_AGENT_TOOL_STATE``), else the XDG default."""
    configured = os.environ.get(NOTES_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    folder = os.environ.get("EDGE_AGENT_TOOL_STATE", "").strip()
    return Path(folder) / "notes" if folder else Path(DEFAULT_NOTES_DIR).expanduser()


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens; a plural ``s`` is dropped so 'lights' finds 'light'."""
    words = _TOKEN_RE.findall(text.casefold())
    return [_stem(w) for w in words if len(w) > 1 or w.isdigit()]


def _stem(word: str) -> str:
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def load_documents(folder: Path) -> list[Document]:
    if not folder.is_dir():
        return []
    docs = []
    for path in sorted(_note_files(folder))[:MAX_FILES]:
        try:
            with path.open("rb") as handle:
                raw = handle.read(MAX_FILE_BYTES)
        except OSError:
            continue
        text = raw.decode("utf-8", errors="replace")
        name = path.relative_to(folder).as_posix()
        terms = Counter(tokenize(f"{path.stem.replace('_', ' ')} {text}"))
        docs.append(Document(name, text, terms, sum(terms.values())))
    return docs


def _note_files(folder: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.endswith(SUFFIXES) and not name.startswith("."):
                found.append(Path(root) / name)
    return found


def rank(terms: list[str], docs: list[Document]) -> list[tuple[Document, float]]:
    """Okapi BM25 of each document that contains a query term, best first."""
    if not docs:
        return []
    average = sum(d.length for d in docs) / len(docs) or 1.0
    frequency = Counter(t for d in docs for t in set(terms) if t in d.terms)
    scored = []
    for doc in docs:
        score = 0.0
        for term in set(terms):
            tf = doc.terms.get(term, 0)
            if tf:
                idf = math.log(1 + (len(docs) - frequency[term] + 0.5) / (frequency[term] + 0.5))
                norm = tf + K1 * (1 - B + B * doc.length / average)
                score += idf * tf * (K1 + 1) / norm
        if score > 0:
            scored.append((doc, score))
    return sorted(scored, key=lambda pair: (-pair[1], pair[0].name))


def snippet(text: str, terms: list[str]) -> str:
    """The line (or window of a long line) with the most query terms."""
    wanted = set(terms)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    best = max(lines, key=lambda line: len(wanted & set(tokenize(line))))
    if len(best) <= SNIPPET_CHARS:
        return best
    hits = [m.start() for m in _TOKEN_RE.finditer(best.casefold()) if _hit(m.group(), wanted)]
    start = max(0, (hits[0] if hits else 0) - SNIPPET_CHARS // 4)
    window = best[start : start + SNIPPET_CHARS].strip()
    prefix = "…" if start > 0 else ""
    suffix = "…" if start + SNIPPET_CHARS < len(best) else ""
    return f"{prefix}{window}{suffix}"


def _hit(word: str, wanted: set[str]) -> bool:
    return _stem(word) in wanted


def safe_filename(title: str) -> str:
    """A portable file stem: ASCII letters, digits, '-' and '_' only."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    stem = _UNSAFE_RE.sub("-", ascii_title).strip("-_").lower()[:60].strip("-_")
    return stem or "note"


def _create_unique(folder: Path, stem: str, content: str) -> Path:
    """Write a new file, never overwriting: ``stem.md``, ``stem-2.md``, ..."""
    for n in range(1, 1000):
        path = folder / (f"{stem}.md" if n == 1 else f"{stem}-{n}.md")
        try:
            with path.open("x", encoding="utf-8") as out:
                out.write(content)
        except FileExistsError:
            continue
        return path
    raise RuntimeError(f"too many notes named {stem!r}")
