"""The training loop every engine steps in: warm-up, timing, the step log, divergence.

An engine hands :func:`training_loop` one optimizer step (a :data:`TrainStep`);
the loop times it with :class:`~gpubench.worker.trackers.StepTimer`, and outside the
clock reads the loss and the gradient norm (a synchronisation on CUDA) and
the memory in use, records them in the :class:`StepLog`, decides whether
warm-up is over (:class:`WarmupPhase`) and whether the loss has diverged
(:class:`DivergenceWatch`), agrees both across ranks, and reports progress.
Timing rules: docs/architecture.md, "Measurement rules".
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gpubench.contracts.case import WARMUP_AUTO, Case
from gpubench.contracts.protocol import ProgressWriter
from gpubench.contracts.result import Series
from gpubench.worker.engines.context import TrainingContext
from gpubench.worker.measure.phases import append_step
from gpubench.worker.measure.precision import StopRule
from gpubench.worker.trackers.load import MachineLoadTracker
from gpubench.worker.trackers.memory import DeviceMemoryTracker
from gpubench.worker.trackers.timing import SteadyStateDetector, StepTimer

if TYPE_CHECKING:
    import torch

# One optimizer step: (mean micro-batch loss, unclipped gradient norm), 0-d tensors or floats.
# It marks its phases on the run's clock, ctx.phases (gpubench.worker.measure.phases). An
# engine's step also has ``lr()``: the learning rate its next step uses (Series.lr), and
# ``loss_scale()``: its loss scaler's scale after the step (Series.loss_scale), None without one;
# a step may have ``skipped_steps()``: the optimizer steps its engine skipped so far (DeepSpeed).
TrainStep = Callable[[], "tuple[torch.Tensor | float, torch.Tensor | float]"]

FP16_PATIENCE = 3  # consecutive non-finite fp16 losses the GradScaler may skip before "diverged"


@dataclass
class StepLog:
    """What the loop recorded so far: every step's figures and the phase counts.

    Plain numbers only, nothing here holds a tensor; warm-up steps come first.
    """

    step_time_s: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    allocated_bytes: list[int] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)  # the learning rate each step used
    loss_scale: list[float] = field(default_factory=list)  # fp16: the scale after each step
    skipped_steps: int | None = None  # the engine's own count of skipped steps (DeepSpeed)
    warmup_steps: int = 0
    measured_steps: int = 0
    steady_state_detected: bool = False
    nonfinite_steps: int = 0  # steps whose loss or gradient norm was not finite
    timing: str = ""  # how step time was taken (StepTimer.timing)
    n_params: int = 0
    declared_params: int | None = None
    model_flops_per_token: float | None = None  # BuiltModel.flops_per_token at seq_len
    t_build: float | None = None  # perf_counter when the model build began
    t_last_step: float | None = None  # perf_counter after the last step
    # each phase's seconds per step, aligned with step_time_s (measure/phases.py); {}: not split
    phase_s: dict[str, list[float]] = field(default_factory=dict)
    phase_timing: str = ""  # how the phases were timed (PhaseClock.timing)
    # why measuring stopped (Metrics.stop_reason; StopRule.reason); "" while it goes on
    stop_reason: str = ""
    precision_target: float | None = None  # steps="auto": the target the stop aimed at

    @property
    def steps(self) -> int:
        return self.warmup_steps + self.measured_steps

    def add(
        self, step_time_s: float, loss: float, grad_norm: float, memory: int, *, warmup: bool
    ) -> None:
        self.step_time_s.append(step_time_s)
        self.loss.append(loss)
        self.grad_norm.append(grad_norm)
        self.allocated_bytes.append(memory)
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            self.nonfinite_steps += 1
        if warmup:
            self.warmup_steps += 1
        else:
            self.measured_steps += 1

    def series(self, *, trained_to_end: bool) -> Series:
        return Series(
            step_time_s=list(self.step_time_s),
            loss=list(self.loss),
            grad_norm=list(self.grad_norm),
            allocated_bytes=list(self.allocated_bytes),
            phase_s={phase: list(seconds) for phase, seconds in self.phase_s.items()},
            lr=list(self.lr),
            loss_scale=list(self.loss_scale),
            partial=not trained_to_end and bool(self.step_time_s),
        )


class WarmupPhase:
    """Whether the loop is still warming up, and when that ends.

    ``warmup="auto"``: until the step times are steady (:class:`SteadyStateDetector`)
    or ``max_warmup_steps`` is reached; a number: exactly that many steps, noting
    whether the detector saw a steady state within them.
    """

    def __init__(self, case: Case) -> None:
        self.auto = case.warmup == WARMUP_AUTO
        self.limit = case.max_warmup_steps if self.auto else int(case.warmup)
        self.active = self.limit > 0
        self._detector = SteadyStateDetector()

    def observe(self, step_time_s: float) -> bool:
        """This rank's view after a step: steady now? (False once warm-up is over.)"""
        return self._detector.add(step_time_s) if self.active else False

    def advance(self, log: StepLog, steady: bool) -> None:
        """After a warm-up step, with ``steady`` as every rank agreed it."""
        log.steady_state_detected = log.steady_state_detected or steady
        if (self.auto and steady) or log.warmup_steps >= self.limit:
            self.active = False

    def total_steps(self, log: StepLog, measured: int | None) -> int | None:
        """Steps the case will take; None while an automatic warm-up is still open, or the
        measured steps' count is not known yet (``steps="auto"``)."""
        if measured is None or (self.auto and self.active):
            return None
        return log.warmup_steps + measured


class DivergenceWatch:
    """Diverged at the first non-finite loss; with fp16 after ``FP16_PATIENCE`` in a row,
    since skipping a non-finite step (and lowering the scale) is the GradScaler's job."""

    def __init__(self, precision: str) -> None:
        self.patience = FP16_PATIENCE if precision == "fp16" else 1
        self._run = 0  # consecutive non-finite losses

    def diverging(self, loss: float) -> bool:
        self._run = 0 if math.isfinite(loss) else self._run + 1
        return self._run >= self.patience


def record_scaler(
    log: StepLog,
    scale_of: Callable[[], float | None] | None,
    skipped_of: Callable[[], int | None] | None,
) -> None:
    """After a step, outside the clock: the loss scaler's scale (a sync on CUDA) and the
    engine's count of skipped steps, where the step has them."""
    scale = scale_of() if scale_of is not None else None
    if scale is not None:
        log.loss_scale.append(float(scale))
    if skipped_of is not None:
        log.skipped_steps = skipped_of()


def memory_probe(device_memory: DeviceMemoryTracker) -> Callable[[], int]:
    """Memory in use now: the device's allocated bytes on CUDA; on CPU, where host memory
    is the device's, this process's resident set."""
    import psutil

    me = psutil.Process()

    def in_use() -> int:
        allocated = device_memory.current_allocated_bytes()
        return int(allocated if allocated is not None else me.memory_info().rss)

    return in_use


def training_loop(
    ctx: TrainingContext,
    progress: ProgressWriter,
    log: StepLog,
    device_memory: DeviceMemoryTracker,
    train_step: TrainStep,
    load: MachineLoadTracker | None = None,
    after_step: Callable[[StepLog, bool], None] | None = None,
) -> str:
    """Warm-up then measured steps, each recorded in ``log``, until the :class:`StopRule`
    says stop (``case.steps`` of them, or with ``steps="auto"`` until the median tokens/s
    is known to ``precision_target``, or a cap); ``load`` measures the machine from the
    first measured step to the last; ``after_step(log, warming_up)`` runs between two steps,
    outside the clock (the resume check's save: gpubench.worker.resume.save).

    Returns ``ok``, or ``diverged`` (:class:`DivergenceWatch`). An allocation
    failure propagates; the engine's run classifies it.
    """
    case, device, ranks = ctx.case, ctx.device, ctx.ranks
    timer = StepTimer(device, phases=ctx.phases)  # the phases begin and end with the step
    log.timing, log.phase_timing = timer.timing, ctx.phases.timing
    warmup = WarmupPhase(case)
    divergence = DivergenceWatch(case.flags.precision)
    memory_in_use = memory_probe(device_memory)
    stop = StopRule(case)
    log.precision_target = stop.target
    lr_of: Callable[[], float] | None = getattr(train_step, "lr", None)
    scale_of: Callable[[], float | None] | None = getattr(train_step, "loss_scale", None)
    skipped_of: Callable[[], int | None] | None = getattr(train_step, "skipped_steps", None)

    while not log.stop_reason:
        if load is not None and not warmup.active and not load.started:
            load.start()
        if lr_of is not None:
            log.lr.append(lr_of())  # a Python float in the optimizer's param group: no sync
        with timer:
            loss_t, grad_norm_t = train_step()
        step_time = timer.last_s
        append_step(log.phase_s, ctx.phases.read(), log.steps)  # after the timer's synchronise
        log.t_last_step = time.perf_counter()
        # outside the clock: these reads synchronise on CUDA
        loss, grad_norm, memory = float(loss_t), float(grad_norm_t), memory_in_use()
        del loss_t, grad_norm_t
        record_scaler(log, scale_of, skipped_of)
        phase = "warmup" if warmup.active else "measuring"
        log.add(step_time, loss, grad_norm, memory, warmup=warmup.active)
        steady = warmup.observe(step_time)
        imprecise, capped = True, False
        if phase == "measuring":  # the bootstrap, when due, runs here: outside the clock
            stop.observe(step_time)
            imprecise, capped = stop.vote()
        # every rank must leave warm-up, and stop, at the same step (DDP collectives)
        diverging, unsteady, imprecise, capped = ranks.any(
            [divergence.diverging(loss), not steady, imprecise, capped], device
        )
        if phase == "warmup":
            warmup.advance(log, steady=not unsteady)
        else:
            log.stop_reason = stop.reason(imprecise, capped)
        tokens_per_s = ctx.tokens_per_step / step_time if step_time > 0 else None
        total = stop.measured if stop.auto and log.stop_reason else stop.total
        progress.emit(phase, log.steps, warmup.total_steps(log, total), tokens_per_s, memory)
        if diverging:
            return "diverged"
        if after_step is not None:
            after_step(log, warmup.active)
    if load is not None:
        load.stop()
    return "ok"
