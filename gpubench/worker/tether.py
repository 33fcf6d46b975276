"""Dying with the parent: a case's processes do not outlive the process that started them.

:func:`tether_to_parent` asks the kernel to SIGKILL this process when its
parent dies (Linux ``PR_SET_PDEATHSIG``), whatever killed the parent, SIGKILL
included; no Python code has to run for it, so a worker stuck in a C call
dies as surely as one asleep. The worker calls it first thing, and
``python -m gpubench.worker.tether COMMAND...`` calls it and then execs COMMAND
(the request survives ``exec``): the runner starts torchrun that way, so
torchrun dies with pytest and each rank, a worker, with torchrun.

The request comes too late for a parent that died while this process was
starting; :data:`PARENT_PID_ENV` names the parent the launcher meant, and a
process whose parent is no longer that one ends itself at once.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence

from gpubench.worker.prctl import PR_SET_PDEATHSIG, prctl

PARENT_PID_ENV = "GPUBENCH_PARENT_PID"  # the pid a tethered process expects as its parent


def tether_to_parent(sig: signal.Signals = signal.SIGKILL) -> bool:
    """Have ``sig`` sent to this process when its parent dies; if the parent named by
    :data:`PARENT_PID_ENV` has already gone, send it now. False where the kernel offers
    no such request (not Linux)."""
    call = prctl()
    if call is None or call(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return False
    expected = os.environ.get(PARENT_PID_ENV, "")
    if expected.isdigit() and os.getppid() != int(expected):
        os.kill(os.getpid(), sig)  # orphaned before the request was in place
    return True


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m gpubench.worker.tether COMMAND [ARG...]``: tethered, become COMMAND, whose own
    tethered children (torchrun's ranks) expect it as their parent."""
    command = list(sys.argv[1:] if argv is None else argv)
    if not command:
        sys.exit("usage: python -m gpubench.worker.tether COMMAND [ARG...]")
    tether_to_parent()
    os.environ[PARENT_PID_ENV] = str(os.getpid())  # exec keeps the pid
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
