"""A run's Metrics, from the loop's StepLog (measured steps only) and the trackers' peaks."""

from __future__ import annotations

import dataclasses
import math
import statistics

from gpubench.contracts.flops import case_peak_flops, mfu
from gpubench.contracts.result import Metrics, Stats, loss_window
from gpubench.worker.engines.context import TrainingContext
from gpubench.worker.engines.loop import StepLog
from gpubench.worker.measure.divergence import with_divergence
from gpubench.worker.measure.phases import with_phases
from gpubench.worker.measure.precision import with_precision
from gpubench.worker.trackers.host import ProcessTreeRSS
from gpubench.worker.trackers.memory import DeviceMemoryTracker
from gpubench.worker.trackers.telemetry import Telemetry, with_telemetry


def _finite(values: list[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def with_model_flops(
    metrics: Metrics, ctx: TrainingContext, flops_per_token: float | None
) -> Metrics:
    """``metrics`` with ``model_flops_per_token``, ``model_flops_per_s`` (all ranks' median
    tokens/s x FLOPs per token) and ``mfu`` (over the peak of every rank's card): None
    where the model's shape, the throughput or the profile's peak for the precision is
    unknown (never another card's peak)."""
    tokens_per_s = metrics.tokens_per_s.median if metrics.tokens_per_s else None
    if tokens_per_s is None or flops_per_token is None:
        return dataclasses.replace(metrics, model_flops_per_token=flops_per_token)
    peak = case_peak_flops(ctx.case, ctx.profile, ctx.ranks.world_size)
    return dataclasses.replace(
        metrics,
        model_flops_per_token=flops_per_token,
        model_flops_per_s=tokens_per_s * flops_per_token,
        mfu=mfu(tokens_per_s, flops_per_token, peak) if peak else None,
    )


def training_metrics(
    ctx: TrainingContext,
    log: StepLog,
    rss: ProcessTreeRSS,
    device_memory: DeviceMemoryTracker,
    *,
    trained_to_end: bool,
    telemetry: Telemetry | None = None,
) -> Metrics:
    """Throughput of all ranks over the measured steps (none for a case that stopped early:
    a few steps before an OOM are not its speed), loss and gradient health over every
    finite step, and the memory peaks the trackers saw."""
    measured = [t for t in log.step_time_s[log.warmup_steps :] if t > 0] if trained_to_end else []
    tokens_per_step, samples_per_step = ctx.tokens_per_step, ctx.samples_per_step
    losses = _finite(log.loss)
    grad_norms = _finite(log.grad_norm)
    window = loss_window(len(losses))
    wall = None
    if log.t_build is not None and log.t_last_step is not None:
        wall = log.t_last_step - log.t_build
    metrics = Metrics(
        tokens_per_s=Stats.of([tokens_per_step / t for t in measured]) if measured else None,
        samples_per_s=Stats.of([samples_per_step / t for t in measured]) if measured else None,
        step_time_s=Stats.of(measured) if measured else None,
        warmup_steps=log.warmup_steps,
        measured_steps=log.measured_steps,
        steady_state_detected=log.steady_state_detected,
        timing=log.timing,
        tokens_per_step=tokens_per_step,
        n_params=log.n_params,
        declared_params=log.declared_params,
        peak_allocated_bytes=device_memory.peak_allocated_bytes,
        peak_reserved_bytes=device_memory.peak_reserved_bytes,
        nvml_peak_used_bytes=device_memory.nvml_peak_used_bytes,
        peak_rss_bytes=rss.peak_bytes,
        loss_start=statistics.fmean(losses[:window]) if losses else None,
        loss_end=statistics.fmean(losses[-window:]) if losses else None,
        grad_norm_median=statistics.median(grad_norms) if grad_norms else None,
        grad_norm_max=max(grad_norms) if grad_norms else None,
        nonfinite_steps=log.nonfinite_steps,
        wall_time_s=wall,
    )
    # how sure the median is (every case with enough steps), and why measuring stopped
    stop_reason, target = (log.stop_reason, log.precision_target) if trained_to_end else ("", None)
    metrics = with_precision(
        metrics, measured, tokens_per_step, stop_reason=stop_reason, target=target
    )
    metrics = with_phases(metrics, log.phase_s, log.warmup_steps, log.phase_timing)
    # spikes, clip rate and fp16's loss scale, over every step (measure/divergence.py)
    metrics = with_divergence(
        metrics, log.grad_norm, ctx.case.grad_clip, log.loss_scale, log.skipped_steps
    )
    metrics = with_model_flops(metrics, ctx, log.model_flops_per_token)
    # the telemetry's summaries, energy per token and $/Mtok (last: they read the tokens/s)
    world_size, price = ctx.ranks.world_size, ctx.profile.usd_per_hour
    return with_telemetry(metrics, telemetry, world_size=world_size, usd_per_hour=price)
