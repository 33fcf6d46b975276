"""The Result: schema-versioned JSON answer for one Case on one HardwareProfile.

Plain frozen dataclasses with ``to_dict``/``from_dict``. The worker assembles a
Result once from what the engine measured (status ``ok``/``over_capacity``/
``oom``/``diverged``); the parent adds what only it knows with
:func:`dataclasses.replace`, or builds the Result itself when the worker never
answered (``timeout``/``crashed``). An OOM is a Result, not an exception: the
test decides whether it passes. Records are read back by the policy of
:mod:`gpubench.contracts.schema`; an earlier schema version goes through :data:`UPGRADES`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gpubench.contracts.case import Case
from gpubench.contracts.conditions import MachineLoad, busy_sentence, cold_sentence
from gpubench.contracts.profiles import HardwareProfile
from gpubench.contracts.schema import SchemaError, record_fields
from gpubench.contracts.units import GiB

SCHEMA_VERSION = 9
STATUSES = ("ok", "over_capacity", "oom", "diverged", "timeout", "crashed")
RAN_STATUSES = ("ok", "over_capacity")  # the case trained to the end
THROUGHPUT_FIELDS = ("tokens_per_s", "samples_per_s", "step_time_s")  # Metrics: a whole run's


def _v1_to_v2(record: dict[str, Any]) -> dict[str, Any]:
    """v2 added ``repeat`` (a gate's confirmation reruns); every v1 Result was a first run."""
    return {**record, "repeat": 0}


def _v2_to_v3(record: dict[str, Any]) -> dict[str, Any]:
    """v3: a case that did not train to the end has no throughput (v2 summarised the steps
    it made as if they were the case's), and the steps it made are marked partial."""
    metrics = dict(record.get("metrics") or {})
    series = dict(record.get("series") or {})
    ran = record.get("status") in RAN_STATUSES
    if not ran:
        metrics.update(dict.fromkeys(THROUGHPUT_FIELDS))
    series["partial"] = not ran and bool(series.get("step_time_s"))
    return {**record, "metrics": metrics, "series": series}


def _v3_to_v4(record: dict[str, Any]) -> dict[str, Any]:
    """v4 added model FLOPs (``metrics.model_flops_per_token``, ``model_flops_per_s``,
    ``mfu``), the runtime's resident set a host cap is measured from
    (``metrics.runtime_rss_bytes``), ``implausible`` and ``predicted`` on the Result, and
    the estimator's fields on ``estimate``; a v3 record measured none of them."""
    metrics = {
        **dict.fromkeys(("model_flops_per_token", "model_flops_per_s", "mfu")),
        "runtime_rss_bytes": None,
        **dict(record.get("metrics") or {}),
    }
    return {**record, "metrics": metrics, "implausible": [], "predicted": False}


def _v4_to_v5(record: dict[str, Any]) -> dict[str, Any]:
    """v5 added the conditions of the measurement (``cold_start``: what the run built or
    filled first; ``machine_load``: other work on the machine during the measured steps)
    and the gate's thresholds the case was run with (``gate_thresholds``); a v4 record
    measured none of them (its judge falls back on the thresholds it is given)."""
    return {**record, "cold_start": [], "machine_load": None, "gate_thresholds": {}}


def _v5_to_v6(record: dict[str, Any]) -> dict[str, Any]:
    """v6 judges ``metrics.noisy`` only from at least :data:`MIN_MEASURED_STEPS` measured
    steps (before, a CV of 2 steps could call a case noisy). ``noisy`` is derived: the
    reader recomputes it, so a v5 record needs no change."""
    return record


def _v6_to_v7(record: dict[str, Any]) -> dict[str, Any]:
    """v7 added the diagnostics (issue 19): the median tokens/s's confidence interval and the
    adaptive stop (``metrics.precision_*``, ``tokens_per_s_low``/``high``, ``stop_reason``),
    time per phase (``metrics.phases``, ``series.phase_s``), telemetry and energy
    (``metrics.gpu_util`` ... ``disk_write_bytes``, ``series.telemetry``). A v6 record
    measured none of them: every one takes its field's default (None, empty), and its
    measured steps were a fixed count (``stop_reason`` "steps") and its steps were not
    split into phases (``case.time_phases`` False)."""
    metrics = dict(record.get("metrics") or {})
    if metrics.get("measured_steps"):
        metrics.setdefault("stop_reason", "steps")
    upgraded = {**record, "metrics": metrics}
    if isinstance(record.get("case"), dict):
        upgraded["case"] = {"time_phases": False, **record["case"]}
    return upgraded


def _v7_to_v8(record: dict[str, Any]) -> dict[str, Any]:
    """v8 added scale (issue 21): each rank's own figures (``ranks``) and what sets one apart
    (``imbalance``), the case's node count (``case.nnodes``) and the launch environment
    (``environment.launch_env``, ``environment.launch_command``). A v7 record kept rank 0's
    figures only: ``ranks`` is empty (not measured), never a list of one. v8 also added the
    predicted throughput to the estimate (issue 22: ``estimate.tokens_per_s_bound``,
    ``tokens_per_s_low``, ``tokens_per_s_high``, ``throughput_method``,
    ``throughput_source``, ``tokens_per_s_error_pct``): a v7 estimate reads with none."""
    return {**record, "ranks": [], "imbalance": []}


def _v8_to_v9(record: dict[str, Any]) -> dict[str, Any]:
    """v9 added training correctness (issue 20): the resume check (``resume``), the quality
    comparison with a reference case (``quality``), the held-out evaluation
    (``metrics.eval_loss``, ``eval_perplexity``, ``eval_tokens``), finer divergence
    (``metrics.grad_spikes``, ``grad_spike_steps``, ``clip_rate``, ``clipped_steps``,
    ``skipped_steps``, ``loss_scale_min``, ``loss_scale_final``; ``series.lr``,
    ``series.loss_scale``), and on the case the learning-rate schedule (``lr_schedule``,
    ``lr_warmup_steps``, ``lr_decay_steps``), ``tokenizer``, ``resume_check`` and
    ``eval_batches``. A v8 record measured none of them (each reads as None or empty, never
    as "no spike" or "nothing clipped"); its case trained at a constant learning rate on
    synthetic tokens, which the case fields' defaults say."""
    return {**record, "resume": None, "quality": None}


# Readers of earlier versions: UPGRADES[v] turns a version-v record into a version-(v+1)
# one. Every change to what a Result writes bumps SCHEMA_VERSION and adds its step here.
UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {
    1: _v1_to_v2,
    2: _v2_to_v3,
    3: _v3_to_v4,
    4: _v4_to_v5,
    5: _v5_to_v6,
    6: _v6_to_v7,
    7: _v7_to_v8,
    8: _v8_to_v9,
}
NOISY_CV = 0.05  # coefficient of variation above which a measurement is flagged noisy
# The fewest measured steps a spread (CV, p10/p90, "noisy") is judged from. A CV estimated from
# n steps has a relative standard error of about 1/sqrt(2(n - 1)): 100 % at 2 steps, 35 % at 5;
# and p10/p90 of fewer than 5 values are interpolations between the two extreme steps.
MIN_MEASURED_STEPS = 5
ERROR_MESSAGE_CHARS = 4000  # an exception's message kept in ErrorInfo


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
            # all zeros (an idle GPU's utilisation) vary by nothing: CV 0, not 0/0; an
            # infinite CV would be written as null and refuse the record on reading
            cv=stdev / abs(mean) if mean else (0.0 if stdev == 0 else math.inf),
            min=vals[0],
            max=vals[-1],
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "stats") -> Stats:
        return cls(**record_fields(cls, data, where))

    @property
    def noisy(self) -> bool:
        """CV above :data:`NOISY_CV`, from at least :data:`MIN_MEASURED_STEPS` values (a CV
        of fewer says nothing)."""
        return self.n >= MIN_MEASURED_STEPS and self.cv > NOISY_CV


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


# Which memory figure is "the peak": the device's largest, else the host's resident set.
# (label, Metrics field); the labels name the measurement in tables and reports.
DEVICE_MEMORY_FIGURES = (
    ("nvml", "nvml_peak_used_bytes"),  # context and workspaces included
    ("cuda-reserved", "peak_reserved_bytes"),
    ("cuda-allocated", "peak_allocated_bytes"),
)
HOST_MEMORY_FIGURE = ("host-rss", "peak_rss_bytes")
MEMORY_PEAK_FIELDS = tuple(name for _, name in (*DEVICE_MEMORY_FIGURES, HOST_MEMORY_FIGURE))


@dataclass(frozen=True)
class Metrics:
    """What the worker measured. Throughput over measured (post-warm-up) steps only, and
    only for a case that trained to the end (the steps of one that stopped early are in
    its partial :class:`Series`)."""

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
    # model FLOPs (gpubench.contracts.flops: one cited formula, recomputation not counted); None
    # where the model's shape is unknown or, for mfu, the profile has no peak for the
    # precision in use (never another card's)
    model_flops_per_token: float | None = None
    model_flops_per_s: float | None = None  # tokens/s (median) x model FLOPs per token
    mfu: float | None = None  # model_flops_per_s / the profile's dense peak, a fraction
    # host: the worker's resident set when the profile's cap was applied (runtime, imports,
    # no case yet); what a cpu profile's cap counts from
    runtime_rss_bytes: int | None = None
    # -- how sure (v7): the median tokens/s's confidence interval over the measured steps,
    # by a moving-block bootstrap (gpubench.worker.measure.precision; docs/diagnostics.md)
    precision_achieved: float | None = None  # the interval's half-width / the median
    tokens_per_s_low: float | None = None  # the interval's ends, tokens/s
    tokens_per_s_high: float | None = None
    precision_confidence: float | None = None  # the interval's level, e.g. 0.95
    precision_target: float | None = None  # steps="auto": the half-width/median aimed at
    precision_reached: bool | None = None  # steps="auto": the target met; None: fixed steps
    # why measuring stopped: "steps" (a fixed count), "precision" (the target met),
    # "max_steps" or "max_seconds" (a cap of steps="auto" reached first); "": no step measured
    stop_reason: str = ""
    # -- why (v7): time per phase of the measured steps, seconds per optimizer step
    # (data, forward, backward, clip, optimizer, rest; gpubench.worker.measure.phases)
    phases: dict[str, Stats] = field(default_factory=dict)
    phase_timing: str = ""  # "cuda-events", "perf_counter"; "": not split
    # -- telemetry over the measured steps (gpubench.worker.trackers.telemetry): summaries of
    # the samples; None where not measured (no GPU, NVML without that reading)
    gpu_util: Stats | None = None  # percent, NVML utilisation of the case's device
    gpu_memory_used_bytes: Stats | None = None  # NVML, the whole device's used memory
    power_w: Stats | None = None
    temperature_c: Stats | None = None
    sm_clock_mhz: Stats | None = None
    # NVML clock-event (throttle) reason -> share of samples it was active in, 0..1
    throttle_reasons: dict[str, float] = field(default_factory=dict)
    energy_j: float | None = None  # the device's energy over the measured steps
    energy_method: str = ""  # "nvml-energy-counter" or "power-integral"; "": none
    energy_per_token_j: float | None = None  # energy_j / tokens of the measured steps
    usd_per_million_tokens: float | None = None  # the profile's $/h at the measured tok/s
    cpu_util: Stats | None = None  # percent of one core, the case's process tree (200: 2 cores)
    disk_read_bytes: int | None = None  # the process tree's, over the measured steps
    disk_write_bytes: int | None = None
    telemetry_interval_s: float | None = None  # the sampler's period
    # -- training correctness (v9): the held-out evaluation after the last step
    # (case.eval_batches batches the training never saw, gpubench.worker.engines.evaluate)
    eval_loss: float | None = None  # mean next-token cross-entropy, nats per token
    eval_perplexity: float | None = None  # exp(eval_loss)
    eval_tokens: int | None = None  # target tokens it was averaged over
    # finer divergence, over every step (warm-up included); None: not measured (before v9)
    grad_spikes: int | None = None  # steps whose gradient norm jumped above the running median
    grad_spike_steps: list[int] = field(default_factory=list)  # their 1-based step numbers
    clip_rate: float | None = None  # share of steps whose norm was above grad_clip (None: no
    # clipping, or not measured)
    clipped_steps: int | None = None
    skipped_steps: int | None = None  # fp16: optimizer steps the GradScaler skipped (overflow)
    loss_scale_min: float | None = None  # fp16: the GradScaler's smallest and last loss scale
    loss_scale_final: float | None = None

    DERIVED = ("loss_decreased", "noisy")  # written for readers of the JSON, recomputed here

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

    # -- memory: which figure is the peak is decided here, and only here -------------------
    @property
    def peak_device_bytes(self) -> int | None:
        """Largest device-memory figure measured (NVML, reserved or allocated); what a
        card's capacity must hold."""
        figures = [v for _, name in DEVICE_MEMORY_FIGURES if (v := getattr(self, name)) is not None]
        return max(figures) if figures else None

    @property
    def peak_memory_bytes(self) -> int | None:
        """The case's peak memory: the device's (:attr:`peak_device_bytes`), or on a CPU
        device, where host memory is the device's, the process tree's peak RSS."""
        return self.peak_device_bytes or self.peak_rss_bytes

    @property
    def peak_memory_source(self) -> str | None:
        """Which measurement :attr:`peak_memory_bytes` is: ``nvml``, ``cuda-reserved``,
        ``cuda-allocated`` or ``host-rss``; None without a figure."""
        peak = self.peak_memory_bytes
        for label, name in (*DEVICE_MEMORY_FIGURES, HOST_MEMORY_FIGURE):
            figure = getattr(self, name)
            if figure is not None and figure == peak:
                return label
        return None

    def exceeds(self, capacity_bytes: int) -> bool:
        """Whether the device peak is above ``capacity_bytes`` (``over_capacity``)."""
        peak = self.peak_device_bytes
        return peak is not None and peak > capacity_bytes

    def with_largest_memory(self, others: Iterable[Metrics]) -> Metrics:
        """These metrics with each memory peak the largest of this and ``others`` (the ranks
        of one case: a capacity is per device, and ranks differ)."""
        everyone = [self, *others]
        largest = {}
        for name in MEMORY_PEAK_FIELDS:
            values = [v for v in (getattr(m, name) for m in everyone) if v]
            if values:
                largest[name] = max(values)
        return dataclasses.replace(self, **largest)

    # -- JSON -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["loss_decreased"] = self.loss_decreased
        data["noisy"] = self.noisy
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "metrics") -> Metrics:
        fields = record_fields(cls, data, where, derived=cls.DERIVED)
        for name in STATS_FIELDS:
            if fields.get(name) is not None:
                fields[name] = Stats.from_dict(fields[name], f"{where}.{name}")
        fields["phases"] = {
            phase: Stats.from_dict(stats, f"{where}.phases.{phase}")
            for phase, stats in (fields.get("phases") or {}).items()
        }
        fields["throttle_reasons"] = dict(fields.get("throttle_reasons") or {})
        fields["grad_spike_steps"] = list(fields.get("grad_spike_steps") or [])
        return cls(**fields)


# Metrics fields holding a Stats (read back by Metrics.from_dict)
STATS_FIELDS = (
    "tokens_per_s",
    "samples_per_s",
    "step_time_s",
    "gpu_util",
    "gpu_memory_used_bytes",
    "power_w",
    "temperature_c",
    "sm_clock_mhz",
    "cpu_util",
)
TELEMETRY_FIELDS = STATS_FIELDS[3:]  # summaries of the telemetry sampler's series


def loss_window(n: int) -> int:
    """Steps averaged for a loss figure at the end of ``n`` steps (``loss_start``,
    ``loss_end``, :meth:`Series.loss_at`): ``min(5, n // 4 or 1)``."""
    return min(5, max(1, n // 4))


def precision_said(metrics: Metrics) -> str:
    """`` ±0.8 %`` (the median tokens/s's interval, :attr:`Metrics.precision_achieved`), and
    `` (target ±1 % not reached)`` where a steps="auto" target was missed; "" without one."""
    if metrics.precision_achieved is None:
        return ""
    said = f" ±{100 * metrics.precision_achieved:.1f} %"
    if metrics.precision_reached is False and metrics.precision_target is not None:
        said += f" (target ±{100 * metrics.precision_target:g} % not reached)"
    return said


@dataclass(frozen=True)
class RankFigures:
    """One rank's own figures in a case run by several processes (torchrun): what it
    measured itself, before the case's figures were derived from all of them."""

    rank: int
    status: str  # the rank's own outcome (a Result status)
    hostname: str = ""
    device: str = ""  # "cuda:1", "cpu"
    measured_steps: int = 0
    tokens_per_s: Stats | None = None  # this rank's tokens / its own step time
    step_time_s: Stats | None = None
    peak_memory_bytes: int | None = None  # this rank's device peak (host RSS on a CPU)
    peak_memory_source: str | None = None  # which figure that is (Metrics.peak_memory_source)
    peak_rss_bytes: int | None = None  # host RSS of this rank's process
    gpu_util: Stats | None = None  # NVML utilisation of this rank's device, % (None: no GPU)
    phases: dict[str, Stats] = field(default_factory=dict)  # this rank's time per phase
    error: str | None = None  # why this rank did not train to the end

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "rank") -> RankFigures:
        fields = record_fields(cls, data, where)
        for name in ("tokens_per_s", "step_time_s", "gpu_util"):
            if fields.get(name) is not None:
                fields[name] = Stats.from_dict(fields[name], f"{where}.{name}")
        fields["phases"] = {
            phase: Stats.from_dict(stats, f"{where}.phases.{phase}")
            for phase, stats in (fields.get("phases") or {}).items()
        }
        return cls(**fields)


@dataclass(frozen=True)
class Series:
    """Per-step series, warm-up steps included (the first ``Metrics.warmup_steps``)."""

    step_time_s: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    allocated_bytes: list[int] = field(default_factory=list)  # device memory after each step
    # the steps of a case that stopped before its last (oom, diverged): kept as measured,
    # but no throughput of the case's (Metrics has none)
    partial: bool = False
    # v7: each phase's seconds per step (Metrics.phases' names), aligned with step_time_s
    phase_s: dict[str, list[float]] = field(default_factory=dict)
    # v7: the telemetry sampler's series over the measured steps: "t_s" (seconds since the
    # first measured step) and one list per reading, Metrics' names ("gpu_util", ...)
    telemetry: dict[str, list[float]] = field(default_factory=dict)
    # v9: the learning rate each step used, and fp16's loss scale after each step ([]: none)
    lr: list[float] = field(default_factory=list)
    loss_scale: list[float] = field(default_factory=list)

    def loss_at(self, steps: int) -> float | None:
        """The loss after the first ``steps`` steps, counted from the first step whatever
        was warm-up (the mean of the finite losses in the :func:`loss_window` ending
        there): two runs of one seed compare like with like however long their automatic
        warm-up took. None with fewer steps, or none finite."""
        if steps < 1 or len(self.loss) < steps:
            return None
        window = self.loss[steps - loss_window(steps) : steps]
        finite = [v for v in window if v is not None and math.isfinite(v)]
        return statistics.fmean(finite) if finite else None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "series") -> Series:
        fields: dict[str, Any] = record_fields(cls, data, where)
        for name, value in fields.items():
            if name in ("phase_s", "telemetry"):
                fields[name] = {key: list(values) for key, values in value.items()}
            elif name != "partial":
                fields[name] = list(value)
        return cls(**fields)


@dataclass(frozen=True)
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
    # what the case's ranks were launched with: the NCCL_*, CUDA_VISIBLE_DEVICES,
    # OMP_NUM_THREADS, TORCH_* ... variables set in the worker, and torchrun's command line
    # (empty: one process, no launcher)
    # (kept as sorted pairs and a tuple, so that an Environment stays hashable: the report
    # groups results by theirs; written as a JSON object and list)
    launch_env: tuple[tuple[str, str], ...] = ()
    launch_command: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        env = self.launch_env
        pairs = env.items() if isinstance(env, Mapping) else env
        object.__setattr__(self, "launch_env", tuple(sorted((str(k), str(v)) for k, v in pairs)))
        object.__setattr__(self, "launch_command", tuple(str(a) for a in self.launch_command))

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["launch_env"] = dict(self.launch_env)
        data["launch_command"] = list(self.launch_command)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "environment") -> Environment:
        return cls(**record_fields(cls, data, where))


@dataclass(frozen=True)
class ErrorInfo:
    """Why a case did not train to the end."""

    type: str  # exception class, "Timeout", "Signal", "ExitCode"
    message: str
    stderr_tail: str = ""
    exit_code: int | None = None
    signal: str | None = None  # e.g. "SIGKILL"
    traceback: str = ""

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorInfo:
        """The exception's class, message (its first ``ERROR_MESSAGE_CHARS``) and traceback."""
        return cls(
            type=type(exc).__name__,
            message=str(exc).strip()[:ERROR_MESSAGE_CHARS],
            traceback="".join(traceback.format_exception(exc)),
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "error") -> ErrorInfo:
        return cls(**record_fields(cls, data, where))


ESTIMATE_VERDICTS = ("fits", "over_capacity", "oom")  # Result statuses, "fits" for "ok"


@dataclass(frozen=True)
class Estimate:
    """A prediction of the case's peak device memory on its profile, made without running it
    (:mod:`gpubench.estimate`): by formulas (``breakdown``) and, where the model could be
    traced, by one training step under torch's fake tensors (``traced_*``); and of its
    tokens/s (``tokens_per_s_*``: :mod:`gpubench.estimate.throughput`), a prediction that
    is never a measurement (never in ``Metrics``, never a baseline, never gated). On an
    executed case it also says how far each prediction was from what was measured."""

    peak_bytes: int  # predicted peak device memory: what the card must hold
    capacity_bytes: int  # the profile's
    verdict: str  # "fits", "over_capacity" or "oom" (Result statuses; "fits" for "ok")
    headroom_bytes: int  # capacity_bytes - peak_bytes
    method: str  # how peak_bytes was predicted (formulas and their sources)
    breakdown: dict[str, int] = field(default_factory=dict)  # part -> bytes
    traced_peak_bytes: int | None = None  # the traced step's peak (None: not traced)
    traced_breakdown: dict[str, int] = field(default_factory=dict)  # part -> bytes, traced
    host_bytes: int | None = None  # host RAM the case needs beyond the runtime (offload)
    host_breakdown: dict[str, int] = field(default_factory=dict)  # part -> bytes, host
    notes: list[str] = field(default_factory=list)  # e.g. why the model was not traced
    measured_bytes: int | None = None  # an executed case: the measured figure compared with
    measured_source: str | None = None  # which figure that is ("cuda-reserved", ...)
    # 100 x (estimated - measured) / measured, the estimate taken as measured_source counts it
    # (gpubench.estimate.measured: without the CUDA context against cuda-reserved)
    error_pct: float | None = None
    # predicted tokens/s of the whole case (all ranks), never measured
    # (gpubench.estimate.throughput): the roofline bound no run can beat, and the expected
    # range below it; None where the model's FLOPs or the profile's peak are unknown
    tokens_per_s_bound: float | None = None
    tokens_per_s_low: float | None = None
    tokens_per_s_high: float | None = None
    throughput_method: str | None = None  # how the bound and the range were made
    throughput_source: str | None = None  # the figures they come from (papers, Results)
    # an executed case: 100 x (the range's middle - measured tokens/s) / measured
    tokens_per_s_error_pct: float | None = None

    def __post_init__(self) -> None:
        if self.verdict not in ESTIMATE_VERDICTS:
            raise ValueError(f"verdict={self.verdict!r}; valid: {', '.join(ESTIMATE_VERDICTS)}")

    @property
    def status(self) -> str:
        """The Result status this verdict stands for (``fits`` is ``ok``)."""
        return "ok" if self.verdict == "fits" else self.verdict

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "estimate") -> Estimate:
        return cls(**record_fields(cls, data, where))


RESUME_VERDICTS = ("passed", "failed", "not_checked")


@dataclass(frozen=True)
class ResumeCheck:
    """The resume check (``case.resume_check``): the run saved a checkpoint after
    ``save_step``, a fresh worker loaded it and trained the steps that followed, and its
    losses were compared with this run's own losses of those steps."""

    verdict: str  # "passed", "failed", or "not_checked" (``note`` says why)
    save_step: int | None = None  # the checkpoint holds the state after this step (1-based)
    comparison: str = ""  # "bitwise" or "relative" (deterministic kernels or not)
    tolerance: float | None = None  # the largest relative difference allowed ("relative")
    reference_loss: list[float] = field(default_factory=list)  # this run, steps after save
    resumed_loss: list[float] = field(default_factory=list)  # the resumed worker's
    max_relative_diff: float | None = None  # largest |resumed - reference| / |reference|
    differences: list[str] = field(default_factory=list)  # what differs, said with figures
    save_s: float | None = None  # seconds to write the checkpoint
    load_s: float | None = None  # seconds to read it back in the fresh worker
    checkpoint_bytes: int | None = None  # on disk
    checkpoint_format: str = ""  # "torch.save", "deepspeed", "torch.distributed.checkpoint"
    note: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in RESUME_VERDICTS:
            raise ValueError(f"verdict={self.verdict!r}; valid: {', '.join(RESUME_VERDICTS)}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "resume") -> ResumeCheck:
        fields = record_fields(cls, data, where)
        for name in ("reference_loss", "resumed_loss", "differences"):
            fields[name] = list(fields.get(name) or [])
        return cls(**fields)


QUALITY_VERDICTS = ("within", "outside", "not_compared")


@dataclass(frozen=True)
class QualityCheck:
    """This case's held-out loss against its matrix's reference case (same model, data and
    seed; ``quality_reference=``): within ``threshold`` (a fraction, 0.02: 2 %) or not."""

    verdict: str  # "within", "outside", or "not_compared" (``note`` says why)
    reference: str = ""  # the reference case's id
    eval_loss: float | None = None  # this case's held-out loss
    reference_eval_loss: float | None = None
    perplexity: float | None = None
    reference_perplexity: float | None = None
    relative_diff: float | None = None  # (eval_loss - reference's) / reference's
    threshold: float | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in QUALITY_VERDICTS:
            raise ValueError(f"verdict={self.verdict!r}; valid: {', '.join(QUALITY_VERDICTS)}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "quality") -> QualityCheck:
        return cls(**record_fields(cls, data, where))


@dataclass(frozen=True)
class Result:
    case: Case
    profile: HardwareProfile
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
    estimate: Estimate | None = None  # predicted memory (gpubench.estimate), None: none made
    # predicted, not measured (--gpubench-estimate-only): status is the estimate's verdict,
    # metrics and series are empty
    predicted: bool = False
    # why the measurement looks wrong (MFU above the peak or far below any sane value on a
    # GPU, ...); empty: nothing found
    implausible: list[str] = field(default_factory=list)
    repeat: int = 0  # 0: the case's run; k > 0: the k-th rerun confirming a suspected regression
    # what this run built or filled that a later run finds ready (DeepSpeed ops compiled,
    # torch.compile's caches written), each said with its figures; []: none seen. Such a
    # run's memory is not judged and it never becomes a baseline (gpubench.baseline)
    cold_start: list[str] = field(default_factory=list)
    # other work on the machine during the measured steps; None: not measured (no measured
    # step, a prediction, a record before v5)
    machine_load: MachineLoad | None = None
    # the regression thresholds of the case's gate (the test's gate=/marker over
    # --gpubench-threshold over [tool.gpubench.gate] over the defaults), set by the parent:
    # the offline `gpubench compare` judges the run by them; {}: none recorded
    gate_thresholds: dict[str, float] = field(default_factory=dict)
    # several ranks (torchrun): each rank's own figures, rank 0 first; []: one process, or
    # a record before v8
    ranks: list[RankFigures] = field(default_factory=list)
    # why one rank stands apart from the others (slower, more memory, less busy), each
    # said with its figures; []: balanced, or one rank
    imbalance: list[str] = field(default_factory=list)
    # the resume check (case.resume_check), None: not asked for
    resume: ResumeCheck | None = None
    # held-out loss against the matrix's quality reference, None: no reference declared
    quality: QualityCheck | None = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status={self.status!r}; valid: {', '.join(STATUSES)}")
        if not isinstance(self.profile, HardwareProfile):
            raise TypeError(f"profile must be a HardwareProfile, not {type(self.profile).__name__}")

    # -- what tests assert on ---------------------------------------------------------------
    @property
    def ran(self) -> bool:
        """Trained to the end (``ok`` or ``over_capacity``); never for a predicted Result."""
        return self.status in RAN_STATUSES and not self.predicted

    @property
    def fits(self) -> bool:
        """Trained to the end within the profile's memory capacity."""
        return self.status == "ok"

    @property
    def tokens_per_s(self) -> float | None:
        return self.metrics.tokens_per_s.median if self.metrics.tokens_per_s else None

    @property
    def peak_memory_bytes(self) -> int | None:
        """:attr:`Metrics.peak_memory_bytes`."""
        return self.metrics.peak_memory_bytes

    @property
    def loss_decreased(self) -> bool:
        return self.metrics.loss_decreased

    @property
    def profile_name(self) -> str:
        return self.profile.name

    @property
    def busy(self) -> bool:
        """Measured while other work competed for the machine (:class:`MachineLoad`)."""
        return self.machine_load is not None and self.machine_load.busy

    @property
    def cold(self) -> bool:
        """The run built or filled what a later run finds ready (``cold_start``)."""
        return bool(self.cold_start)

    def __repr__(self) -> str:
        return f"<Result {self.describe()}>"

    def describe(self) -> str:
        """One line for assertion messages and logs."""
        parts = [f"{self.case.id} on {self.profile_name}: {self.status}"]
        if self.predicted:
            parts[0] += " (predicted)"
        if self.estimate is not None and (self.predicted or self.estimate.error_pct is not None):
            est = f"estimated peak {self.estimate.peak_bytes / GiB:.2f} GiB"
            if self.estimate.error_pct is not None:
                est += f" ({self.estimate.error_pct:+.0f} % vs measured)"
            parts.append(est)
        if self.tokens_per_s is not None:
            parts.append(f"{self.tokens_per_s:,.0f} tok/s" + precision_said(self.metrics))
        if self.peak_memory_bytes is not None:
            parts.append(f"peak {self.peak_memory_bytes / GiB:.2f} GiB")
        if self.metrics.loss_start is not None and self.metrics.loss_end is not None:
            parts.append(f"loss {self.metrics.loss_start:.3f}->{self.metrics.loss_end:.3f}")
        if self.series.partial:
            parts.append(f"stopped after {len(self.series.step_time_s)} steps")
        if self.error:
            parts.append(f"{self.error.type}: {self.error.message}")
        said = self.error.message if self.error else None
        parts += [f"implausible: {reason}" for reason in self.implausible if reason != said]
        parts += [f"imbalanced: {sentence}" for sentence in self.imbalance]
        if self.resume is not None and self.resume.verdict != "passed":
            why = "; ".join(self.resume.differences) or self.resume.note
            parts.append(f"resume check {self.resume.verdict.replace('_', ' ')}: {why}")
        if self.quality is not None and self.quality.verdict == "outside":
            parts.append(f"quality outside: {self.quality.note}")
        conditions = (busy_sentence(self.machine_load), cold_sentence(self.cold_start))
        parts += [sentence for sentence in conditions if sentence]
        return ", ".join(parts)

    # -- JSON -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Strict JSON: a non-finite number (a diverged loss, a skipped fp16 step's
        grad norm) is written as null, which every JSON reader accepts."""
        return _finite_or_null(
            {
                "schema_version": self.schema_version,
                "case": self.case.to_dict(),
                "profile": self.profile.to_dict(),
                "status": self.status,
                "metrics": self.metrics.to_dict(),
                "series": dataclasses.asdict(self.series),
                "environment": self.environment.to_dict(),
                "error": dataclasses.asdict(self.error) if self.error else None,
                "nodeid": self.nodeid,
                "run_id": self.run_id,
                "worker_pid": self.worker_pid,
                "started_at": self.started_at,
                "duration_s": self.duration_s,
                "estimate": dataclasses.asdict(self.estimate) if self.estimate else None,
                "predicted": self.predicted,
                "implausible": list(self.implausible),
                "repeat": self.repeat,
                "cold_start": list(self.cold_start),
                "machine_load": (
                    dataclasses.asdict(self.machine_load) if self.machine_load else None
                ),
                "gate_thresholds": dict(self.gate_thresholds),
                "ranks": [dataclasses.asdict(rank) for rank in self.ranks],
                "imbalance": list(self.imbalance),
                "resume": dataclasses.asdict(self.resume) if self.resume else None,
                "quality": dataclasses.asdict(self.quality) if self.quality else None,
            }
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Result:
        """Read a Result record (of this schema version or, through :data:`UPGRADES`, an
        earlier one); a record that is not one raises ValueError saying why."""
        fields = record_fields(cls, upgrade(data), "result")
        fields["case"] = Case.from_dict(fields["case"], "result.case")
        fields["profile"] = HardwareProfile.from_dict(fields["profile"], "result.profile")
        for name, kind in (("metrics", Metrics), ("series", Series), ("environment", Environment)):
            fields[name] = kind.from_dict(fields.get(name) or {}, f"result.{name}")
        for name, optional in (
            ("error", ErrorInfo),
            ("estimate", Estimate),
            ("machine_load", MachineLoad),
            ("resume", ResumeCheck),
            ("quality", QualityCheck),
        ):
            if fields.get(name) is not None:
                fields[name] = optional.from_dict(fields[name], f"result.{name}")
        fields["implausible"] = list(fields.get("implausible") or [])
        fields["cold_start"] = list(fields.get("cold_start") or [])
        fields["gate_thresholds"] = dict(fields.get("gate_thresholds") or {})
        fields["ranks"] = [
            RankFigures.from_dict(rank, f"result.ranks[{i}]")
            for i, rank in enumerate(fields.get("ranks") or [])
        ]
        fields["imbalance"] = list(fields.get("imbalance") or [])
        return cls(**fields)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> Result:
        return cls.from_dict(json.loads(text))


def upgrade(data: Any) -> dict[str, Any]:
    """A Result record brought to :data:`SCHEMA_VERSION` by the steps in :data:`UPGRADES`;
    SchemaError for a record of a version this gpubench cannot read."""
    if not isinstance(data, Mapping):
        raise SchemaError(f"a result must be a JSON object, not {type(data).__name__}")
    version = data.get("schema_version")
    readable = range(min(UPGRADES, default=SCHEMA_VERSION), SCHEMA_VERSION + 1)
    if isinstance(version, bool) or not isinstance(version, int) or version not in readable:
        raise SchemaError(
            f"result schema_version={version!r}; this gpubench reads "
            + ", ".join(str(v) for v in readable)
        )
    record = dict(data)
    for step in range(version, SCHEMA_VERSION):
        record = UPGRADES[step](record)
    record["schema_version"] = SCHEMA_VERSION
    return record
