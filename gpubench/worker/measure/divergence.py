"""Training health read from the step log: gradient-norm spikes, the clip rate, fp16's loss scale.

Every figure is taken over every step, warm-up included (a spike in warm-up is still a spike),
from the loop's plain lists (:class:`~gpubench.worker.engines.loop.StepLog`), after the run:

- **spikes**: a step whose finite unclipped gradient norm is more than :data:`SPIKE_FACTOR`
  times the median of the finite norms of the :data:`SPIKE_WINDOW` steps before it. No step
  is judged before :data:`SPIKE_MIN_HISTORY` finite norms are known: the first steps of a
  fresh model move its norm by large factors as a matter of course. The median, not the
  mean, so that one spike does not raise the bar for the next. The factor and window are a
  judgement, not a published rule: a healthy run's norm drifts by well under 2x over 20
  steps, and a loss spike that costs a run (the ones restarted from a checkpoint by hand)
  comes with a norm one or two orders of magnitude above its trend; 5x sits between.
  A non-finite norm is not a spike: it is counted in ``Metrics.nonfinite_steps``.
- **clip rate**: the share of steps with a finite norm whose unclipped norm was above
  ``case.grad_clip`` (``clip_grad_norm_`` scales those down); None without clipping.
- **loss scale** (fp16): the GradScaler's scale after each step; its smallest and last.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections import deque

from gpubench.contracts.result import Metrics

SPIKE_FACTOR = 5.0  # a spike: norm > 5 x the running median (a judgement: module doc)
SPIKE_WINDOW = 20  # the running median's steps
SPIKE_MIN_HISTORY = 5  # finite norms needed before a step is judged


def spike_steps(
    grad_norms: list[float],
    *,
    factor: float = SPIKE_FACTOR,
    window: int = SPIKE_WINDOW,
    min_history: int = SPIKE_MIN_HISTORY,
) -> list[int]:
    """The 1-based steps whose finite norm is above ``factor`` x the median of the finite
    norms of the ``window`` steps before it (once ``min_history`` of them are known)."""
    history: deque[float] = deque(maxlen=window)
    spikes = []
    for step, norm in enumerate(grad_norms, start=1):
        if not math.isfinite(norm):
            continue
        if len(history) >= min_history and norm > factor * statistics.median(history):
            spikes.append(step)
        history.append(norm)
    return spikes


def clipped_steps(grad_norms: list[float], grad_clip: float | None) -> tuple[int, int] | None:
    """(steps whose finite norm was above ``grad_clip``, steps with a finite norm); None
    without clipping."""
    if grad_clip is None:
        return None
    finite = [norm for norm in grad_norms if math.isfinite(norm)]
    return sum(1 for norm in finite if norm > grad_clip), len(finite)


def skipped_steps(
    grad_norms: list[float], loss_scale: list[float], engine_count: int | None
) -> int | None:
    """Optimizer steps the loss scaler skipped: the engine's own count where it keeps one
    (DeepSpeed's ``engine.skipped_steps``), else with a loss scaler the steps whose unscaled
    norm was not finite (torch's GradScaler skips exactly those: its inf check and the norm
    read the same gradients); None without either."""
    if engine_count is not None:
        return engine_count
    if not loss_scale:
        return None
    return sum(1 for norm in grad_norms if not math.isfinite(norm))


def with_divergence(
    metrics: Metrics,
    grad_norms: list[float],
    grad_clip: float | None,
    loss_scale: list[float],
    engine_skipped: int | None = None,
) -> Metrics:
    """``metrics`` with the spikes, the clip rate and fp16's loss-scale figures (module doc);
    ``loss_scale`` empty without a loss scaler, ``engine_skipped`` the engine's own count
    of skipped steps (:func:`skipped_steps`)."""
    spikes = spike_steps(grad_norms)
    clipped = clipped_steps(grad_norms, grad_clip)
    count, judged = clipped if clipped is not None else (None, 0)
    return dataclasses.replace(
        metrics,
        grad_spikes=len(spikes),
        grad_spike_steps=spikes,
        clipped_steps=count,
        clip_rate=count / judged if count is not None and judged else None,
        skipped_steps=skipped_steps(grad_norms, loss_scale, engine_skipped),
        loss_scale_min=min(loss_scale) if loss_scale else None,
        loss_scale_final=loss_scale[-1] if loss_scale else None,
    )
