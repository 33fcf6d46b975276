"""An exclusive ``flock`` with a bounded wait that names who holds it.

Results, verdicts and outcomes are appended, and baselines saved, under an exclusive
lock (pytest-xdist's workers write the same files). A lock another process holds and
never lets go (a session stopped with SIGSTOP, a hung NFS client) used to be waited
for silently and forever. :func:`lock_exclusive` says after :data:`SAY_AFTER_S` which
process holds it (pid and command line, from Linux's ``/proc/locks``), and gives up
after ``wait_s`` with :class:`LockTimeout` naming the file and the holder.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from gpubench.contracts.text import safe_text

LOCK_WAIT_S = 60.0  # an append or a baseline save takes milliseconds
SAY_AFTER_S = 5.0
POLL_S = 0.05


class LockTimeout(TimeoutError):
    """A lock still held by another process after the wait (the message names both)."""


def lock_exclusive(
    fd: int,
    path: Path,
    *,
    wait_s: float | None = None,
    say_after_s: float | None = None,
    say: Callable[[str], object] | None = None,
) -> None:
    """``flock(fd, LOCK_EX)``, waiting at most ``wait_s`` seconds (:data:`LOCK_WAIT_S`):
    after ``say_after_s`` (:data:`SAY_AFTER_S`) one line (to stderr, or ``say``) names
    the holder; then :class:`LockTimeout`."""
    wait_s = LOCK_WAIT_S if wait_s is None else wait_s
    say_after_s = SAY_AFTER_S if say_after_s is None else say_after_s
    start = time.monotonic()
    said = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        waited = time.monotonic() - start
        if waited >= wait_s:
            raise LockTimeout(
                f"{path}: still locked after {wait_s:.0f} s, by {lock_holder(fd)}; end that "
                "process, or wait for it, and run again"
            )
        if not said and waited >= say_after_s:
            line = f"gpubench: waiting up to {wait_s:.0f} s for {path}, locked by {lock_holder(fd)}"
            (say or _stderr)(line)
            said = True
        time.sleep(POLL_S)


def lock_holder(fd: int) -> str:
    """Who holds the flock on ``fd``'s file: ``pid N (command line)`` from ``/proc/locks``,
    or ``another process`` where that cannot be read (not Linux, another pid namespace)."""
    st = os.fstat(fd)
    where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return "another process"
    for line in lines:
        fields = line.split()
        if "->" in fields or len(fields) < 6 or fields[1] != "FLOCK":
            continue  # "->": a process waiting for the lock, not holding it
        if fields[5] == where and fields[4].isdigit() and int(fields[4]) > 0:
            return f"pid {fields[4]} ({_command(int(fields[4]))})"
    return "another process"


def _command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "command unknown"
    text = raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")
    return safe_text(text[:200], lines=False) or "command unknown"


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
