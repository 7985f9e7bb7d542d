"""Local notes: BM25 ranking over a real folder, and safe note creation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from . import load_tool_module

notes = load_tool_module("notes")

CORPUS = {
    "garden.md": "# Garden\n\nWater the tomatoes every morning.\nThe garden valve opens at 6.",
    "wifi.txt": "The wifi password is on the router.\nGuest network: edge-guest.",
    "recipes/bread.md": "# Bread\n\nFlour, water, salt and yeast.\nBake at 230 C for 40 minutes.",
    "heating.md": "Thermostat schedule: 21 C in the living room, 18 C in the bedroom.",
    "lights.txt": "Kitchen lights are on the second switch.",
    "tomatoes.txt": "Tomato varieties: roma, cherry. Tomatoes need water and sun.",
}


@pytest.fixture
def notes_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "notes"
    for name, text in CORPUS.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    monkeypatch.setenv("EDGE_AGENT_NOTES_DIR", str(folder))
    return folder


def files(result: dict[str, object]) -> list[str]:
    return [r["file"] for r in result["results"]]  # type: ignore[attr-defined]


def test_best_match_first(notes_dir: Path) -> None:
    out = notes.search_notes("wifi password")
    assert files(out)[0] == "wifi.txt"
    assert out["searched"] == len(CORPUS)
    json.dumps(out)


def test_subfolders_are_searched(notes_dir: Path) -> None:
    assert files(notes.search_notes("yeast"))[0] == "recipes/bread.md"


def test_rare_terms_weigh_more(notes_dir: Path) -> None:
    # "water" is in three notes, "valve" in one: the valve note must win.
    assert files(notes.search_notes("water valve"))[0] == "garden.md"


def test_term_frequency_and_title_count(notes_dir: Path) -> None:
    ranked = files(notes.search_notes("tomatoes", limit=10))
    assert ranked[:2] == ["tomatoes.txt", "garden.md"]


def test_plural_finds_singular(notes_dir: Path) -> None:
    assert files(notes.search_notes("light"))[0] == "lights.txt"
    assert files(notes.search_notes("thermostats"))[0] == "heating.md"


def test_scores_are_descending_and_limited(notes_dir: Path) -> None:
    out = notes.search_notes("water the garden tomatoes", limit=2)
    scores = [r["score"] for r in out["results"]]
    assert len(scores) == 2
    assert scores == sorted(scores, reverse=True)
    assert all(s > 0 for s in scores)


def test_no_match_is_empty(notes_dir: Path) -> None:
    assert notes.search_notes("submarine")["results"] == []


def test_snippet_is_the_matching_line(notes_dir: Path) -> None:
    [hit] = notes.search_notes("router", limit=1)["results"]
    assert hit["snippet"] == "The wifi password is on the router."


def test_long_line_snippet_is_a_window(notes_dir: Path) -> None:
    line = "filler " * 100 + "needle in the haystack " + "filler " * 100
    (notes_dir / "long.txt").write_text(line, encoding="utf-8")
    [hit] = notes.search_notes("needle", limit=1)["results"]
    assert "needle" in hit["snippet"]
    assert hit["snippet"].startswith("…") and hit["snippet"].endswith("…")
    assert len(hit["snippet"]) <= notes.SNIPPET_CHARS + 2


def test_only_text_and_markdown_files(notes_dir: Path) -> None:
    (notes_dir / "secret.json").write_text('{"zebra": 1}', encoding="utf-8")
    (notes_dir / ".hidden.md").write_text("zebra", encoding="utf-8")
    (notes_dir / ".git").mkdir()
    (notes_dir / ".git" / "notes.md").write_text("zebra", encoding="utf-8")
    (notes_dir / "binary.txt").write_bytes(b"\xff\xfe zebra \x00")
    assert files(notes.search_notes("zebra")) == ["binary.txt"]


def test_missing_folder_is_empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_AGENT_NOTES_DIR", str(tmp_path / "absent"))
    assert notes.search_notes("anything") == {"query": "anything", "results": [], "searched": 0}


def test_default_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("EDGE_AGENT_NOTES_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert notes.notes_dir() == tmp_path / ".local/share/edge-agent/notes"


@pytest.mark.parametrize("query", ["", "   ", "?!", "-"])
def test_query_without_words(notes_dir: Path, query: str) -> None:
    with pytest.raises(ValueError, match="no words"):
        notes.search_notes(query)


def test_bm25_prefers_shorter_document_at_equal_frequency() -> None:
    short = notes.Document("short", "", notes.Counter({"cat": 1, "a": 1}), 2)
    long = notes.Document("long", "", notes.Counter({"cat": 1, "b": 20}), 21)
    other = notes.Document("other", "", notes.Counter({"dog": 3}), 3)
    ranked = notes.rank(["cat"], [long, short, other])
    assert [d.name for d, _ in ranked] == ["short", "long"]


def test_bm25_frequency_saturates() -> None:
    docs = [
        notes.Document(f"d{n}", "", notes.Counter({"cat": n, "pad": 50 - n}), 50)
        for n in (1, 2, 10, 40)
    ]
    docs.append(notes.Document("none", "", notes.Counter({"pad": 50}), 50))
    scores = dict((d.name, s) for d, s in notes.rank(["cat"], docs))
    assert scores["d1"] < scores["d2"] < scores["d10"] < scores["d40"]
    assert scores["d40"] < (notes.K1 + 1) * 3  # bounded by idf * (k1 + 1)


def test_add_note_then_find_it(notes_dir: Path) -> None:
    out = notes.add_note("Boiler service", "The boiler was serviced by Anna; next visit in March.")
    assert out["file"] == "boiler-service.md"
    text = (notes_dir / "boiler-service.md").read_text(encoding="utf-8")
    assert text == "# Boiler service\n\nThe boiler was serviced by Anna; next visit in March.\n"
    assert files(notes.search_notes("when is the next boiler visit"))[0] == "boiler-service.md"
    json.dumps(out)


def test_add_note_creates_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "a" / "b"
    monkeypatch.setenv("EDGE_AGENT_NOTES_DIR", str(folder))
    notes.add_note("First", "hello")
    assert (folder / "first.md").is_file()


def test_add_note_never_overwrites(notes_dir: Path) -> None:
    names = [notes.add_note("Shopping", f"list {n}")["file"] for n in range(3)]
    assert names == ["shopping.md", "shopping-2.md", "shopping-3.md"]
    assert "list 0" in (notes_dir / "shopping.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("title", "stem"),
    [
        ("../../etc/passwd", "etc-passwd"),
        ("/absolute/path", "absolute-path"),
        ("Café räumen", "cafe-raumen"),
        ("a\x00b", "a-b"),
        ("CON", "con"),
        ("...", "note"),
        ("日本語", "note"),
        ("x" * 200, "x" * 60),
        ("  spaced   out  ", "spaced-out"),
        ("snake_case-and-dash", "snake_case-and-dash"),
    ],
)
def test_safe_filename(title: str, stem: str) -> None:
    assert notes.safe_filename(title) == stem


def test_hostile_title_stays_inside(notes_dir: Path) -> None:
    out = notes.add_note("../../../escape", "nope")
    assert (notes_dir / out["file"]).resolve().parent == notes_dir.resolve()
    assert not (notes_dir.parent / "escape.md").exists()


@pytest.mark.parametrize(
    ("title", "text", "message"),
    [
        ("", "text", "title is empty"),
        ("   ", "text", "title is empty"),
        ("t" * 121, "text", "title is longer"),
        ("ok", "x" * (64 * 1024 + 1), "text is longer"),
    ],
)
def test_add_note_refusals(notes_dir: Path, title: str, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        notes.add_note(title, text)
