"""The guardian's program: ``python -I -S guardian_main.py TOKEN [WORKDIR]``.

It waits on its standard input, a pipe from the runner
(:class:`gpubench.runner.guardian.Guardian`), for ``released``; if the pipe
closes without it, the runner died mid-case, and the guardian sends SIGTERM to
every process whose environment holds ``GPUBENCH_CASE_TOKEN=TOKEN`` and to the
worker's process group (``group PGID`` on the pipe), SIGKILL a second later to
what is left, removes WORKDIR and exits. It ignores SIGINT, SIGTERM and SIGHUP.

Every case starts one beside its worker, so it starts light: isolated and
without site-packages (``python -I -S``), importing the standard library only,
and at first only what it needs to wait (its CPU per case: docs/benchmarks/README.md).
"""

from __future__ import annotations

import os
import signal
import sys
import time

CASE_TOKEN_ENV = "GPUBENCH_CASE_TOKEN"  # in the environment of every process of a case
RELEASED = "released"
TERM_GRACE_S = 1.0  # SIGTERM to SIGKILL, once the runner is gone
GONE_TIMEOUT_S = 5.0  # then how long to go on killing what the scans still find


def marked_pids(token: str, proc_dir: str = "/proc") -> list[int]:
    """Pids of the processes (this user may read) whose environment holds this token."""
    needle = f"{CASE_TOKEN_ENV}={token}".encode()
    found = []
    try:
        names = os.listdir(proc_dir)
    except OSError:
        return []
    for name in names:
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"{proc_dir}/{name}/environ", "rb") as fh:
                environ = fh.read()
        except OSError:  # gone, or another user's
            continue
        if needle in environ.split(b"\0"):  # a zombie's reads empty: it is dead already
            found.append(int(name))
    return found


class _Case:
    """What the guardian ends: the processes carrying the token, and the worker's group
    while it has members (once empty, its id could be handed to a stranger)."""

    def __init__(self, token: str, group: int | None) -> None:
        self.token = token
        self.group = group

    def signal(self, sig: int) -> bool:
        """Send ``sig`` (0: none, a probe) to every process of the case; whether any was
        found."""
        pids = marked_pids(self.token)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except OSError:  # gone meanwhile
                continue
        if self.group is not None:
            try:
                os.killpg(self.group, sig)
            except OSError:
                self.group = None
        return bool(pids) or self.group is not None


def end_case(token: str, group: int | None) -> None:
    """SIGTERM, up to :data:`TERM_GRACE_S` for the case to go, then SIGKILL until none of
    its processes is found (:data:`GONE_TIMEOUT_S` at most)."""
    case = _Case(token, group)
    if not case.signal(signal.SIGTERM):
        return
    deadline = time.monotonic() + TERM_GRACE_S
    while time.monotonic() < deadline and case.signal(0):
        time.sleep(0.05)
    deadline = time.monotonic() + GONE_TIMEOUT_S
    while case.signal(signal.SIGKILL) and time.monotonic() < deadline:
        time.sleep(0.05)


def main(argv: list[str]) -> int:
    """``guardian.py TOKEN [WORKDIR]``: wait for the runner's ``released`` or its death."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    token, workdir = argv[0], (argv[1] if len(argv) > 1 else "")
    group = None
    for line in sys.stdin.buffer:  # until the runner closes the pipe, or dies
        command, _, value = line.decode(errors="replace").strip().partition(" ")
        if command == RELEASED:
            return 0
        if command == "group" and value.isdigit():
            group = int(value)
    end_case(token, group)
    if workdir:
        import shutil  # only now: its import is a third of the start-up

        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
