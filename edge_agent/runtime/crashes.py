"""Did the last daemon process die of a crash of its own, or was it killed?

A request cut off by a restart is run again when none of its tools can have
run. After an outside kill (``kill -9``, a power cut, the OOM killer) it is
run again however many restarts it takes, until its deadline. But a request
that crashes the process itself (a fault inside llama.cpp) would crash every
new process too, so it gets only a few tries. The two look the same to the
next process, except for this trace: :func:`faulthandler` writes the fatal
signal's traceback (SIGSEGV, SIGABRT, SIGBUS, SIGILL, SIGFPE) to a file in
the state folder as the process dies. SIGKILL leaves no trace, since no
handler runs.
"""

from __future__ import annotations

import faulthandler
from pathlib import Path
from typing import IO


class CrashTrace:
    """The fatal-signal trace file of the daemon in ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def died_of_itself(self) -> bool:
        """Whether the previous process left a fatal-signal trace; the trace
        is then kept beside it as ``<name>.last`` for the owner to read."""
        try:
            text = self.path.read_text(errors="replace")
        except OSError:
            return False
        if not text.strip():
            return False
        self.path.replace(self.path.with_name(self.path.name + ".last"))
        return True

    def arm(self) -> None:
        """From now on, a fatal signal writes its traceback to the file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("w")
        faulthandler.enable(file=self._file, all_threads=True)

    def disarm(self) -> None:
        """A clean exit: stop tracing and leave an empty file."""
        if self._file is not None:
            faulthandler.disable()
            self._file.close()
            self._file = None


__all__ = ["CrashTrace"]
