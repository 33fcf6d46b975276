"""What every tracker is: ``start()``/``stop()`` as a context manager, and a sampler thread.

A tracker measures one thing while a case trains; it is used as ``with
tracker:`` (or ``with tracker.track():``) and read through getters afterwards.
Clean-up (stopping a sampler thread, a final sample) is always in ``finally``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import TypeVar

T = TypeVar("T", bound="Tracker")

SAMPLER_STACK_BYTES = 512 * 1024  # a sampler loop needs little stack; the default is 8 MiB


def start_daemon(target: Callable[[], None], name: str) -> threading.Thread:
    """Start a sampler thread with a small stack.

    Under the worker's ``RLIMIT_DATA`` cap a thread's stack counts as data, so
    an 8 MiB default stack would eat a small profile's capacity (or fail to
    start at all) before training allocates anything.
    """
    previous = threading.stack_size(SAMPLER_STACK_BYTES)
    try:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
    finally:
        threading.stack_size(previous)
    return thread


class PeriodicSampler:
    """Calls ``sample()`` every ``interval_s`` on a small-stack daemon thread until stopped."""

    def __init__(self, sample: Callable[[], object], interval_s: float, name: str) -> None:
        self._sample = sample
        self.interval_s = interval_s
        self.name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self._stop.clear()
        self._thread = start_daemon(self._run, self.name)

    def stop(self) -> None:
        """Stop and join the thread; safe to call twice."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5.0)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()


class Tracker:
    """Base: ``start()``/``stop()`` wrapped as a context manager, ``stop()`` always runs."""

    def start(self) -> None:
        """Begin measuring (subclasses override)."""

    def stop(self) -> None:
        """Stop measuring and release resources; must be safe to call twice."""

    @contextmanager
    def track(self: T) -> Iterator[T]:
        self.start()
        try:
            yield self
        finally:
            self.stop()

    def __enter__(self: T) -> T:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
