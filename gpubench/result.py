"""The Result: schema-versioned JSON answer for one Case on one HardwareProfile.

Plain dataclasses with ``to_dict``/``from_dict``. A Result is written by the
worker (status ``ok``/``over_capacity``/``oom``/``diverged``), or by the parent
runner when the worker never answered (``timeout``/``crashed``). An OOM is a
Result, not an exception: the test decides whether it passes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gpubench.case import Case

SCHEMA_VERSION = 1

STATUSES = ("ok", "over_capacity", "oom", "diverged", "timeout", "crashed")
RAN_STATUSES = ("ok", "over_capacity")  # the case trained to the end
NOISY_CV = 0.05  # coefficient of variation above which a measurement is flagged noisy


def _from_fields(cls: Any, data: Mapping[str, Any]) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class Stats:
    """Summary of a series: median with p10/p90 and coefficient of variation."""

    n: int
    median: float
    p10: float
    p90: float
    mean: float
    stdev: float
    cv: float  # stdev / mean
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        vals = sorted(float(v) for v in values)
        if not vals:
            raise ValueError("Stats.of needs at least one value")
        mean = statistics.fmean(vals)
        stdev = statistics.stdev(vals) if len(vals) > 1 else 0.0
        return cls(
            n=len(vals),
            median=statistics.median(vals),
            p10=_percentile(vals, 10),
            p90=_percentile(vals, 90),
            mean=mean,
            stdev=stdev,
            cv=stdev / mean if mean else math.inf,
            min=vals[0],
            max=vals[-1],
        )

    @property
    def noisy(self) -> bool:
        return self.cv > NOISY_CV


def _finite_or_null(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    return value


def _percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Linear-interpolated percentile (numpy's default 'linear' method)."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * pct / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


@dataclass
class Metrics:
    """What the worker measured. Throughput over measured (post-warm-up) steps only."""

    tokens_per_s: Stats | None = None  # all ranks' real tokens / step time
    samples_per_s: Stats | None = None
    step_time_s: Stats | None = None
    warmup_steps: int = 0  # steps excluded as warm-up
    measured_steps: int = 0
    steady_state_detected: bool = False  # False: warm-up hit max_warmup_steps
    timing: str = ""  # how step time was taken ("cuda-events", "perf_counter")
    tokens_per_step: int = 0  # all ranks
    n_params: int = 0
    declared_params: int | None = None
    # memory, bytes
    peak_allocated_bytes: int | None = None  # torch.cuda.max_memory_allocated
    peak_reserved_bytes: int | None = None  # torch.cuda.max_memory_reserved
    nvml_peak_used_bytes: int | None = None  # NVML per-process used GPU memory
    peak_rss_bytes: int | None = None  # host RSS of the worker's process tree, sampled
    capacity_bytes: int | None = None  # the profile's capacity the case ran under
    capacity_emulated: bool = False  # capacity enforced below the physical device's
    # training health
    loss_start: float | None = None  # mean of the first few finite losses
    loss_end: float | None = None  # mean of the last few finite losses (a
    # diverged case: before the loss went non-finite; its status, not this, says it failed)
    grad_norm_median: float | None = None
    grad_norm_max: float | None = None
    nonfinite_steps: int = 0
    wall_time_s: float | None = None  # worker: model build to last step

    @property
    def loss_decreased(self) -> bool:
        return (
            self.loss_start is not None
            and self.loss_end is not None
            and self.loss_end < self.loss_start
        )

    @property
    def noisy(self) -> bool:
        return bool(self.step_time_s and self.step_time_s.noisy)

    @property
    def peak_device_bytes(self) -> int | None:
        """Largest device-memory figure measured (NVML, reserved or allocated)."""
        figures = [
            b
            for b in (
                self.nvml_peak_used_bytes,
                self.peak_reserved_bytes,
                self.peak_allocated_bytes,
            )
            if b is not None
        ]
        return max(figures) if figures else None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["loss_decreased"] = self.loss_decreased
        data["noisy"] = self.noisy
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Metrics:
        metrics = _from_fields(cls, data)
        for name in ("tokens_per_s", "samples_per_s", "step_time_s"):
            value = getattr(metrics, name)
            if isinstance(value, Mapping):
                setattr(metrics, name, _from_fields(Stats, value))
        return metrics


@dataclass
class Series:
    """Per-step series, warm-up steps included (the first ``Metrics.warmup_steps``)."""

    step_time_s: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    allocated_bytes: list[int] = field(default_factory=list)  # device memory after each step


@dataclass
class Environment:
    """Where the numbers were taken: the fingerprint every Result carries."""

    hostname: str = ""
    platform: str = ""
    python: str = ""
    torch: str = ""
    cuda: str | None = None  # torch.version.cuda
    cudnn: str | None = None
    driver: str | None = None  # NVIDIA driver, from NVML
    device: str = ""  # "NVIDIA H100 80GB HBM3" or the CPU model
    device_count: int = 0
    device_memory_bytes: int | None = None  # physical capacity of the device used
    cpu: str = ""
    cpu_count: int = 0
    host_memory_bytes: int = 0
    deepspeed: str | None = None
    transformers: str | None = None
    gpubench: str = ""
    git_commit: str | None = None
    git_dirty: bool | None = None
    allocator_conf: str | None = None  # PYTORCH_CUDA_ALLOC_CONF
    torch_threads: int = 0


@dataclass
class ErrorInfo:
    """Why a case did not train to the end."""

    type: str  # exception class, "Timeout", "Signal", "ExitCode"
    message: str
    stderr_tail: str = ""
    exit_code: int | None = None
    signal: str | None = None  # e.g. "SIGKILL"
    traceback: str = ""


@dataclass
class Result:
    case: Case
    profile: dict[str, Any]  # HardwareProfile.to_dict()
    status: str
    metrics: Metrics = field(default_factory=Metrics)
    series: Series = field(default_factory=Series)
    environment: Environment = field(default_factory=Environment)
    error: ErrorInfo | None = None
    nodeid: str | None = None  # the pytest id that ran it
    run_id: str | None = None
    worker_pid: int | None = None
    started_at: str = ""  # ISO 8601, UTC
    duration_s: float | None = None  # parent: launch to answer, whole subprocess
    estimate: dict[str, Any] | None = None  # filled by the estimator (later capability)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status={self.status!r}; valid: {', '.join(STATUSES)}")

    # -- what tests assert on ---------------------------------------------------------------
    @property
    def ran(self) -> bool:
        """Trained to the end (``ok`` or ``over_capacity``)."""
        return self.status in RAN_STATUSES

    @property
    def fits(self) -> bool:
        """Trained to the end within the profile's memory capacity."""
        return self.status == "ok"

    @property
    def tokens_per_s(self) -> float | None:
        return self.metrics.tokens_per_s.median if self.metrics.tokens_per_s else None

    @property
    def peak_memory_bytes(self) -> int | None:
        return self.metrics.peak_device_bytes or self.metrics.peak_rss_bytes

    @property
    def loss_decreased(self) -> bool:
        return self.metrics.loss_decreased

    @property
    def profile_name(self) -> str:
        return str(self.profile.get("name", "?"))

    def __repr__(self) -> str:
        return f"<Result {self.describe()}>"

    def describe(self) -> str:
        """One line for assertion messages and logs."""
        parts = [f"{self.case.id} on {self.profile_name}: {self.status}"]
        if self.tokens_per_s is not None:
            parts.append(f"{self.tokens_per_s:,.0f} tok/s")
        if self.peak_memory_bytes is not None:
            parts.append(f"peak {self.peak_memory_bytes / 2**30:.2f} GiB")
        if self.metrics.loss_start is not None and self.metrics.loss_end is not None:
            parts.append(f"loss {self.metrics.loss_start:.3f}->{self.metrics.loss_end:.3f}")
        if self.error:
            parts.append(f"{self.error.type}: {self.error.message}")
        return ", ".join(parts)

    # -- JSON -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Strict JSON: a non-finite number (a diverged loss, a skipped fp16 step's
        grad norm) is written as null, which every JSON reader accepts."""
        return _finite_or_null(
            {
                "schema_version": self.schema_version,
                "case": self.case.to_dict(),
                "profile": dict(self.profile),
                "status": self.status,
                "metrics": self.metrics.to_dict(),
                "series": dataclasses.asdict(self.series),
                "environment": dataclasses.asdict(self.environment),
                "error": dataclasses.asdict(self.error) if self.error else None,
                "nodeid": self.nodeid,
                "run_id": self.run_id,
                "worker_pid": self.worker_pid,
                "started_at": self.started_at,
                "duration_s": self.duration_s,
                "estimate": self.estimate,
            }
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Result:
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"result schema_version={version!r}; this gpubench reads {SCHEMA_VERSION}"
            )
        error = data.get("error")
        return cls(
            case=Case.from_dict(data["case"]),
            profile=dict(data["profile"]),
            status=data["status"],
            metrics=Metrics.from_dict(data.get("metrics") or {}),
            series=_from_fields(Series, data.get("series") or {}),
            environment=_from_fields(Environment, data.get("environment") or {}),
            error=_from_fields(ErrorInfo, error) if error else None,
            nodeid=data.get("nodeid"),
            run_id=data.get("run_id"),
            worker_pid=data.get("worker_pid"),
            started_at=data.get("started_at", ""),
            duration_s=data.get("duration_s"),
            estimate=data.get("estimate"),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> Result:
        return cls.from_dict(json.loads(text))
