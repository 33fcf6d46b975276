"""What every engine shares around its training step, and what it answers with.

An engine subclasses :class:`TrainingEngine` and supplies two things: the
framework's set-up before the worker's memory cap
(:meth:`~TrainingEngine.set_up_framework`, which must leave the process group started
under torchrun) and one optimizer
step on a built model (:meth:`~TrainingEngine.build_step`). Everything else is
here and the same for every engine: the device, the memory trackers, the model
build and its size check, the token stream (:mod:`gpubench.worker.engines.recipe`),
the loop (:mod:`gpubench.worker.engines.loop`), the metrics, and an allocation failure
turned into an ``oom`` :class:`Measurement`. The worker makes the Result of the
Measurement (:mod:`gpubench.worker`).
"""

from __future__ import annotations

import os
import time
import traceback
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from gpubench.contracts.case import Case
from gpubench.contracts.conditions import MachineLoad
from gpubench.contracts.oom import is_oom
from gpubench.contracts.profiles import HardwareProfile
from gpubench.contracts.protocol import ProgressWriter
from gpubench.contracts.result import ErrorInfo, Metrics, Series
from gpubench.worker.engines.context import TrainingContext
from gpubench.worker.engines.device import prepare_device, release_memory
from gpubench.worker.engines.distributed import Ranks, start_process_group
from gpubench.worker.engines.evaluate import HeldOutLoss, evaluate, with_held_out
from gpubench.worker.engines.loop import StepLog, TrainStep, training_loop
from gpubench.worker.engines.recipe import build_for_training
from gpubench.worker.engines.run_metrics import training_metrics
from gpubench.worker.engines.warmth import compile_cache_misses, compile_cold_start
from gpubench.worker.trackers.host import ProcessTreeRSS
from gpubench.worker.trackers.load import MachineLoadTracker
from gpubench.worker.trackers.memory import DeviceMemoryTracker
from gpubench.worker.trackers.telemetry import TELEMETRY_INTERVAL_S, Telemetry

if TYPE_CHECKING:
    from gpubench.worker.data import DataStream
    from gpubench.worker.models.built import BuiltModel
    from gpubench.worker.resume.job import ResumeJob


@dataclass(frozen=True)
class Measurement:
    """What an engine measured for one case; the worker assembles the Result from it.

    ``status`` is ``ok`` (trained to the end), ``diverged`` or ``oom``; the worker
    adds ``over_capacity`` (it knows the capacity) and ``crashed`` (an exception
    no engine classified).
    """

    status: str
    metrics: Metrics = field(default_factory=Metrics)
    series: Series = field(default_factory=Series)
    error: ErrorInfo | None = None
    cold_start: list[str] = field(default_factory=list)  # Result.cold_start
    machine_load: MachineLoad | None = None  # over the measured steps (None: none made)


class TrainingEngine:
    """Trains one case: :meth:`prepare` before the memory cap, :meth:`run` under it."""

    name: str = ""  # Case.engine

    def __init__(self) -> None:
        self._ranks: Ranks | None = None  # started by prepare(), taken by run()
        # what the set-up built that a later run finds ready (set_up_framework adds to it)
        self.cold_start: list[str] = []
        self.held_out: HeldOutLoss | None = None  # case.eval_batches' loss, after the loop
        # the resume check's part in this run (the job's): save at step k, or load and go on
        self.resume: ResumeJob | None = None

    # -- what an engine supplies ------------------------------------------------------------
    def set_up_framework(
        self, case: Case, profile: HardwareProfile, progress: ProgressWriter
    ) -> Ranks:
        """The framework's own set-up, before the cap; returns this process's Ranks with the
        process group started under torchrun (gloo's set-up maps tens of MiB and starts
        threads: the runtime's, not the case's)."""
        return start_process_group(profile)

    def build_step(self, ctx: TrainingContext, model: BuiltModel, stream: DataStream) -> TrainStep:
        """One optimizer step of ``model`` (built, size-checked, in training mode) on batches
        of ``stream``: the function the loop times."""
        raise NotImplementedError

    # -- the same for every engine ----------------------------------------------------------
    def prepare(self, case: Case, profile: HardwareProfile, progress: ProgressWriter) -> None:
        """Set-up that is the framework's, not the case's: runs before the memory cap."""
        self._ranks = self.set_up_framework(case, profile, progress)

    def run(self, case: Case, profile: HardwareProfile, progress: ProgressWriter) -> Measurement:
        """Train ``case`` and measure it. Raises for anything but an allocation failure or
        divergence (the worker turns it into a ``crashed`` Result)."""
        if self._ranks is None:  # called in process, without the worker's prepare()
            self.prepare(case, profile, progress)
        assert self._ranks is not None
        ranks, self._ranks = self._ranks, None
        try:
            device = prepare_device(case, profile, ranks.local_rank)
            return self._measure(TrainingContext(case, profile, device, ranks), progress)
        finally:
            ranks.close()

    def _measure(self, ctx: TrainingContext, progress: ProgressWriter) -> Measurement:
        """The training between the trackers; an allocation failure ends it as ``oom``."""
        log = StepLog()
        status, error = "ok", None
        compiled_before = compile_cache_misses()
        with ExitStack() as stack:
            rss = stack.enter_context(ProcessTreeRSS())
            device_memory = stack.enter_context(DeviceMemoryTracker(ctx.device))
            # the case's process tree: this worker's, or under torchrun torchrun's (every rank)
            root = os.getppid() if ctx.ranks.distributed else os.getpid()
            nvml = device_memory.nvml_handle
            telemetry = Telemetry(root, nvml, TELEMETRY_INTERVAL_S)
            load = MachineLoadTracker(root, nvml, TELEMETRY_INTERVAL_S, telemetry)
            stack.callback(load.stop)  # the loop starts it at the first measured step
            try:
                status = self._train(ctx, progress, log, device_memory, load)
            except Exception as exc:
                if not is_oom(exc):
                    raise
                # release the training frames' tensors (model, optimizer, activations) that
                # the traceback keeps alive; its line numbers survive for the report
                traceback.clear_frames(exc.__traceback__)
                status, error = "oom", ErrorInfo.from_exception(exc)
            if status == "oom":
                release_memory(ctx.device)
        trained_to_end = status == "ok"
        metrics = training_metrics(
            ctx, log, rss, device_memory, trained_to_end=trained_to_end, telemetry=telemetry
        )
        metrics = with_held_out(metrics, self.held_out if trained_to_end else None)
        tokens_per_s = metrics.tokens_per_s.median if metrics.tokens_per_s else None
        progress.emit("done", log.steps, log.steps, tokens_per_s, metrics.peak_memory_bytes)
        series = replace(log.series(trained_to_end=trained_to_end), telemetry=telemetry.series())
        cold = self.cold_start + compile_cold_start(compiled_before, compile_cache_misses())
        return Measurement(
            status=status,
            metrics=metrics,
            series=series,
            error=error,
            cold_start=cold,
            machine_load=load.load(),
        )

    def _train(
        self,
        ctx: TrainingContext,
        progress: ProgressWriter,
        log: StepLog,
        device_memory: DeviceMemoryTracker,
        load: MachineLoadTracker,
    ) -> str:
        """Build, warm up and measure; ``ok`` or ``diverged``. Its frame holds the model, so
        that clearing it after an OOM frees them."""
        progress.emit("building")
        log.t_build = time.perf_counter()
        model, stream = build_for_training(ctx)
        log.n_params, log.declared_params = model.n_params, model.declared_params
        log.model_flops_per_token = model.flops_per_token(ctx.case.seq_len)
        train_step = self.build_step(ctx, model, stream)
        if self.resume is not None and self.resume.mode == "load":
            from gpubench.worker.resume.resumed import resumed_run

            return resumed_run(ctx, progress, log, train_step, self.resume)
        saver = None
        if self.resume is not None:
            from gpubench.worker.resume.save import CheckpointSaver

            saver = CheckpointSaver(ctx, train_step, self.resume)
        status = training_loop(ctx, progress, log, device_memory, train_step, load, saver)
        if status == "ok":  # after the last step's clock: in no timed figure
            self.held_out = evaluate(ctx, model, stream, train_step)
        return status
