"""The torch training loop, driven by a Case's flags.

One call of :meth:`TorchEngine.run` builds the case's model, trains it for the
warm-up plus ``case.steps`` optimizer steps on synthetic tokens, and returns a
Result with every step's time, loss and gradient norm. Timing follows
docs/architecture.md ("Measurement rules"): each step (data, forward,
backward, clip, optimizer step) is bracketed by :class:`StepTimer`; reading
the loss and the gradient norm (a device synchronisation on CUDA), progress
and bookkeeping happen outside the clock.

``Series.allocated_bytes`` holds ``torch.cuda.memory_allocated`` after each
step on CUDA; on CPU, where host memory is the device's, the worker process's
RSS after each step.

Statuses it returns: ``ok``, ``over_capacity`` (CUDA only: trained to the end
but the peak device memory exceeded the profile's capacity), ``oom`` (an
allocation failed: CUDA OOM, or the worker's ``RLIMIT_DATA`` cap on CPU) and
``diverged`` (the loss went non-finite; with fp16, on ``FP16_PATIENCE``
steps in a row, since skipping a non-finite step is the GradScaler's job).
A model whose parameter count is more than 10 % off its declared size raises
:class:`ParameterCountMismatch` before any step is timed, so a wrong model
never reports a speed.

What is not torch-specific is shared with the other engines (the DeepSpeed
engine): :func:`training_device`, :func:`run_training` (process group,
trackers, OOM classification, metrics, the Result), :func:`training_loop`
(warm-up detection, timing, series, progress, divergence) and
:func:`count_and_check_parameters`. An engine supplies only its ``train``
(build the model and optimizer, then hand one optimizer step to
:func:`training_loop`).

Under torchrun (``WORLD_SIZE`` > 1) the model is wrapped in
DistributedDataParallel (NCCL on CUDA, gloo on CPU), every rank reads its own
slice of the token stream, and decisions that end a phase (steady state,
divergence) are agreed across ranks with one small all-reduce per step so no
rank is left waiting in a collective. An OOM on one rank is not agreed (the
failed rank leaves the collectives): its worker exits ``EXIT_RANK_FAILED`` and
torchrun stops the others (gpubench.worker). The process group is started in
:meth:`TorchEngine.prepare`, before the worker caps memory: gloo's set-up
(tens of MiB, threads) is the runtime's, and under a small ``cpu`` cap it used
to fail outright. A thread that cannot start under that cap is an ``oom``
(:func:`is_oom`).
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import statistics
import time
import traceback
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from gpubench.case import WARMUP_AUTO, Case
from gpubench.oom import host_memory_capped, looks_like_oom, looks_like_thread_start_failure
from gpubench.profiles import HardwareProfile
from gpubench.result import ErrorInfo, Metrics, Result, Series, Stats
from gpubench.runner.protocol import ProgressWriter
from gpubench.trackers.host import ProcessTreeRSS
from gpubench.trackers.memory import DeviceMemoryTracker
from gpubench.trackers.timing import SteadyStateDetector, StepTimer

if TYPE_CHECKING:
    import torch

    from gpubench.models import BuiltModel

PARAM_TOLERANCE = 0.10  # |counted - declared| / declared above this fails the case
ADAMW_BETAS = (0.9, 0.95)  # nanoGPT / GPT-3 (Brown et al. 2020, appendix B)
ADAMW_WEIGHT_DECAY = 0.1
FP16_PATIENCE = 3  # consecutive non-finite fp16 losses the GradScaler may skip before "diverged"
PRECISION_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


class ParameterCountMismatch(ValueError):
    """The built model's parameter count is more than 10 % off the declared one."""


def is_oom(exc: BaseException, host_capped: bool | None = None) -> bool:
    """Whether ``exc`` is an allocation failure (device or host), not a bug.

    A thread that could not start counts too while the host's memory is capped
    (``host_capped``; by default, whether a finite ``RLIMIT_DATA`` is in force
    now): under that cap its stack is an allocation like any tensor's, and
    gloo, DDP and the autograd engine start threads as they need them.
    """
    import torch

    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    if not isinstance(exc, (RuntimeError, OSError)):
        return False
    message = str(exc)
    if looks_like_oom(message):
        return True
    if host_capped is None:
        host_capped = host_memory_capped()
    return host_capped and looks_like_thread_start_failure(message)


def check_parameter_count(n_params: int, declared: int | None, description: str) -> None:
    """Raise :class:`ParameterCountMismatch` when ``n_params`` is >10 % off ``declared``."""
    if declared is None:
        return
    if declared <= 0 or abs(n_params - declared) / declared > PARAM_TOLERANCE:
        off = (n_params - declared) / declared * 100 if declared > 0 else math.inf
        raise ParameterCountMismatch(
            f"model has {n_params:,} parameters but declares {declared:,} ({off:+.1f} %, "
            f"tolerance ±{PARAM_TOLERANCE:.0%}): {description or 'no description'}"
        )


def loss_window(n: int) -> int:
    """Steps averaged for loss_start/loss_end: ``min(5, n // 4 or 1)``."""
    return min(5, max(1, n // 4))


def _finite(values: list[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


# -- distributed (torchrun) ----------------------------------------------------------------------
@dataclass
class Ranks:
    """This process's place among torchrun's workers (1 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this engine initialised the process group

    @classmethod
    def from_env(cls) -> Ranks:
        return cls(
            rank=int(os.environ.get("RANK", "0")),
            world_size=int(os.environ.get("WORLD_SIZE", "1")),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        )

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def init(self, device: torch.device) -> None:
        import torch.distributed as dist

        if self.distributed and not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            if device.type == "cuda":
                import torch

                torch.cuda.set_device(device)  # NCCL's communicator binds to this device
            dist.init_process_group(
                backend=backend, device_id=device if backend == "nccl" else None
            )
            self.owns_group = True

    def any(self, flags: list[bool], device: torch.device) -> list[bool]:
        """Element-wise OR of ``flags`` over all ranks (identity with one rank)."""
        if not self.distributed:
            return flags
        import torch
        import torch.distributed as dist

        tensor = torch.tensor([float(f) for f in flags], device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return [bool(v) for v in tensor.tolist()]

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            with contextlib.suppress(Exception):
                dist.destroy_process_group()
            self.owns_group = False


# -- the run's record: plain numbers only, nothing here holds a tensor ----------------------
@dataclass
class Record:
    """What one run measured so far; every engine fills one through :func:`training_loop`."""

    series: Series = field(default_factory=Series)
    warmup_steps: int = 0
    measured_steps: int = 0
    steady_state_detected: bool = False
    nonfinite_steps: int = 0
    n_params: int = 0
    declared_params: int | None = None
    timing: str = ""
    t_build: float | None = None  # perf_counter at model build
    t_last_step: float | None = None  # perf_counter after the last step


# An engine's training: builds, warms up and measures, filling the Record; returns
# "ok" or "diverged" (an allocation failure is raised, :func:`run_training` classifies it).
Train = Callable[[Record, DeviceMemoryTracker], str]
# One optimizer step: (mean micro-batch loss, unclipped gradient norm), 0-d tensors or floats.
TrainStep = Callable[[], "tuple[torch.Tensor | float, torch.Tensor | float]"]


def device_for(profile: HardwareProfile, ranks: Ranks | None = None) -> torch.device:
    """``cuda:<LOCAL_RANK>`` for a CUDA profile, else ``cpu``."""
    import torch

    if profile.kind != "cuda":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError(
            f"profile {profile.name!r} needs CUDA, but torch {torch.__version__} "
            "sees no CUDA device"
        )
    return torch.device("cuda", (ranks or Ranks.from_env()).local_rank)


def start_process_group(profile: HardwareProfile) -> Ranks:
    """This process's Ranks, with the process group started when torchrun runs the case
    (NCCL on a CUDA profile, gloo otherwise); :func:`run_training` closes it."""
    ranks = Ranks.from_env()
    ranks.init(device_for(profile, ranks))
    return ranks


def training_device(case: Case, profile: HardwareProfile, ranks: Ranks) -> torch.device:
    """The case's device, made ready: fp16 refused off CUDA, torch seeded, TF32 as flagged."""
    import torch

    device = device_for(profile, ranks)
    if case.flags.precision == "fp16" and device.type != "cuda":
        raise ValueError(
            f"precision='fp16' needs a CUDA profile; profile {profile.name!r} is "
            f"{profile.kind!r} (valid on cpu: fp32, bf16)"
        )
    torch.manual_seed(case.seed)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = case.flags.tf32
        torch.backends.cudnn.allow_tf32 = case.flags.tf32
    return device


def run_training(
    case: Case,
    profile: HardwareProfile,
    progress: ProgressWriter,
    device: torch.device,
    ranks: Ranks,
    train: Train,
) -> Result:
    """What every engine's ``run`` shares around its ``train``: the process group
    (torchrun), memory trackers, OOM classification, metrics, ``over_capacity``,
    the ``done`` progress event, and the Result.

    ``train`` may initialise the process group itself (setting ``ranks.owns_group``);
    it is closed here either way.
    """
    record = Record()
    status = "ok"
    error: ErrorInfo | None = None
    try:
        ranks.init(device)
        with ExitStack() as stack:
            rss = stack.enter_context(ProcessTreeRSS())
            device_memory = stack.enter_context(DeviceMemoryTracker(device))
            try:
                status = train(record, device_memory)
            except Exception as exc:
                if not is_oom(exc):
                    raise
                # Drop the training frames' tensors before formatting anything:
                # clear_frames releases the locals (model, optimizer, activations)
                # the traceback keeps alive; line numbers survive for the report.
                traceback.clear_frames(exc.__traceback__)
                status = "oom"
                error = ErrorInfo(
                    type=type(exc).__name__,
                    message=str(exc).strip()[:4000],
                    traceback="".join(traceback.format_exception(exc)),
                )
            if status == "oom":
                _free_memory(device)
    finally:
        ranks.close()

    metrics = training_metrics(case, ranks, record, rss, device_memory)
    if status == "ok" and profile.kind == "cuda":
        peak = metrics.peak_device_bytes
        if peak is not None and peak > profile.memory_bytes:
            status = "over_capacity"
    tokens_per_s = metrics.tokens_per_s.median if metrics.tokens_per_s else None
    progress.emit(
        "done",
        record.warmup_steps + record.measured_steps,
        record.warmup_steps + record.measured_steps,
        tokens_per_s,
        metrics.peak_device_bytes or metrics.peak_rss_bytes,
    )
    return Result(
        case=case,
        profile=profile.to_dict(),
        status=status,
        metrics=metrics,
        series=record.series,
        error=error,
    )


def training_loop(
    case: Case,
    device: torch.device,
    ranks: Ranks,
    progress: ProgressWriter,
    record: Record,
    device_memory: DeviceMemoryTracker,
    train_step: TrainStep,
) -> str:
    """Warm-up then measured steps; every step lands in ``record.series``.

    Returns ``ok``, or ``diverged`` at the first non-finite loss (fp16: after
    ``FP16_PATIENCE`` in a row, a skipped step being the loss scaler's job).
    """
    import psutil

    auto = case.warmup == WARMUP_AUTO
    warmup_limit = case.max_warmup_steps if auto else int(case.warmup)
    in_warmup = warmup_limit > 0
    detector = SteadyStateDetector()
    timer = StepTimer(device)
    record.timing = timer.timing
    series = record.series
    tokens_per_step = case.tokens_per_step * ranks.world_size
    fp16 = case.flags.precision == "fp16"
    me = psutil.Process()
    nonfinite_run = 0  # consecutive non-finite losses (fp16 patience)
    step = 0

    while record.measured_steps < case.steps:
        with timer:
            loss_t, grad_norm_t = train_step()
        step_time = timer.last_s
        record.t_last_step = time.perf_counter()
        # outside the clock: these reads synchronise on CUDA
        loss = float(loss_t)
        grad_norm = float(grad_norm_t)
        del loss_t, grad_norm_t
        memory = device_memory.current_allocated_bytes()
        if memory is None:  # CPU: the device's memory is the process's resident set
            memory = me.memory_info().rss
        series.step_time_s.append(step_time)
        series.loss.append(loss)
        series.grad_norm.append(grad_norm)
        series.allocated_bytes.append(int(memory))
        step += 1

        loss_ok = math.isfinite(loss)
        if not (loss_ok and math.isfinite(grad_norm)):
            record.nonfinite_steps += 1
        nonfinite_run = 0 if loss_ok else nonfinite_run + 1
        # fp16: a non-finite step is the loss scaler's to skip (it lowers the scale);
        # only a run of them means the model itself has gone non-finite.
        diverging = nonfinite_run >= (FP16_PATIENCE if fp16 else 1)

        steady = detector.add(step_time) if in_warmup else False
        if in_warmup:
            record.warmup_steps += 1
        else:
            record.measured_steps += 1
        # every rank must leave warm-up, and stop, at the same step (DDP collectives)
        diverging, unsteady_somewhere = ranks.any([diverging, not steady], device)
        steady = not unsteady_somewhere

        phase = "warmup" if in_warmup else "measuring"  # the phase this step belonged to
        if in_warmup:
            record.steady_state_detected = record.steady_state_detected or steady
            if (auto and steady) or record.warmup_steps >= warmup_limit:
                in_warmup = False
        total = None if (auto and in_warmup) else record.warmup_steps + case.steps
        tokens_per_s = tokens_per_step / step_time if step_time > 0 else None
        progress.emit(phase, step, total, tokens_per_s, int(memory))
        if diverging:
            return "diverged"
    return "ok"


def training_metrics(
    case: Case,
    ranks: Ranks,
    record: Record,
    rss: ProcessTreeRSS,
    device_memory: DeviceMemoryTracker,
) -> Metrics:
    """The Result's summary of ``record`` (measured steps only) and the trackers' peaks."""
    series = record.series
    measured = series.step_time_s[record.warmup_steps :]
    measured = [t for t in measured if t > 0]
    tokens_per_step = case.tokens_per_step * ranks.world_size
    samples_per_step = case.batch_size * case.flags.grad_accum * ranks.world_size
    losses = _finite(series.loss)
    grad_norms = _finite(series.grad_norm)
    window = loss_window(len(losses))
    wall = None
    if record.t_build is not None and record.t_last_step is not None:
        wall = record.t_last_step - record.t_build
    return Metrics(
        tokens_per_s=Stats.of([tokens_per_step / t for t in measured]) if measured else None,
        samples_per_s=Stats.of([samples_per_step / t for t in measured]) if measured else None,
        step_time_s=Stats.of(measured) if measured else None,
        warmup_steps=record.warmup_steps,
        measured_steps=record.measured_steps,
        steady_state_detected=record.steady_state_detected,
        timing=record.timing,
        tokens_per_step=tokens_per_step,
        n_params=record.n_params,
        declared_params=record.declared_params,
        peak_allocated_bytes=device_memory.peak_allocated_bytes,
        peak_reserved_bytes=device_memory.peak_reserved_bytes,
        nvml_peak_used_bytes=device_memory.nvml_peak_used_bytes,
        peak_rss_bytes=rss.peak_bytes,
        loss_start=statistics.fmean(losses[:window]) if losses else None,
        loss_end=statistics.fmean(losses[-window:]) if losses else None,
        grad_norm_median=statistics.median(grad_norms) if grad_norms else None,
        grad_norm_max=max(grad_norms) if grad_norms else None,
        nonfinite_steps=record.nonfinite_steps,
        wall_time_s=wall,
    )


def count_and_check_parameters(record: Record, built: BuiltModel) -> None:
    """Count the built model's parameters into ``record`` and check them against its
    declared size (:func:`check_parameter_count`), before any step is timed."""
    record.n_params = sum(p.numel() for p in built.module.parameters())
    record.declared_params = built.declared_params
    check_parameter_count(record.n_params, built.declared_params, built.description)


class TorchEngine:
    """Plain PyTorch training: AdamW, autocast, GradScaler, checkpointing, compile, DDP."""

    name = "torch"
    device_for = staticmethod(device_for)

    def __init__(self) -> None:
        self._ranks: Ranks | None = None

    def prepare(self, case: Case, profile: HardwareProfile) -> None:
        """Start the process group (torchrun) before the memory cap; torch itself is
        imported and primed by the worker.

        gloo's set-up maps tens of MiB and starts threads: the runtime's, not the
        case's, so it must not count against the case's capacity (nor fail under it).
        """
        self._ranks = start_process_group(profile)

    def run(self, case: Case, profile: HardwareProfile, progress: ProgressWriter) -> Result:
        ranks, self._ranks = self._ranks or Ranks.from_env(), None
        try:
            device = training_device(case, profile, ranks)
        except BaseException:
            ranks.close()  # run_training, which would, does not run
            raise

        def train(record: Record, device_memory: DeviceMemoryTracker) -> str:
            return self._train(case, device, ranks, progress, record, device_memory)

        return run_training(case, profile, progress, device, ranks, train)

    # -- training ---------------------------------------------------------------------------
    def _train(
        self,
        case: Case,
        device: torch.device,
        ranks: Ranks,
        progress: ProgressWriter,
        record: Record,
        device_memory: DeviceMemoryTracker,
    ) -> str:
        """Build, warm up and measure; fills ``record``; returns ``ok`` or ``diverged``."""
        train_step = self.build_train_step(case, device, ranks, progress, record)
        return training_loop(case, device, ranks, progress, record, device_memory, train_step)

    def build_train_step(
        self,
        case: Case,
        device: torch.device,
        ranks: Ranks,
        progress: ProgressWriter,
        record: Record,
    ) -> TrainStep:
        """Build the case's model, optimizer and token stream (recording the build time and
        the parameter count in ``record``) and return its optimizer step, the function
        :func:`training_loop` times. benchmarks/inprocess_step.py times it step for step
        against a bare loop's."""
        import torch

        from gpubench.data.synthetic import TokenStream
        from gpubench.models import build_model

        flags = case.flags
        progress.emit("building")
        record.t_build = time.perf_counter()
        built = build_model(case, device)
        count_and_check_parameters(record, built)

        built.module.train()
        params = [p for p in built.module.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            params,
            lr=case.lr,
            betas=ADAMW_BETAS,
            weight_decay=ADAMW_WEIGHT_DECAY,
            fused=True if flags.fused_adamw else None,
        )
        scaler = torch.amp.GradScaler(device.type) if flags.precision == "fp16" else None
        ddp: Any = None
        if ranks.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ddp = DistributedDataParallel(
                built.module, device_ids=[device.index] if device.type == "cuda" else None
            )
            built.module = ddp
        if flags.compile:
            # BuiltModel.logits calls .module; compiling the DDP wrapper (not the other way
            # round) lets dynamo split graphs at DDP's buckets and keep comm/compute overlap
            built.module = cast("torch.nn.Module", torch.compile(built.module))
        stream = TokenStream(
            case.data,
            built.vocab_size,
            case.batch_size,
            case.seq_len,
            case.seed,
            device,
            rank=ranks.rank,
            world_size=ranks.world_size,
        )

        def autocast() -> contextlib.AbstractContextManager[Any]:
            if flags.precision in PRECISION_DTYPES:
                dtype = getattr(torch, PRECISION_DTYPES[flags.precision])
                return torch.autocast(device_type=device.type, dtype=dtype)
            return contextlib.nullcontext()

        def no_sync(last_micro_batch: bool) -> contextlib.AbstractContextManager[Any]:
            # DDP all-reduces gradients once per optimizer step, on the last micro-batch
            if ddp is not None and not last_micro_batch:
                return ddp.no_sync()
            return contextlib.nullcontext()

        accum = flags.grad_accum

        def train_step() -> tuple[torch.Tensor, torch.Tensor]:
            """One optimizer step; returns (mean micro-batch loss, unclipped grad norm)."""
            loss_sum = torch.zeros((), device=device)
            for micro in range(accum):
                x, y = stream.next_batch()  # [B, T] each
                with no_sync(micro == accum - 1):
                    with autocast():
                        logits = built.logits(x)  # [B, T, V]
                    loss = torch.nn.functional.cross_entropy(
                        logits.float().reshape(-1, logits.size(-1)), y.reshape(-1)
                    )
                    loss_sum += loss.detach()
                    scaled = loss / accum
                    if scaler is not None:
                        scaled = scaler.scale(scaled)
                    scaled.backward()
                del logits, loss, scaled
            if scaler is not None:
                scaler.unscale_(optimizer)  # the norm and the clip see true gradients
            # max_norm=inf (grad_clip=None): the norm is still computed, nothing is clipped
            max_norm = math.inf if case.grad_clip is None else case.grad_clip
            grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            if scaler is not None:
                scaler.step(optimizer)  # skipped when the gradients are not finite
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss_sum / accum, grad_norm

        return train_step


def _free_memory(device: torch.device) -> None:
    """After an OOM: collect what the dropped frames held and return cached device memory."""
    import torch

    gc.collect()
    if device.type == "cuda":
        with contextlib.suppress(Exception):
            torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
