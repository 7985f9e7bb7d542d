"""TextStream: what a client sees of a text answer while it is decoded.

Pure: bytes in, pieces out. The properties are the ones a streaming client
relies on: the pieces add up to the final text, a stop string (or the start
of one) is never shown, and a character split across tokens arrives whole.
"""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from edge_agent.engine.text_stream import TextOptions, TextStream, cut_at_stop


def run(chunks: list[bytes], stop: tuple[str, ...] = ()) -> tuple[list[str], str, bool]:
    pieces: list[str] = []
    stream = TextStream(stop, pieces.append)
    stopped = False
    for chunk in chunks:
        if stream.feed(chunk):
            stopped = True
            break
    return pieces, stream.close(), stopped


def test_pieces_arrive_as_they_are_fed() -> None:
    pieces, text, stopped = run([b"Hello", b" wor", b"ld"])
    assert pieces == ["Hello", " wor", "ld"]
    assert text == "Hello world" and not stopped


def test_a_character_split_across_tokens_arrives_whole() -> None:
    word = "温度".encode()  # two 3-byte characters
    pieces, text, _ = run([word[:2], word[2:4], word[4:]])
    assert text == "温度"
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) == "温度"


def test_a_stop_string_ends_the_text_and_is_never_shown() -> None:
    pieces, text, stopped = run([b"one, two", b", thr", b"ee, four"], stop=("three",))
    assert stopped
    assert text == "one, two, "
    assert "".join(pieces) == text
    assert not any("thr" in p for p in pieces)


def test_the_start_of_a_stop_string_is_held_back_until_it_cannot_be_one() -> None:
    pieces, text, stopped = run([b"a\n\nUs", b"ually"], stop=("\n\nUser:",))
    assert not stopped
    assert pieces[0] == "a"  # "\n\nUs" might still become the stop string
    assert text == "a\n\nUsually" == "".join(pieces)


def test_the_stop_string_completed_first_wins() -> None:
    assert cut_at_stop("alpha END beta STOP", ("STOP", "END")) == "alpha "
    # "abcd" starts first, but "bc" is complete first: a decoder stops there
    assert cut_at_stop("abcd", ("abcd", "bc")) == "a"
    assert cut_at_stop("no stop here", ("STOP",)) == "no stop here"


def test_options_that_change_nothing_do_not_stream() -> None:
    assert not TextOptions().streams
    assert TextOptions(stop=("x",)).streams
    assert TextOptions(on_text=print).streams


@given(
    text=st.text(alphabet=st.sampled_from("ab温\n:"), max_size=40),
    cuts=st.lists(st.integers(0, 200), max_size=12),
    stop=st.lists(st.text(alphabet=st.sampled_from("ab温\n:"), min_size=1, max_size=4), max_size=3),
)
def test_streamed_pieces_always_add_up_to_the_text_cut_at_the_first_stop(
    text: str, cuts: list[int], stop: list[str]
) -> None:
    raw = text.encode()
    bounds = sorted({min(c, len(raw)) for c in cuts} | {0, len(raw)})
    chunks = [raw[a:b] for a, b in itertools.pairwise(bounds)]
    pieces, final, _ = run(chunks, tuple(stop))
    ends = [(i + len(s), i) for s in stop if (i := text.find(s)) >= 0]
    assert final == (text[: min(ends)[1]] if ends else text)
    assert "".join(pieces) == final
