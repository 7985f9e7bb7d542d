"""Frames over a serial port (pyserial), one device per port.

:class:`SerialLink` is the host side: a reader thread splits the byte stream
into lines (:class:`LineSplitter`, which cuts an oversized line short so the
receiver can reject it instead of buffering without end) and hands each to
the bridge; writes are serialised by a lock. When the port disappears (a USB
cable pulled) the link keeps trying to reopen it until it is closed.

For tests and the simulator, :class:`PtyPair` makes a pseudo-terminal pair:
the device speaks on the master side (:class:`FdStream`) and the host opens
the slave's path with pyserial, exactly as it would open ``/dev/ttyUSB0``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import tty
from collections.abc import Callable
from typing import Protocol

import serial

from firmware_bridge.protocol import MAX_FRAME_BYTES, Frame

__all__ = ["ByteStream", "FdStream", "LineSplitter", "PtyPair", "SerialLink", "SerialStream"]

log = logging.getLogger(__name__)

LineHandler = Callable[[str | None, bytes], None]
OnlineHandler = Callable[[str | None], None]
REOPEN_DELAY_S = 2.0


class ByteStream(Protocol):
    """A duplex byte stream: what a serial port is to the protocol."""

    def read_some(self, timeout_s: float) -> bytes:
        """Whatever bytes are available within ``timeout_s`` (b"" if none)."""
        ...

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class LineSplitter:
    """Bytes in, complete lines out. A line longer than ``limit`` bytes is
    passed on cut to ``limit + 1`` bytes (so it is rejected as oversized), and
    the rest of it, up to the next newline, is skipped. Blank lines are dropped."""

    def __init__(self, limit: int = MAX_FRAME_BYTES) -> None:
        self.limit = limit
        self._buf = bytearray()
        self._skipping = False

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        parts = data.split(b"\n")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if self._skipping:
                self._skipping = last  # a newline ends the oversized line
                continue
            self._buf += part
            if len(self._buf) >= self.limit:  # the newline would make it > limit
                out.append(bytes(self._buf[: self.limit]) + b"\n")  # limit + 1 bytes
                self._buf.clear()
                self._skipping = last
            elif not last:
                if self._buf.strip():
                    out.append(bytes(self._buf) + b"\n")
                self._buf.clear()
        return out


class SerialStream:
    """A :class:`ByteStream` over a pyserial port."""

    def __init__(self, port: serial.Serial) -> None:
        self.port = port

    @classmethod
    def open(cls, path: str, baudrate: int = 115200) -> SerialStream:
        return cls(serial.Serial(path, baudrate=baudrate, timeout=0.1, write_timeout=2.0))

    def read_some(self, timeout_s: float) -> bytes:
        self.port.timeout = timeout_s
        data = bytes(self.port.read(1))
        if data and self.port.in_waiting:
            data += bytes(self.port.read(self.port.in_waiting))
        return data

    def write(self, data: bytes) -> None:
        self.port.write(data)
        self.port.flush()

    def close(self) -> None:
        self.port.close()


class FdStream:
    """A :class:`ByteStream` over a raw file descriptor (a pty master).
    EIO while nobody holds the other side open reads as "no data"."""

    def __init__(self, fd: int, *, owns: bool = False) -> None:
        self.fd = fd
        self._owns = owns

    def read_some(self, timeout_s: float) -> bytes:
        ready, _, _ = select.select([self.fd], [], [], timeout_s)
        if not ready:
            return b""
        try:
            return os.read(self.fd, 4096)
        except OSError:
            threading.Event().wait(timeout_s)  # EIO: the other side is closed
            return b""

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]

    def close(self) -> None:
        if self._owns:
            with contextlib.suppress(OSError):
                os.close(self.fd)


class PtyPair:
    """A pseudo-terminal pair in raw mode: ``master`` for the device side,
    ``path`` (the slave) for the host to open like a serial port. The slave
    stays open here too, so the master never reads EIO before the host opens it."""

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)

    def device_stream(self) -> FdStream:
        return FdStream(self.master)

    def close(self) -> None:
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> PtyPair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SerialLink:
    """The host side of one serial port. ``device_id``: the device expected
    there (the bridge greets it at once); otherwise the port belongs to the
    first device that announces itself on it."""

    name = "serial"
    binds_device = True

    def __init__(
        self,
        port: str,
        *,
        baudrate: int = 115200,
        device_id: str | None = None,
        opener: Callable[[str, int], ByteStream] = SerialStream.open,
    ) -> None:
        self.port = port
        self.baudrate = baudrate
        self.device_id = device_id
        self._opener = opener
        self._stream: ByteStream | None = None
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"SerialLink({self.port!r})"

    def start(self, on_line: LineHandler, on_online: OnlineHandler) -> None:
        """Open the port (raising :class:`serial.SerialException` if it cannot
        be opened now) and start reading."""
        self._stream = self._opener(self.port, self.baudrate)
        self._thread = threading.Thread(
            target=self._run, args=(on_line, on_online), name=f"serial-{self.port}", daemon=True
        )
        self._thread.start()

    def send(self, frame: Frame, line: bytes) -> None:
        del frame  # one device per port: nothing to route
        with self._write_lock:
            if self._stream is None:
                raise OSError(f"serial port {self.port} is not open")
            self._stream.write(line)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._write_lock:
            if self._stream is not None:
                self._stream.close()
                self._stream = None

    def _run(self, on_line: LineHandler, on_online: OnlineHandler) -> None:
        splitter = LineSplitter()
        on_online(self.device_id)
        while not self._stop.is_set():
            stream = self._stream
            if stream is None:
                self._reopen(on_online)
                continue
            try:
                data = stream.read_some(0.1)
            except (serial.SerialException, OSError) as exc:
                log.warning("serial port %s failed: %s; reopening", self.port, exc)
                self._drop_stream()
                continue
            for line in splitter.feed(data):
                on_line(self.device_id, line)

    def _drop_stream(self) -> None:
        with self._write_lock:
            if self._stream is not None:
                with contextlib.suppress(serial.SerialException, OSError):
                    self._stream.close()
                self._stream = None

    def _reopen(self, on_online: OnlineHandler) -> None:
        if self._stop.wait(REOPEN_DELAY_S):
            return
        try:
            stream = self._opener(self.port, self.baudrate)
        except (serial.SerialException, OSError) as exc:
            log.debug("serial port %s still unavailable: %s", self.port, exc)
            return
        with self._write_lock:
            self._stream = stream
        log.info("serial port %s reopened", self.port)
        on_online(self.device_id)
