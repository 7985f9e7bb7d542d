"""The visible text of an answer while it is decoded: stop strings and
token streaming, in one place.

A token is a few bytes, not a character: a Chinese character or an emoji
often spans two tokens, so text is handed on only in whole UTF-8
characters. A client's ``stop`` strings end the answer where the first one
begins, and the stop string itself is never shown; the tail that could
still turn into one (``"\\n\\nUs"`` when ``"\\n\\nUser:"`` is a stop
string) is held back until it either completes the stop or cannot.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

OnText = Callable[[str], None]
"""Receives each new piece of visible text, in order (it may be called from
the decoding thread: it must not block)."""


@dataclass(frozen=True)
class TextOptions:
    """What a client asked of an answer's text, beyond the grammar: where it
    stops, who reads it as it is decoded, and how many alternatives each
    token's score lists (OpenAI's ``stop``, ``stream`` and ``top_logprobs``).
    They apply to text answers and structured output, never to tool calls,
    whose text no client reads before the verifier has."""

    stop: tuple[str, ...] = ()
    on_text: OnText | None = field(default=None, compare=False)
    top_logprobs: int = 0

    @property
    def streams(self) -> bool:
        return bool(self.stop) or self.on_text is not None


NO_TEXT_OPTIONS = TextOptions()


class TextStream:
    """Accumulates decoded bytes; ``text`` is what the answer says so far."""

    def __init__(self, stop: Sequence[str] = (), on_text: OnText | None = None) -> None:
        self.stop = tuple(s for s in stop if s)
        self.on_text = on_text
        self.text = ""
        self.stopped = False
        self._sent = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, piece: bytes) -> bool:
        """Add decoded bytes; True once a stop string has ended the answer."""
        if self.stopped:
            return True
        self.text += self._decoder.decode(piece)
        if self._cut():
            return True
        self._send(len(self.text) - self._held())
        return False

    def close(self) -> str:
        """The decoding ended: flush what was held back; return the text."""
        if not self.stopped:
            self.text += self._decoder.decode(b"", final=True)
            self._cut()
        self._send(len(self.text))
        return self.text

    def _cut(self) -> bool:
        """Cut the text where the stop string that was completed first
        begins (the one that ends first: a decoder reading one character at
        a time would have stopped there, however the bytes were split)."""
        if not self.stop:
            return False
        longest = max(len(s) for s in self.stop)
        start = max(0, self._sent - longest)
        found = [(i + len(s), i) for s in self.stop if (i := self.text.find(s, start)) >= 0]
        if not found:
            return False
        self.text = self.text[: min(found)[1]]
        self.stopped = True
        self._send(len(self.text))
        return True

    def _held(self) -> int:
        """How many trailing characters could be the start of a stop string."""
        for size in range(
            min(max((len(s) for s in self.stop), default=1) - 1, len(self.text)), 0, -1
        ):
            tail = self.text[-size:]
            if any(s.startswith(tail) for s in self.stop):
                return size
        return 0

    def _send(self, upto: int) -> None:
        if upto > self._sent and self.on_text is not None:
            self.on_text(self.text[self._sent : upto])
        self._sent = max(self._sent, upto)


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the first stop string (for engines that decode the
    whole answer before anyone reads it)."""
    stream = TextStream(stop)
    stream.feed(text.encode("utf-8"))
    return stream.close()
