"""A watcher that outlives the runner: a case whose pytest died is ended anyway.

The runner ends a case's process tree itself in every way it can see the
case end (exit, timeout, KeyboardInterrupt). What it cannot handle is its own
death: SIGKILL, or a signal with no handler. For that, each case has a
guardian (:mod:`gpubench.runner.guardian_main`), a small process in a session
of its own (so Ctrl-C at the terminal does not reach it) that ignores SIGINT,
SIGTERM and SIGHUP and reads a pipe from the runner. Every process of the
case carries ``GPUBENCH_CASE_TOKEN`` (a random token) in its environment,
inherited down the tree, through ``setsid`` and torchrun alike. When the case
has been cleaned up the runner writes ``released`` and the guardian exits.
When the pipe closes without it, the runner is gone (the kernel closes a dead
process's descriptors): the guardian ends every process carrying the token
and the worker's process group, removes the case's directory when asked to,
and exits.

This module is the runner's handle on it: :meth:`Guardian.start`, then
:meth:`Guardian.release`.
"""

from __future__ import annotations

import logging
import secrets
import subprocess
import sys
from pathlib import Path

from gpubench.runner import guardian_main
from gpubench.runner.guardian_main import CASE_TOKEN_ENV, RELEASED

log = logging.getLogger(__name__)

EXIT_TIMEOUT_S = 5.0  # released: the guardian's exit, before it is killed


class Guardian:
    """The runner's handle on one case's guardian (:meth:`start`, then :meth:`release`)."""

    def __init__(self, proc: subprocess.Popen[bytes] | None, token: str) -> None:
        self._proc = proc
        self.token = token

    @classmethod
    def start(cls, workdir: Path | None = None) -> Guardian:
        """A guardian for a case whose processes get :attr:`env`; it removes ``workdir``
        if the runner dies. A guardian that cannot start is logged; the case runs."""
        token = secrets.token_hex(8)
        # isolated, without site-packages: a few milliseconds, nothing installed can break it
        program = guardian_main.__file__
        argv = [sys.executable, "-I", "-S", program, token, str(workdir or "")]
        try:
            proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("no guardian for this case (%s): if pytest is killed, it may run on", exc)
            proc = None
        return cls(proc, token)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def env(self) -> dict[str, str]:
        """What marks a process as this case's."""
        return {CASE_TOKEN_ENV: self.token}

    def watch_group(self, pgid: int) -> None:
        """Also signal process group ``pgid`` (the worker's) if the runner dies."""
        self._send(f"group {pgid}")

    def release(self) -> None:
        """The case is cleaned up: the guardian exits, having done nothing."""
        if self._proc is None:
            return
        self._send(RELEASED)
        try:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
        except OSError:
            pass
        try:
            self._proc.wait(timeout=EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning("guardian pid %d did not exit when released; killing it", self._proc.pid)
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def _send(self, line: str) -> None:
        stdin = self._proc.stdin if self._proc is not None else None
        if stdin is None:
            return
        try:
            stdin.write(line.encode() + b"\n")
            stdin.flush()
        except (BrokenPipeError, ValueError):  # it died, or the pipe is closed
            pass
