"""How a worker ended -> a Result. Pure functions: no processes, no files.

The rules, in order:

1. a valid ``result.json`` wins, whatever the exit code (a ``crashed`` Result
   without a stderr tail gets the parent's);
2. no result and the parent hit the time limit -> ``timeout``;
3. no result and stderr that looks like an out-of-memory error -> ``oom``;
4. no result and death by signal (negative return code) -> ``crashed``, ``Signal``;
5. no result and any other exit code -> ``crashed``, ``ExitCode`` (or ``NoResult``
   for a worker that exited 0 without answering).

A torchrun case (several ranks) is classified on rank 0's result, then
:func:`merge_rank_results` looks at every rank's: when rank 0 did not train to
the end, the case's status and error are those of the rank that caused it (an
``oom`` or ``diverged`` rank first, else the earliest-written failure), so a
rank-1 OOM that made rank 0 see
"connection closed by peer" (gloo) or hang until the time limit (NCCL) is
reported as an ``oom`` on rank 1, not a crash or a timeout of rank 0; a rank
that died without a result (a signal) is named from torchrun's own report.

Results built here carry the parent's environment fingerprint, since the
worker never sent its own.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import platform
import re
import signal
import socket
from collections.abc import Callable, Mapping
from typing import Any

from gpubench.contracts.case import Case
from gpubench.contracts.oom import looks_like_oom
from gpubench.contracts.profiles import HardwareProfile
from gpubench.contracts.result import Environment, ErrorInfo, Result

log = logging.getLogger(__name__)

STDERR_TAIL_LINES = 40
STDERR_TAIL_CHARS = 4000


def stderr_tail(
    text: str, max_lines: int = STDERR_TAIL_LINES, max_chars: int = STDERR_TAIL_CHARS
) -> str:
    """The last ``max_lines`` lines of ``text``, cut to its last ``max_chars`` characters."""
    tail = "\n".join(text.rstrip().splitlines()[-max_lines:])
    return tail[-max_chars:]


def oom_line(stderr: str) -> str | None:
    """The last stderr line that looks like an out-of-memory error, or None."""
    for line in reversed(stderr.splitlines()):
        if looks_like_oom(line):
            return line.strip()
    return None


def signal_name(returncode: int) -> str:
    """``SIGKILL`` for a return code of -9 (how subprocess reports death by signal)."""
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


@functools.cache
def _fingerprint() -> Environment:
    try:
        from gpubench.worker.trackers.fingerprint import fingerprint

        env = fingerprint()
        if isinstance(env, Environment):
            return env
        log.debug("environment fingerprint returned %r, not an Environment", type(env))
    except Exception:  # a missing or broken fingerprint must never fail a case
        log.debug("environment fingerprint unavailable; using a minimal one", exc_info=True)
    return Environment(
        hostname=socket.gethostname(),
        platform=platform.platform(),
        python=platform.python_version(),
    )


def parent_environment() -> Environment:
    """This process's environment fingerprint (full if available, else host/platform/python)."""
    return dataclasses.replace(_fingerprint())


def parse_worker_result(data: Mapping[str, Any] | None) -> tuple[Result | None, str]:
    """The worker's Result from its parsed ``result.json``, or None and why not."""
    if data is None:
        return None, "no readable result.json"
    try:
        return Result.from_dict(data), ""
    except Exception as exc:  # any schema problem means the worker did not answer
        return None, f"an invalid result.json ({type(exc).__name__}: {exc})"


def classify(
    case: Case,
    profile: HardwareProfile,
    *,
    returncode: int | None,
    timed_out: bool,
    result_data: Mapping[str, Any] | None,
    stderr: str,
    timeout_s: float | None = None,
    environment: Callable[[], Environment] = parent_environment,
) -> Result:
    """The Result for a finished worker (see the module docstring for the rules).

    ``stderr`` is the worker's stderr (or its end); ``environment`` is called only
    when the parent has to build the Result itself.
    """
    tail = stderr_tail(stderr)
    result, why_none = parse_worker_result(result_data)
    if result is not None:
        return _with_parent_details(result, returncode, tail)

    sig = signal_name(returncode) if returncode is not None and returncode < 0 else None
    status, kind, message = _without_result(returncode, timed_out, sig, tail, why_none, timeout_s)
    error = ErrorInfo(
        type=kind, message=message, stderr_tail=tail, exit_code=returncode, signal=sig
    )
    return Result(case=case, profile=profile, status=status, error=error, environment=environment())


def _without_result(
    returncode: int | None,
    timed_out: bool,
    sig: str | None,
    tail: str,
    why_none: str,
    timeout_s: float | None,
) -> tuple[str, str, str]:
    """(status, error type, message) of a worker that left no Result: rules 2 to 5."""
    if timed_out:
        limit = f"{timeout_s:g} s " if timeout_s is not None else ""
        return (
            "timeout",
            "Timeout",
            f"the case ran past its {limit}time limit; gpubench killed the worker's process group",
        )
    if (line := oom_line(tail)) is not None:
        return "oom", "OutOfMemory", f"the worker ran out of memory: {line}"
    if sig is not None:
        message = f"the worker was killed by {sig}"
        if sig == "SIGKILL":
            message += " (not by gpubench's timeout; it may have been the kernel OOM killer)"
        return "crashed", "Signal", message
    if returncode == 0:
        return "crashed", "NoResult", f"the worker exited with 0 but left {why_none}"
    code = "no exit status" if returncode is None else f"exit code {returncode}"
    return "crashed", "ExitCode", f"the worker ended with {code} and left {why_none}"


CAUSE_STATUSES = ("oom", "diverged")  # a rank's own training outcome, not a lost peer


def merge_rank_results(
    result: Result, ranks: list[tuple[float, int, Result]], stderr: str = ""
) -> Result:
    """Rank 0's ``result``, with the status and error of the rank that failed first.

    ``ranks`` holds ``(written_at, rank, Result)`` for each rank's own result file
    (rank 0's included when the worker wrote it). Rank 0 trained to the end: ``result``
    with each memory peak the largest any rank recorded (a capacity is per device,
    and ranks differ), ``over_capacity`` when any rank's device peak exceeded it. No
    rank failed: ``result`` as it is. Otherwise the first failed rank wins (an
    ``oom``/``diverged`` one before any other, then by time written); its error
    message is prefixed with the rank, and rank 0's stderr tail is kept when that
    rank has none. Rank 0's series and metrics stay (the steps every rank took
    together) when rank 0 recorded steps; otherwise the failed rank's Result is
    the base. A rank that died without writing a Result (a signal, ``os._exit``)
    is found in torchrun's "Root Cause" report on ``stderr`` (the launcher's):
    when that rank is not 0 and rank 0 only ``crashed``, the case's error is the
    dead rank's exit (:func:`torchrun_root_cause`).
    """
    if result.ran:
        return _with_largest_rank_memory(result, [r for _, _, r in ranks])
    # a training outcome (oom, diverged) makes the other ranks lose a peer and crash,
    # never the other way round: it is the cause whatever the file times say (the
    # failing rank closes its process group before it has written its result)
    failed = sorted(
        (r.status not in CAUSE_STATUSES, t, rank, r) for t, rank, r in ranks if not r.ran
    )
    if not failed or failed[0][2] == 0:
        return _with_silent_root_cause(result, {rank for _, rank, _ in ranks}, stderr)
    _, _, rank, first = failed[0]
    error = first.error or ErrorInfo(type="RankFailed", message=f"ended {first.status}")
    tail = result.error.stderr_tail if result.error else ""  # rank 0's (torchrun's) account
    code = result.error.exit_code if result.error else None
    error = dataclasses.replace(
        error,
        message=f"rank {rank}: {error.message}",
        stderr_tail=error.stderr_tail or tail,
        exit_code=code if error.exit_code is None else error.exit_code,
    )
    # rank 0 recorded no step (stopped by torchrun, or it crashed outside the loop):
    # the failed rank's own record, series and metrics included, is the best account
    base = result if result.series.step_time_s else first
    return dataclasses.replace(base, status=first.status, error=error)


# torchrun's ChildFailedError report: the "Root Cause (first observed failure)" block
_ROOT_CAUSE = re.compile(
    r"Root Cause \(first observed failure\):.*?rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)",
    re.DOTALL,
)


def torchrun_root_cause(stderr: str) -> tuple[int, int] | None:
    """``(rank, exit code)`` of the rank torchrun saw fail first (a negative code: the
    signal that ended it), from the report torchrun prints on stderr; None without one."""
    matches = list(_ROOT_CAUSE.finditer(stderr))
    if not matches:
        return None
    rank, code = matches[-1].groups()
    return int(rank), int(code)


def _with_silent_root_cause(result: Result, answered: set[int], stderr: str) -> Result:
    """``result`` (rank 0's crash, or the parent's) with the error of the rank torchrun
    names as the root cause, when that rank is not 0 and wrote no Result of its own."""
    cause = torchrun_root_cause(stderr)
    if result.status != "crashed" or cause is None:
        return result
    rank, code = cause
    if rank == 0 or rank in answered:
        return result
    sig = signal_name(code) if code < 0 else None
    how = f"was killed by {sig}" if sig else f"exited with code {code}"
    if sig == "SIGKILL":
        how += " (it may have been the kernel OOM killer)"
    message = f"rank {rank}: the worker {how} without a result (torchrun's root cause)"
    seen = result.error.message.strip().splitlines()[0][:300] if result.error else ""
    if seen and 0 in answered:  # rank 0's own account, not the parent's
        message += f"; rank 0 then saw: {seen}"
    error = ErrorInfo(
        type="Signal" if sig else "ExitCode",
        message=message,
        stderr_tail=result.error.stderr_tail if result.error else "",
        exit_code=code,
        signal=sig,
    )
    return dataclasses.replace(result, error=error)


def _with_largest_rank_memory(result: Result, ranks: list[Result]) -> Result:
    """``result`` (rank 0's, trained to the end) with each memory peak the largest any
    rank recorded, ``over_capacity`` when any rank ended so, and what any rank found cold
    (each rank measured the same machine load: rank 0's stands)."""
    others = [r for r in ranks if r is not result and r.ran]
    if not others:
        return result
    over = any(r.status == "over_capacity" for r in others)
    cold = list(dict.fromkeys(c for r in [result, *others] for c in r.cold_start))
    return dataclasses.replace(
        result,
        metrics=result.metrics.with_largest_memory(r.metrics for r in others),
        status="over_capacity" if over else result.status,
        cold_start=cold,
    )


def launch_failed(
    case: Case,
    profile: HardwareProfile,
    reason: str,
    *,
    environment: Callable[[], Environment] = parent_environment,
) -> Result:
    """The Result for a worker that could not even be started."""
    error = ErrorInfo(type="LaunchError", message=f"could not start the worker: {reason}")
    return Result(
        case=case, profile=profile, status="crashed", error=error, environment=environment()
    )


def _with_parent_details(result: Result, returncode: int | None, tail: str) -> Result:
    """Add what only the parent knows (exit code, stderr) to the worker's own Result."""
    error = result.error
    if result.status == "crashed" and error is None:
        error = ErrorInfo(type="Crashed", message="the worker reported a crash")
    if error is None:
        return result
    if result.status == "crashed" and not error.stderr_tail:
        error = dataclasses.replace(error, stderr_tail=tail)
    if error.exit_code is None:
        error = dataclasses.replace(error, exit_code=returncode)
    return dataclasses.replace(result, error=error)
