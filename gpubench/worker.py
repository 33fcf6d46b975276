"""The child side of the worker protocol: ``python -m gpubench.worker --job J --result R
--progress P``.

Reads ``job.json`` (``{"case", "profile", "nodeid", "run_id"}``), runs the
case's engine under the profile's memory cap (:mod:`gpubench.capacity`),
assembles the Result once from the engine's Measurement and what only the
worker knows (the capacity it enforced, the environment, its pid), and writes
``result.json`` atomically. Exit codes (docs/architecture.md): 0 when a
Result was written (``ok``, ``over_capacity``, ``oom``, ``diverged``), 1
after an unexpected exception (a ``crashed`` Result with the traceback is
still written when the job could be read). Under torchrun every rank writes
its Result (rank 0 to ``--result``, rank N beside it:
:func:`~gpubench.protocol.rank_result_path`), and a rank whose case did not
train to the end exits ``EXIT_RANK_FAILED``: torchrun then stops the other
ranks at once instead of leaving them blocked in a collective until the
case's time limit (:func:`gpubench.runner.classify.merge_rank_results` finds
the rank that failed first). The worker dies with its parent, the runner or
torchrun (:mod:`gpubench.tether`).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gpubench.capacity import CapacityLimit
from gpubench.case import Case
from gpubench.engines.base import Measurement
from gpubench.engines.distributed import Ranks
from gpubench.models.built import ParameterCountMismatch
from gpubench.oom import is_oom
from gpubench.plausibility import implausible_reasons, parameter_sentence
from gpubench.profiles import HardwareProfile
from gpubench.protocol import ProgressWriter, rank_result_path, write_json_atomic
from gpubench.result import Environment, ErrorInfo, Metrics, Result
from gpubench.tether import tether_to_parent

EXIT_OK = 0  # a Result was written, whatever its status
EXIT_ERROR = 1  # an unexpected exception; a crashed Result was written if possible
EXIT_RANK_FAILED = 3  # torchrun, several ranks: this rank's Result is not ok; stop the rest


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m gpubench.worker", description="Run one gpubench case (child side)."
    )
    parser.add_argument("--job", required=True, type=Path, help="job.json to read")
    parser.add_argument("--result", required=True, type=Path, help="result.json to write")
    parser.add_argument("--progress", type=Path, default=None, help="progress.jsonl to append")
    return parser.parse_args(argv)


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def run_job(job: dict[str, Any], progress: ProgressWriter) -> tuple[Result, int]:
    """Run one job; returns its Result and the exit code. Never raises for a case's failure."""
    case = Case.from_dict(job["case"])
    profile = HardwareProfile.from_dict(job["profile"])
    started_at = now_iso()
    measurement, capacity = measure_under_cap(case, profile, progress)
    metrics = measurement.metrics
    if capacity is not None:
        metrics = dataclasses.replace(
            metrics,
            capacity_bytes=capacity.capacity_bytes,
            capacity_emulated=capacity.emulated,
            runtime_rss_bytes=capacity.runtime_rss_bytes,
        )
        if capacity.emulated:  # a smaller card emulated on a bigger one runs at the bigger
            # one's speed: its MFU against the profile's peak would mean nothing
            metrics = dataclasses.replace(metrics, mfu=None)
    result = Result(
        case=case,
        profile=profile,
        status=final_status(measurement, profile),
        metrics=metrics,
        series=measurement.series,
        environment=_fingerprint(profile),
        error=measurement.error,
        nodeid=job.get("nodeid"),
        run_id=job.get("run_id"),
        worker_pid=os.getpid(),
        started_at=started_at,
    )
    result = dataclasses.replace(result, implausible=implausible_reasons(result))
    return result, EXIT_ERROR if result.status == "crashed" else EXIT_OK


def measure_under_cap(
    case: Case, profile: HardwareProfile, progress: ProgressWriter
) -> tuple[Measurement, CapacityLimit | None]:
    """The engine's Measurement of ``case``, trained under the profile's memory cap, and
    the cap (None when it was never applied). An exception the engine did not classify
    is a Measurement too: ``oom`` for an allocation failure (the engine's own set-up
    under the cap), else ``crashed``."""
    capacity: CapacityLimit | None = None
    try:
        import torch  # noqa: F401 - imported before the cap so it counts as baseline

        from gpubench.engines import get_engine

        engine = get_engine(case.engine)
        engine.prepare(case, profile, progress)  # the framework's set-up (imports, ops): uncapped
        capacity = CapacityLimit.apply(profile)
        try:
            return engine.run(case, profile, progress), capacity
        finally:
            capacity.release()
    except ParameterCountMismatch as exc:  # a verdict on the build, not a bug: no traceback
        return mismatch_measurement(case, exc), capacity
    except Exception as exc:
        host_capped = capacity is not None and capacity.host_capped
        status = "oom" if is_oom(exc, host_capped) else "crashed"
        return Measurement(status=status, error=ErrorInfo.from_exception(exc)), capacity


def mismatch_measurement(case: Case, exc: ParameterCountMismatch) -> Measurement:
    """A ``crashed`` Measurement (statuses are fixed) that says which check stopped the case,
    with the counts it compared: the Result's ``implausible`` repeats its sentence."""
    message = parameter_sentence(exc.n_params, exc.declared, case) or str(exc)
    return Measurement(
        status="crashed",
        metrics=Metrics(n_params=exc.n_params, declared_params=exc.declared),
        error=ErrorInfo(type=type(exc).__name__, message=message),
    )


def final_status(measurement: Measurement, profile: HardwareProfile) -> str:
    """The engine's status, or ``over_capacity`` for a CUDA case that trained to the end with
    its device peak above the profile's capacity (PASS*: it ran, on a bigger card)."""
    if (
        measurement.status == "ok"
        and profile.kind == "cuda"
        and measurement.metrics.exceeds(profile.memory_bytes)
    ):
        return "over_capacity"
    return measurement.status


def _fingerprint(profile: HardwareProfile) -> Environment:
    try:
        from gpubench.trackers.environment import fingerprint

        return fingerprint(cuda=profile.kind == "cuda", cpu_only=profile.kind != "cuda")
    except Exception:  # a fingerprint must never cost the answer
        traceback.print_exc()
        return Environment()


def main(argv: Sequence[str] | None = None) -> int:
    tether_to_parent()  # a worker never outlives the runner (or torchrun) that started it
    args = parse_args(argv)
    ranks = Ranks.from_env()
    progress = ProgressWriter(args.progress if ranks.rank == 0 else None)
    try:
        progress.emit("starting")
        job = json.loads(Path(args.job).read_text(encoding="utf-8"))
        result, exit_code = run_job(job, progress)
        write_json_atomic(rank_result_path(args.result, ranks.rank), result.to_dict())
        if result.error is not None and exit_code != EXIT_OK:
            print(result.error.traceback, file=sys.stderr, end="")
        if ranks.distributed and exit_code == EXIT_OK and not result.ran:
            if result.error is not None:
                print(
                    f"rank {ranks.rank}: {result.status}: {result.error.message}", file=sys.stderr
                )
            return EXIT_RANK_FAILED
        return exit_code
    except Exception:  # the job itself is unreadable: no Result can be built
        traceback.print_exc()
        return EXIT_ERROR
    finally:
        progress.close()


if __name__ == "__main__":
    sys.exit(main())
