"""run_case(): one case in one fresh subprocess, answered by a Result.

The worker (``python -m gpubench.worker``, or torchrun's ranks of it) is started,
watched and ended by the contained launch (:func:`gpubench.runner.contained.run_contained`:
its own process group, a guardian, a subreaper, a time limit, bounded logs);
this module turns what it left behind (``result.json``, the ranks' results,
stderr's tail, the exit code) into the case's Result; a case of several ranks gets each
rank's own figures (:mod:`gpubench.runner.ranks`). Whatever happens to the
worker, the caller gets a Result, never an exception.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from gpubench.contracts.case import Case
from gpubench.contracts.profiles import HardwareProfile
from gpubench.contracts.protocol import ProgressEvent, WorkerPaths, read_answer
from gpubench.contracts.result import Result
from gpubench.runner.classify import (
    classify,
    launch_failed,
    merge_rank_results,
    parse_worker_result,
)
from gpubench.runner.contained import WorkerExit, run_contained
from gpubench.runner.launchers import Launcher, launcher_for
from gpubench.runner.output_log import read_tail
from gpubench.runner.ranks import with_ranks


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
    resume: Mapping[str, Any] | None = None,
) -> Result:
    """Run ``case`` against ``profile`` in a fresh worker process and return its Result.

    ``workdir`` replaces the fresh temporary directory (it must be empty or
    absent); either way it is removed afterwards unless ``keep_workdir``.
    ``env`` is added on top of this process's environment and the launcher's.
    Progress events reach ``on_progress`` every ``poll_interval_s``; the
    worker's exit is seen at once, whatever the interval.
    ``repeat`` marks a rerun confirming a suspected regression (``Result.repeat``).
    ``resume`` is the resume check's part for the worker (:mod:`gpubench.runner.resume`).
    Worker failures (crash, signal, timeout, garbage output, failure to start)
    come back as a Result; only bad arguments raise.
    """
    launcher = launcher if launcher is not None else launcher_for(case)
    job: dict[str, Any] = {"case": case.to_dict(), "profile": profile.to_dict(), "nodeid": nodeid}
    if resume is not None:
        job["resume"] = dict(resume)

    def answer(paths: WorkerPaths, worker: WorkerExit) -> tuple[Result, WorkerExit]:
        return _answer(case, profile, paths, worker, timeout_s), worker

    result, worker = run_contained(
        launcher,
        job | {"run_id": run_id},
        answer,
        timeout_s=timeout_s,
        env=env,
        on_progress=on_progress,
        workdir=workdir,
        keep_workdir=keep_workdir,
        poll_interval_s=poll_interval_s,
    )
    return dataclasses.replace(  # what only the parent knows
        result,
        duration_s=worker.duration_s,
        nodeid=nodeid,
        run_id=run_id,
        worker_pid=worker.pid if result.worker_pid is None else result.worker_pid,
        started_at=result.started_at or worker.started_at,
        repeat=repeat,
    )


def _answer(
    case: Case, profile: HardwareProfile, paths: WorkerPaths, worker: WorkerExit, timeout_s: float
) -> Result:
    """The case's Result, from what the worker left in ``paths`` and how it ended."""
    if worker.launch_error is not None:
        return launch_failed(case, profile, worker.launch_error)
    stderr = read_tail(paths.stderr)
    result = classify(
        case,
        profile,
        returncode=worker.returncode,
        timed_out=worker.timed_out,
        result_data=read_answer(paths.result),
        stderr=stderr,
        timeout_s=timeout_s,
    )
    if case.nproc > 1 or case.nnodes > 1:
        answered = _rank_results(paths)
        result = merge_rank_results(result, answered, stderr)
        # a machine's own ranks: the other machines' ranks write their Results there
        world_size = case.nproc if case.nnodes == 1 else 0
        answers = [(rank, r) for _, rank, r in answered]
        result = with_ranks(result, answers, world_size, stderr)
    return result


def _rank_results(paths: WorkerPaths) -> list[tuple[float, int, Result]]:
    """Every rank's own Result with when it was written (rank 0's: result.json)."""
    found: list[tuple[float, int, Result]] = []
    for rank, path in [(0, paths.result), *paths.rank_results()]:
        result, _ = parse_worker_result(read_answer(path))
        if result is not None:
            try:
                found.append((path.stat().st_mtime, rank, result))
            except OSError:
                continue
    return found
