"""What the gate compares, read from a Result in one place.

Each :class:`GatedMetric` gives a run's value (one number per run: what the
history's spread is measured on), its per-step samples where a run has them
(for the within-run test), and which direction is better.
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


GATED_METRICS = (
    GatedMetric(
        "tokens_per_s", "tokens/s", "tok/s", True, _tokens_per_s, samples=measured_tokens_per_s
    ),
    GatedMetric("peak_memory", "peak device memory", "bytes", False, _peak_device),
    GatedMetric("host_rss", "peak host RSS", "bytes", False, _host_rss),
    GatedMetric("loss", "final loss", "", False, _loss_end),
)
METRIC_NAMES = tuple(m.name for m in GATED_METRICS)
