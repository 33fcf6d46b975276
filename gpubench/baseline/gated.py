"""What the gate compares, read from a Result in one place.

Each :class:`GatedMetric` gives a run's value (one number per run: what the
history's spread is measured on), its per-step samples where a run has them
(for the within-run test), which direction is better, where runs must be compared
at the same step (the loss: an automatic warm-up trains a different number of
steps on every run), and which conditions of a run distort it (``busy``: other
work took the cores or the GPU; ``cold``: the run built ops or filled caches).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gpubench.contracts.result import Result


@dataclass(frozen=True)
class GatedMetric:
    name: str  # the threshold's key (gate={"tokens_per_s": 0.05})
    label: str  # how tables name it
    unit: str
    higher_is_better: bool
    value: Callable[[Result], float | None]
    samples: Callable[[Result], list[float]] | None = None
    # the figure after the first N steps, where runs must be compared at the same N
    at_steps: Callable[[Result, int], float | None] | None = None
    distorted_by: tuple[str, ...] = ()  # conditions (run_conditions) it is not judged in

    def distorted(self, result: Result) -> set[str]:
        """The conditions of ``result`` that make this figure no measure of the code."""
        return set(self.distorted_by) & run_conditions(result)


BUSY = "busy"  # other work competed for the machine (Result.machine_load)
COLD = "cold"  # the run built ops or filled caches (Result.cold_start)


def run_conditions(result: Result) -> set[str]:
    return {name for name, held in ((BUSY, result.busy), (COLD, result.cold)) if held}


def measured_tokens_per_s(result: Result) -> list[float]:
    """Every measured (post-warm-up) step's tokens/s."""
    m = result.metrics
    times = result.series.step_time_s[m.warmup_steps :]
    return [m.tokens_per_step / t for t in times if t and t > 0]


def _tokens_per_s(result: Result) -> float | None:
    return result.tokens_per_s if result.ran else None


def _peak_device(result: Result) -> float | None:
    peak = result.metrics.peak_device_bytes
    return float(peak) if peak and result.ran else None


def _host_rss(result: Result) -> float | None:
    peak = result.metrics.peak_rss_bytes
    return float(peak) if peak and result.ran else None


def _loss_end(result: Result) -> float | None:
    """The final loss, on the learnable stream only (on random tokens it says nothing)."""
    if result.case.data != "learnable" or not result.ran:
        return None
    return result.metrics.loss_end


def _loss_at(result: Result, steps: int) -> float | None:
    """The loss after the first ``steps`` steps, warm-up included (:meth:`Series.loss_at`)."""
    if _loss_end(result) is None:
        return None
    return result.series.loss_at(steps)


# what cold start distorts: the high-water marks (a compile in the worker, autotuning's
# buffers); a busy machine: the speed (docs/baselines.md, "No false alarms")
GATED_METRICS = (
    GatedMetric(
        "tokens_per_s",
        "tokens/s",
        "tok/s",
        True,
        _tokens_per_s,
        samples=measured_tokens_per_s,
        distorted_by=(BUSY,),
    ),
    GatedMetric(
        "peak_memory", "peak device memory", "bytes", False, _peak_device, distorted_by=(COLD,)
    ),
    GatedMetric("host_rss", "peak host RSS", "bytes", False, _host_rss, distorted_by=(COLD,)),
    GatedMetric("loss", "final loss", "", False, _loss_end, at_steps=_loss_at),
)
METRIC_NAMES = tuple(m.name for m in GATED_METRICS)
