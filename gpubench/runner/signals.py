"""Signals that would cut a case's clean-up short, and SIGTERM as an interrupt.

Ctrl-C raises KeyboardInterrupt in the runner while it waits for a worker;
its ``finally`` then ends the worker's tree (SIGTERM, up to 3 s grace,
SIGKILL) and removes the case's directory. A second Ctrl-C (or a SIGTERM)
during that grace would raise again and leave the worker running.
:class:`HeldSignals` holds SIGINT, SIGTERM and SIGHUP for the length of the
clean-up and delivers them when it is done.

SIGTERM (CI cancellation, ``timeout``, ``docker stop``) would end pytest at
once, with no clean-up at all; :func:`interrupt_on_sigterm` makes it raise
KeyboardInterrupt instead, so the session ends as an interrupted one does: the
running case cleaned up, every finished result kept and summarised.

Python runs signal handlers, and changes them, in the main thread only;
elsewhere both do nothing (no KeyboardInterrupt is raised in another thread).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class HeldSignals:
    """From :meth:`hold` to :meth:`release`, :data:`HELD_SIGNALS` are noted instead of
    handled; :meth:`release` puts the handlers back and raises what was noted, so an
    interrupt arrives once the clean-up is done. Both may be called more than once."""

    def __init__(self) -> None:
        self._saved: dict[int, Any] = {}
        self._noted: list[int] = []

    @property
    def holding(self) -> bool:
        return bool(self._saved)

    def hold(self) -> None:
        if self._saved or not _in_main_thread():
            return
        for sig in HELD_SIGNALS:
            previous = signal.getsignal(sig)
            if previous is None:  # a handler set outside Python: it could not be put back
                continue
            signal.signal(sig, self._note)
            self._saved[sig] = previous

    def release(self) -> None:
        saved, self._saved = self._saved, {}
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        noted, self._noted = self._noted, []
        for sig in noted:
            signal.raise_signal(sig)  # the restored handler's turn: KeyboardInterrupt, or death

    def _note(self, signum: int, frame: FrameType | None) -> None:
        if signum not in self._noted:
            self._noted.append(signum)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"{signal.Signals(signum).name} received")


def interrupt_on_sigterm() -> Callable[[], None] | None:
    """Make SIGTERM raise KeyboardInterrupt, where it still has its default action (a
    handler someone else installed is left alone). Returns the undo, or None when
    nothing was changed."""
    if not _in_main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return None
    signal.signal(signal.SIGTERM, _raise_interrupt)

    def undo() -> None:
        if _in_main_thread() and signal.getsignal(signal.SIGTERM) is _raise_interrupt:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

    return undo
