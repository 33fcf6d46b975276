"""The contained launch: every process that runs user code is started, watched and ended here.

:func:`run_contained` writes a job to a fresh directory, starts the launcher's
command in a new session (so the child and its children form one process
group), hands progress events to a callback while it waits, and on the time
limit kills the whole tree: SIGTERM to the group, up to 3 s grace, then
SIGKILL to the group and to every descendant that left it. The child answers
in a file (``result.json``), never on stdout: its stdout and stderr are logs,
kept to a bounded size (:mod:`gpubench.runner.output_log`). Whatever the child
does, the caller gets its answer or an exit to classify, never a stray process:
a case's worker (:func:`gpubench.runner.process.run_case`) and the estimate's
child (:mod:`gpubench.estimate.isolated`) alike. The memory cap is the child's
to apply to itself, from the profile in its job (:mod:`gpubench.worker.capacity`).

Descendants that left the group are found two ways: a scan of the child's
tree while it runs (every second; every 5 s while adoption works), and, on
Linux, by adoption: this process is
a child subreaper while the child runs (:mod:`gpubench.runner.subreaper`), so
an orphan (a double-forked daemon, a torchrun rank whose torchrun died)
becomes this process's child instead of init's. Every process killed is waited
for (reaped when it is this process's child) before the next case may start:
a rank that still holds its GPU context would make the next case's OOM.
Between polls this process sleeps (:mod:`gpubench.runner.exit_wait`): on a
machine whose cores all train, every wake-up of the parent costs the case.

A child that has written its answer but does not exit (a hang in NCCL's or
a thread's teardown) gets ``EXIT_GRACE_S`` more, then is ended like a timeout;
its answer stands.

The clean-up is not cut short by a second Ctrl-C (:mod:`gpubench.runner.signals`
holds the signals until it is done), and should this process die before it
could clean up (SIGKILL), the child dies with it (:mod:`gpubench.worker.tether`) and
the guardian ends the rest (:mod:`gpubench.runner.guardian`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import psutil

from gpubench.contracts.protocol import (
    ProgressEvent,
    ProgressReader,
    WorkerPaths,
    write_json_atomic,
)
from gpubench.runner.exit_wait import ExitWaiter
from gpubench.runner.guardian import Guardian
from gpubench.runner.launchers import Launcher
from gpubench.runner.output_log import BoundedLog
from gpubench.runner.signals import HeldSignals
from gpubench.runner.subreaper import Subreaper, adopted_children

log = logging.getLogger(__name__)

T = TypeVar("T")

TERM_GRACE_S = 3.0  # timeout: SIGTERM, then this long before SIGKILL
LEFTOVER_GRACE_S = 1.0  # normal exit: the same for processes the worker left behind
DESCENDANT_SCAN_INTERVAL_S = 1.0  # how often the running tree is recorded
ADOPTING_SCAN_INTERVAL_S = 5.0  # the same while the subreaper mark holds (a second net)
REAP_TIMEOUT_S = 10.0  # after SIGKILL; a process stuck in the kernel may take a while
EXIT_GRACE_S = 60.0  # from a written result.json to the worker's exit, before it is ended


@dataclass(frozen=True)
class WorkerExit:
    """How the worker ended, as the parent saw it."""

    returncode: int | None
    timed_out: bool
    pid: int | None
    started_at: str  # ISO 8601, UTC
    duration_s: float  # launch to the tree being gone
    launch_error: str | None = None  # why the worker could not be started


def run_contained(
    launcher: Launcher,
    job: Mapping[str, Any],
    answer: Callable[[WorkerPaths, WorkerExit], T],
    *,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    on_progress: Callable[[ProgressEvent], None] | None = None,
    workdir: Path | None = None,
    keep_workdir: bool = False,
    poll_interval_s: float = 0.25,
) -> T:
    """Write ``job`` to a fresh directory, run ``launcher``'s command on it, contained, and
    return ``answer(paths, how it ended)``, read before the directory is removed.

    ``workdir`` replaces the fresh temporary directory (it must be empty or
    absent); either way it is removed afterwards unless ``keep_workdir``.
    ``env`` is added on top of this process's environment and the launcher's.
    """
    if not timeout_s > 0:
        raise ValueError(f"timeout_s={timeout_s!r} must be positive")
    if not poll_interval_s > 0:
        raise ValueError(f"poll_interval_s={poll_interval_s!r} must be positive")
    held = HeldSignals()  # from the start of the clean-up to its end
    paths = WorkerPaths(_make_workdir(workdir))
    try:
        write_json_atomic(paths.job, dict(job))
        worker = _run_worker(
            launcher,
            paths,
            timeout_s=timeout_s,
            env=env or {},
            on_progress=on_progress,
            poll_interval_s=poll_interval_s,
            held=held,
            remove_workdir=not keep_workdir,
        )
        return answer(paths, worker)
    finally:
        held.hold()
        try:
            if not keep_workdir:
                shutil.rmtree(paths.root, ignore_errors=True)
        finally:
            held.release()  # a signal held during the clean-up acts now


def _run_worker(
    launcher: Launcher,
    paths: WorkerPaths,
    *,
    timeout_s: float,
    env: Mapping[str, str],
    on_progress: Callable[[ProgressEvent], None] | None,
    poll_interval_s: float,
    held: HeldSignals,
    remove_workdir: bool,
) -> WorkerExit:
    """Start the worker, watch it until it exits or its time is up, and end whatever of its
    process tree is left: also on KeyboardInterrupt, with signals held from the moment the
    clean-up starts (``held``; the caller releases them), and, should this process die,
    by the case's guardian (:mod:`gpubench.runner.guardian`)."""
    started_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    t0 = time.monotonic()
    guardian = Guardian.start(paths.root if remove_workdir else None)
    logs = (BoundedLog(paths.stdout), BoundedLog(paths.stderr))
    try:
        with Subreaper() as reaper:
            known = _own_children()  # what this process ran before the case (the guardian)
            since = time.time() - 1.0  # create_time has clock-tick resolution
            proc = _start(launcher, logs, {**env, **guardian.env}, paths)
            if isinstance(proc, str):
                return WorkerExit(None, False, None, started_at, time.monotonic() - t0, proc)
            guardian.watch_group(proc.pid)  # start_new_session: the worker leads its group
            tree = _ProcessTree(proc, known=known | {proc.pid}, since=since)
            relay = _ProgressRelay(paths.progress, on_progress)
            # each scan reads /proc/<pid>/stat of every process on the machine; while this
            # process adopts orphans, what a scan would miss is adopted anyway
            scan_interval_s = (
                ADOPTING_SCAN_INTERVAL_S if reaper.active else DESCENDANT_SCAN_INTERVAL_S
            )
            try:
                timed_out = _watch(
                    proc,
                    paths,
                    tree,
                    relay,
                    deadline=t0 + timeout_s,
                    scan_interval_s=scan_interval_s,
                    poll_interval_s=poll_interval_s,
                )
            finally:
                held.hold()  # a second Ctrl-C must not leave the tree half ended
                exited = proc.returncode is not None
                tree.end(grace_s=LEFTOVER_GRACE_S if exited else TERM_GRACE_S)
        tree.reap_adopted()  # orphans that died after the last look, now that none can arrive
    finally:
        held.hold()
        guardian.release()
        for output in logs:  # every process of the case is gone: the logs' ends are written
            output.finish()
    relay.poll()
    return WorkerExit(proc.returncode, timed_out, proc.pid, started_at, time.monotonic() - t0)


def _start(
    launcher: Launcher,
    logs: tuple[BoundedLog, BoundedLog],
    env: Mapping[str, str],
    paths: WorkerPaths,
) -> subprocess.Popen[bytes] | str:
    """The child, started in a new session (its own process group) with its stdout and
    stderr into ``logs``; or why it could not be started."""
    argv = launcher.argv(paths)
    full_env = os.environ | {"PYTHONUNBUFFERED": "1"} | launcher.env() | dict(env)
    stdout, stderr = logs
    try:
        return subprocess.Popen(
            argv,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=stdout.start(),
            stderr=stderr.start(),
            env=full_env,
        )
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        command = argv[0] if argv else "(empty command)"
        return f"{command}: {type(exc).__name__}: {exc}"
    finally:
        stdout.started()  # the child holds its copies; ours would keep the pipes open
        stderr.started()


def _watch(
    proc: subprocess.Popen[bytes],
    paths: WorkerPaths,
    tree: _ProcessTree,
    relay: _ProgressRelay,
    *,
    deadline: float,
    scan_interval_s: float,
    poll_interval_s: float,
) -> bool:
    """Sleep between polls until the worker exits, relaying its progress and recording its
    descendants; True when the time limit ended the wait. A worker that wrote its answer
    but does not exit is given ``EXIT_GRACE_S``."""
    next_scan = time.monotonic() + scan_interval_s
    answered_by: float | None = None  # when result.json appeared
    with contextlib.closing(ExitWaiter(proc)) as waiter:  # Popen.wait(timeout) busy-waits
        while True:
            relay.poll()
            if proc.poll() is not None:
                return False
            now = time.monotonic()
            if now >= deadline:
                return True
            if answered_by is None and paths.result.exists():
                answered_by = now
            if answered_by is not None and now - answered_by >= EXIT_GRACE_S:
                log.warning(
                    "worker pid %d wrote its result but has not exited in %.0f s; ending it",
                    proc.pid,
                    EXIT_GRACE_S,
                )
                return False
            if now >= next_scan:
                tree.record_descendants()
                next_scan = now + scan_interval_s
            waiter.wait(min(poll_interval_s, deadline - now))


def _own_children() -> set[int]:
    try:
        return {child.pid for child in psutil.Process().children()}
    except psutil.Error:
        return set()


class _ProgressRelay:
    """Tails progress.jsonl and hands each new event to the callback; a failing callback
    is logged, never allowed to fail the case."""

    def __init__(self, path: Path, callback: Callable[[ProgressEvent], None] | None) -> None:
        self._reader = ProgressReader(path) if callback is not None else None
        self._callback = callback
        self._failures = 0

    def poll(self) -> None:
        if self._reader is None or self._callback is None:
            return
        for event in self._reader.poll():
            try:
                self._callback(event)
            except Exception:
                self._failures += 1
                if self._failures == 1:
                    log.warning("on_progress callback failed; the case goes on", exc_info=True)
                else:
                    log.debug("on_progress callback failed again", exc_info=True)


class _ProcessTree:
    """The worker, its process group, every descendant seen running, and the orphans
    this process adopted (:mod:`gpubench.runner.subreaper`) since the case started.

    A descendant that called ``setsid`` has left the group; it is still killed
    if it was recorded while its parent was alive, or adopted once orphaned.
    The group is signalled only while it has a member: a group id cannot be
    handed to a new process while any member of the group is alive, so the
    signal never reaches a stranger.
    """

    def __init__(
        self, proc: subprocess.Popen[bytes], known: set[int] | None = None, since: float = 0.0
    ) -> None:
        self._proc = proc
        self._pgid = proc.pid  # start_new_session: the worker leads its own group
        self._seen: dict[int, psutil.Process] = {}
        self._known = known if known is not None else {proc.pid}
        self._since = since
        try:
            self._worker: psutil.Process | None = psutil.Process(proc.pid)
        except psutil.Error:
            self._worker = None  # already gone

    def record_descendants(self, roots: Iterable[psutil.Process] | None = None) -> None:
        """Remember every current descendant of ``roots`` (default: the worker and the
        orphans adopted so far)."""
        if roots is None:
            roots = list(self._adopted())
            if self._worker is not None and self._proc.poll() is None:
                roots.append(self._worker)
        for root in list(roots):
            if root.pid != self._proc.pid:  # the worker is Popen's to wait for
                self._seen.setdefault(root.pid, root)
            try:
                children = root.children(recursive=True)
            except psutil.Error:
                continue
            for child in children:
                self._seen.setdefault(child.pid, child)

    def end(self, grace_s: float) -> None:
        """Terminate whatever is still running, SIGKILL it after ``grace_s``, and wait
        for every process of the case to be gone (reaping this process's own)."""
        self.record_descendants()
        alive = self._alive()
        if alive:
            self._signal(alive, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while alive and time.monotonic() < deadline:
                time.sleep(0.05)
                alive = self._alive()
            if alive:
                self.record_descendants(alive)  # children forked during the grace period
                self._signal(self._alive(), signal.SIGKILL)
        try:
            self._proc.wait(timeout=REAP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning(
                "worker pid %d still running %.0f s after SIGKILL", self._proc.pid, REAP_TIMEOUT_S
            )
        self._wait_gone(list(self._seen.values()))

    def reap_adopted(self) -> None:
        """Kill and reap orphans adopted after :meth:`end` looked (a process re-parented
        to this one stays its child, whatever the subreaper mark says since)."""
        late = self._adopted()
        if late:
            self._seen.update((p.pid, p) for p in late)
            for proc in late:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
            self._wait_gone(late)

    def _adopted(self) -> list[psutil.Process]:
        return adopted_children(self._known, self._since)

    def _wait_gone(self, procs: list[psutil.Process]) -> None:
        """Until every one of ``procs`` is dead; this process's children among them are
        reaped, so no zombie of a case stays behind."""
        deadline = time.monotonic() + REAP_TIMEOUT_S
        pending = list(procs)
        while pending:
            still = []
            for proc in pending:
                if proc.pid != self._proc.pid:  # the worker is Popen's to reap
                    _reap_if_child(proc.pid)
                if _is_alive(proc):
                    still.append(proc)
            pending = still
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        for proc in pending:
            log.warning("pid %d of a finished case still running after SIGKILL", proc.pid)

    def _alive(self) -> list[psutil.Process]:
        procs = dict(self._seen)
        for orphan in self._adopted():
            procs.setdefault(orphan.pid, orphan)
        if self._worker is not None and self._proc.poll() is None:
            procs[self._worker.pid] = self._worker
        procs.update(self._group_members())
        return [p for p in procs.values() if _is_alive(p)]

    def _group_alive(self) -> bool:
        try:
            os.killpg(self._pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def _group_members(self) -> dict[int, psutil.Process]:
        if not self._group_alive():
            return {}  # the common case after a clean exit: one syscall, no scan
        members = {}
        for proc in psutil.process_iter():
            try:
                if os.getpgid(proc.pid) == self._pgid:
                    members[proc.pid] = proc
            except OSError:
                continue
        return members

    def _signal(self, procs: list[psutil.Process], sig: signal.Signals) -> None:
        if self._group_alive():  # an empty group's id may already be someone else's
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._pgid, sig)
        for proc in procs:
            try:
                proc.send_signal(sig)  # psutil refuses if the pid was reused
            except psutil.Error:
                continue


def _reap_if_child(pid: int) -> None:
    """``waitpid(pid, WNOHANG)`` when ``pid`` is this process's exited child; else nothing."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _is_alive(proc: psutil.Process) -> bool:
    """Running and not a zombie (a zombie is dead; only its parent's wait() is missing)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def _make_workdir(workdir: Path | None) -> Path:
    if workdir is None:
        return Path(tempfile.mkdtemp(prefix="gpubench-"))
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if any(workdir.iterdir()):
        raise ValueError(f"workdir {workdir} is not empty; a case needs a fresh directory")
    return workdir
