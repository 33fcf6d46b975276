"""A child's stdout or stderr, kept to a bounded size: its head and its tail.

A case's output used to go straight to a file, and a chatty factory or training
loop filled the temporary directory (401 MB for one case that printed every
step). Now each stream is a pipe: a thread of the parent reads it, writes the
first :data:`HEAD_BYTES` to the log as they come (so a log read while the case
runs, or after the parent died, has them), holds the last :data:`TAIL_BYTES` in
memory, and on end of file appends them after one line saying how much was left
out between. The tail is what :mod:`gpubench.runner.classify` reads (an OOM's
message, a traceback), so it is never the part dropped.

The pipe's write end is inherited by every process of the case (torchrun's
ranks, a factory's children); the reader sees end of file when the last of them
has exited, which the runner makes sure of before it reads the log.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

HEAD_BYTES = 8 * 1024 * 1024  # kept from the start of the output
TAIL_BYTES = 8 * 1024 * 1024  # kept from its end: what classify and a reader need
READ_CHUNK = 64 * 1024
JOIN_TIMEOUT_S = 5.0  # after the case's processes are gone, for the last bytes
TAIL_READ_BYTES = 64 * 1024  # what a reader of the log's end needs: classify keeps less


class BoundedLog:
    """A pipe into ``path``, kept to ``head_bytes`` + ``tail_bytes`` (:meth:`start`, hand
    :attr:`write_fd` to the child, :meth:`started`, and :meth:`finish` once it is gone)."""

    def __init__(
        self, path: Path, head_bytes: int = HEAD_BYTES, tail_bytes: int = TAIL_BYTES
    ) -> None:
        self.path = Path(path)
        self.head_bytes = head_bytes
        self.tail_bytes = tail_bytes
        self.dropped = 0  # bytes left out between the head and the tail
        self.write_fd: int | None = None
        self._read_fd: int | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        """Open the pipe and start reading it; the write end, for the child's stdout."""
        self._read_fd, self.write_fd = os.pipe()
        self._thread = threading.Thread(
            target=self._drain, name=f"gpubench-log-{self.path.name}", daemon=True
        )
        self._thread.start()
        return self.write_fd

    def started(self) -> None:
        """The child has its copy of the write end: close this process's, so that the
        reader sees end of file when the child's processes have all exited."""
        if self.write_fd is not None:
            os.close(self.write_fd)
            self.write_fd = None

    def finish(self, timeout_s: float = JOIN_TIMEOUT_S) -> None:
        """Wait for the reader to write the tail; a process of the case still holding the
        pipe (one that survived SIGKILL) leaves the log with its head only."""
        self.started()
        if self._thread is None:
            return
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning(
                "%s: a process of the case still holds its output; the log keeps its head",
                self.path,
            )

    def _drain(self) -> None:
        assert self._read_fd is not None
        tail = bytearray()
        written = 0
        try:
            with open(self.path, "wb", buffering=0) as out:
                while chunk := os.read(self._read_fd, READ_CHUNK):
                    if written < self.head_bytes:
                        head = chunk[: self.head_bytes - written]
                        out.write(head)
                        written += len(head)
                        chunk = chunk[len(head) :]
                    if chunk:
                        tail += chunk
                        if len(tail) > 2 * self.tail_bytes:  # trim now and then, not per chunk
                            self.dropped += len(tail) - self.tail_bytes
                            del tail[: len(tail) - self.tail_bytes]
                if len(tail) > self.tail_bytes:
                    self.dropped += len(tail) - self.tail_bytes
                    del tail[: len(tail) - self.tail_bytes]
                if self.dropped:
                    note = (
                        f"\n[gpubench: {self.dropped} bytes of output left out here; the log "
                        f"keeps the first {self.head_bytes} and the last {self.tail_bytes}]\n"
                    )
                    out.write(note.encode())
                out.write(tail)
        except OSError as exc:
            log.warning("%s: the case's output could not be logged: %s", self.path, exc)
            while True:  # keep the pipe drained, so the child never blocks on a full one
                try:
                    if not os.read(self._read_fd, READ_CHUNK):
                        break
                except OSError:
                    break
        finally:
            os.close(self._read_fd)


def read_tail(path: Path, max_bytes: int = TAIL_READ_BYTES) -> str:
    """The end of a log file, decoded leniently; empty when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - max_bytes))
            return fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
