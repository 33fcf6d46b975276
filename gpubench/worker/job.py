"""One job of the worker: the case's engine under the profile's memory cap, and the
Result assembled once from the engine's Measurement and what only the worker knows
(the capacity it enforced, the environment, its pid).

A case's failure is a Result, never an exception: an allocation failure is ``oom``
(:mod:`gpubench.contracts.oom`), a declared size the model does not have is
``crashed`` with ``ParameterCountMismatch``, anything else the engine raised is
``crashed`` with its traceback. :mod:`gpubench.worker.main` reads the job and
writes the answer.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import traceback
from typing import Any

from gpubench.contracts.case import Case
from gpubench.contracts.oom import is_oom
from gpubench.contracts.plausibility import implausible_reasons, parameter_sentence
from gpubench.contracts.profiles import HardwareProfile
from gpubench.contracts.protocol import ProgressWriter
from gpubench.contracts.result import Environment, ErrorInfo, Metrics, Result
from gpubench.worker.capacity import CapacityLimit
from gpubench.worker.engines.base import Measurement, TrainingEngine
from gpubench.worker.models.built import ParameterCountMismatch
from gpubench.worker.resume.job import ResumeJob


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def run_job(job: dict[str, Any], progress: ProgressWriter) -> Result:
    """Run one job and answer with its Result. Never raises for a case's failure."""
    case = Case.from_dict(job["case"])
    profile = HardwareProfile.from_dict(job["profile"])
    started_at = now_iso()
    resume = ResumeJob.from_job(job)  # refuses a checkpoint outside the run's directory
    measurement, capacity = measure_under_cap(case, profile, progress, resume)
    metrics = measurement.metrics
    if capacity is not None:
        metrics = dataclasses.replace(
            metrics,
            capacity_bytes=capacity.capacity_bytes,
            capacity_emulated=capacity.emulated,
            runtime_rss_bytes=capacity.runtime_rss_bytes,
        )
        if capacity.emulated:  # a smaller card emulated on a bigger one runs at the bigger
            # one's speed: its MFU against the profile's peak, and the profile's price of a
            # token at that speed, would mean nothing
            metrics = dataclasses.replace(metrics, mfu=None, usd_per_million_tokens=None)
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
        cold_start=list(measurement.cold_start),
        machine_load=measurement.machine_load,
    )
    return dataclasses.replace(result, implausible=implausible_reasons(result))


def measure_under_cap(
    case: Case, profile: HardwareProfile, progress: ProgressWriter, resume: ResumeJob | None = None
) -> tuple[Measurement, CapacityLimit | None]:
    """The engine's Measurement of ``case``, trained under the profile's memory cap, and
    the cap (None when it was never applied). An exception the engine did not classify
    is a Measurement too: ``oom`` for an allocation failure (the engine's own set-up
    under the cap), else ``crashed``."""
    capacity: CapacityLimit | None = None
    try:
        import torch  # noqa: F401 - imported before the cap so it counts as baseline

        from gpubench.worker.engines import get_engine

        engine = get_engine(case.engine)
        if resume is not None:  # the resume check's save or load (gpubench.worker.resume)
            if not isinstance(engine, TrainingEngine):
                raise TypeError(f"engine {case.engine!r} cannot take part in a resume check")
            engine.resume = resume
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
        from gpubench.worker.trackers.fingerprint import fingerprint

        return fingerprint(cuda=profile.kind == "cuda", cpu_only=profile.kind != "cuda")
    except Exception:  # a fingerprint must never cost the answer
        traceback.print_exc()
        return Environment()
