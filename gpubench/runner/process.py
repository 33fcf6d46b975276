"""run_case(): one case in one fresh subprocess, answered by a Result.

The parent writes ``job.json`` to a fresh directory, starts the launcher's
command in a new session (so the worker and its children form one process
group), hands progress events to a callback while it waits, and on the time
limit kills the whole tree: SIGTERM to the group, up to 3 s grace, then
SIGKILL to the group and to every descendant that left it. Whatever happens
to the worker, the caller gets a Result, never an exception.

Descendants that left the group are found two ways: a scan of the worker's
tree while it runs (every second; every 5 s while adoption works), and, on
Linux, by adoption: the parent is
a child subreaper while the case runs (:mod:`gpubench.runner.subreaper`), so
an orphan (a double-forked daemon, a torchrun rank whose torchrun died)
becomes the parent's child instead of init's. Every process killed is waited
for (reaped when it is the parent's child) before the next case may start:
a rank that still holds its GPU context would make the next case's OOM.
Between polls the parent sleeps (:mod:`gpubench.runner.exit_wait`): on a
machine whose cores all train, every wake-up of the parent costs the case.

A worker that has written its answer but does not exit (a hang in NCCL's or
a thread's teardown) gets ``EXIT_GRACE_S`` more, then is ended like a timeout;
its answer stands.

The clean-up is not cut short by a second Ctrl-C (:mod:`gpubench.runner.signals`
holds the signals until it is done), and should this process die before it
could clean up (SIGKILL), the worker dies with it (:mod:`gpubench.worker.tether`) and
the case's guardian ends the rest (:mod:`gpubench.runner.guardian`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
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
from typing import Any

import psutil

from gpubench.contracts.case import Case
from gpubench.contracts.profiles import HardwareProfile
from gpubench.contracts.protocol import (
    ProgressEvent,
    ProgressReader,
    WorkerPaths,
    write_json_atomic,
)
from gpubench.contracts.result import Result
from gpubench.runner.classify import (
    classify,
    launch_failed,
    merge_rank_results,
    parse_worker_result,
)
from gpubench.runner.exit_wait import ExitWaiter
from gpubench.runner.guardian import Guardian
from gpubench.runner.launchers import Launcher, launcher_for
from gpubench.runner.signals import HeldSignals
from gpubench.runner.subreaper import Subreaper, adopted_children

log = logging.getLogger(__name__)

TERM_GRACE_S = 3.0  # timeout: SIGTERM, then this long before SIGKILL
LEFTOVER_GRACE_S = 1.0  # normal exit: the same for processes the worker left behind
DESCENDANT_SCAN_INTERVAL_S = 1.0  # how often the running tree is recorded
ADOPTING_SCAN_INTERVAL_S = 5.0  # the same while the subreaper mark holds (a second net)
REAP_TIMEOUT_S = 10.0  # after SIGKILL; a process stuck in the kernel may take a while
EXIT_GRACE_S = 60.0  # from a written result.json to the worker's exit, before it is ended
STDERR_READ_BYTES = 64 * 1024  # enough for the tail classify keeps


def run_case(
    case: Case,
    profile: HardwareProfile,
    *,
    timeout_s: float,
    nodeid: str | None = None,
    run_id: str | None = None,
    on_progress: Callable[[ProgressEvent], None] | None = None,
    launcher: Launcher | None = None,
    env: Mapping[str, str] | None = None,
    workdir: Path | None = None,
    keep_workdir: bool = False,
    poll_interval_s: float = 0.25,
    repeat: int = 0,
) -> Result:
    """Run ``case`` against ``profile`` in a fresh worker process and return its Result.

    ``workdir`` replaces the fresh temporary directory (it must be empty or
    absent); either way it is removed afterwards unless ``keep_workdir``.
    ``env`` is added on top of this process's environment and the launcher's.
    Progress events reach ``on_progress`` every ``poll_interval_s``; the
    worker's exit is seen at once, whatever the interval.
    ``repeat`` marks a rerun confirming a suspected regression (``Result.repeat``).
    Worker failures (crash, signal, timeout, garbage output, failure to start)
    come back as a Result; only bad arguments raise.
    """
    if not timeout_s > 0:
        raise ValueError(f"timeout_s={timeout_s!r} must be positive")
    if not poll_interval_s > 0:
        raise ValueError(f"poll_interval_s={poll_interval_s!r} must be positive")
    launcher = launcher if launcher is not None else launcher_for(case)
    held = HeldSignals()  # from the start of the clean-up to its end
    paths = WorkerPaths(_make_workdir(workdir))
    try:
        job = {"case": case.to_dict(), "profile": profile.to_dict(), "nodeid": nodeid}
        write_json_atomic(paths.job, job | {"run_id": run_id})
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
        result = _answer(case, profile, paths, worker, timeout_s)
    finally:
        held.hold()
        try:
            if not keep_workdir:
                shutil.rmtree(paths.root, ignore_errors=True)
        finally:
            held.release()  # a signal held during the clean-up acts now
    return dataclasses.replace(  # what only the parent knows
        result,
        duration_s=worker.duration_s,
        nodeid=nodeid,
        run_id=run_id,
        worker_pid=worker.pid if result.worker_pid is None else result.worker_pid,
        started_at=result.started_at or worker.started_at,
        repeat=repeat,
    )


@dataclass(frozen=True)
class WorkerExit:
    """How the worker ended, as the parent saw it."""

    returncode: int | None
    timed_out: bool
    pid: int | None
    started_at: str  # ISO 8601, UTC
    duration_s: float  # launch to the tree being gone
    launch_error: str | None = None  # why the worker could not be started


def _answer(
    case: Case, profile: HardwareProfile, paths: WorkerPaths, worker: WorkerExit, timeout_s: float
) -> Result:
    """The case's Result, from what the worker left in ``paths`` and how it ended."""
    if worker.launch_error is not None:
        return launch_failed(case, profile, worker.launch_error)
    stderr = _read_tail(paths.stderr)
    result = classify(
        case,
        profile,
        returncode=worker.returncode,
        timed_out=worker.timed_out,
        result_data=_read_result_data(paths.result),
        stderr=stderr,
        timeout_s=timeout_s,
    )
    if case.nproc > 1:
        result = merge_rank_results(result, _rank_results(paths), stderr)
    return result


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
    try:
        with Subreaper() as reaper:
            known = _own_children()  # what this process ran before the case (the guardian)
            since = time.time() - 1.0  # create_time has clock-tick resolution
            proc = _start(launcher, paths, {**env, **guardian.env})
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
    relay.poll()
    return WorkerExit(proc.returncode, timed_out, proc.pid, started_at, time.monotonic() - t0)


def _start(
    launcher: Launcher, paths: WorkerPaths, env: Mapping[str, str]
) -> subprocess.Popen[bytes] | str:
    """The worker, started in a new session (its own process group) with its output in
    ``paths``; or why it could not be started."""
    argv = launcher.argv(paths)
    full_env = os.environ | {"PYTHONUNBUFFERED": "1"} | launcher.env() | dict(env)
    with open(paths.stdout, "wb") as stdout, open(paths.stderr, "wb") as stderr:
        try:
            return subprocess.Popen(
                argv,
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                env=full_env,
            )
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            command = argv[0] if argv else "(empty command)"
            return f"{command}: {type(exc).__name__}: {exc}"


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


def _read_result_data(path: Path) -> dict[str, Any] | None:
    """The worker's result.json as a dict; None when missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _rank_results(paths: WorkerPaths) -> list[tuple[float, int, Result]]:
    """Every rank's own Result with when it was written (rank 0's: result.json)."""
    found: list[tuple[float, int, Result]] = []
    for rank, path in [(0, paths.result), *paths.rank_results()]:
        result, _ = parse_worker_result(_read_result_data(path))
        if result is not None:
            try:
                found.append((path.stat().st_mtime, rank, result))
            except OSError:
                continue
    return found


def _read_tail(path: Path, max_bytes: int = STDERR_READ_BYTES) -> str:
    """The end of a log file, decoded leniently; empty when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - max_bytes))
            return fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
