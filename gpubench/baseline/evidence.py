"""Statistical evidence that a run differs from its baseline, the two ways the gate asks.

- :func:`prediction_interval`: with several baseline runs, where one more run of
  the same code would fall. Run values are modelled as log-normal (a
  throughput or a memory figure moves by a factor, not by an amount); on the log
  scale the interval for one new observation from ``n`` is
  ``mean ± t(1 - alpha, n - 1) · s · sqrt(1 + 1/n)`` (the prediction interval of a
  normal sample: Hahn & Meeker, "Statistical Intervals", 1991, section 4.7;
  NIST/SEMATECH e-Handbook 7.1.3.2). It judges a run against the spread
  *between* runs, which on a shared machine is far larger than the spread of
  the steps within one run.
- :func:`steps_shifted`: with one or two baseline runs there is no run-to-run
  spread to measure; the per-step samples of the newest baseline run and of the
  new run are compared with a one-sided Mann-Whitney U test (Mann & Whitney
  1947), which the caller pairs with a wider threshold, since steps within a run
  are not independent samples of the run's speed.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Evidence:
    """How strongly a new value departs from the baseline in each direction."""

    p_lower: float  # one-sided p-value for "the new value is lower"
    p_higher: float  # one-sided p-value for "the new value is higher"
    interval: tuple[float, float] | None = None  # where an unchanged run would fall


def prediction_interval(baseline: Sequence[float], new: float, alpha: float) -> Evidence:
    """The new value against the log-normal spread of ``baseline`` run values (n >= 2)."""
    from scipy import stats

    n = len(baseline)
    if n < 2:
        raise ValueError(f"a prediction interval needs 2 or more runs, got {n}")
    if new <= 0 or any(v <= 0 for v in baseline):
        raise ValueError("run values must be positive")
    logs = [math.log(v) for v in baseline]
    mean = statistics.fmean(logs)
    scale = statistics.stdev(logs) * math.sqrt(1 + 1 / n)
    quantile = float(stats.t.ppf(1 - alpha, n - 1))
    interval = (math.exp(mean - quantile * scale), math.exp(mean + quantile * scale))
    distance = math.log(new) - mean
    if scale == 0:  # identical runs (a deterministic figure): any difference is a change
        p_lower = 0.0 if distance < 0 else 1.0
        p_higher = 0.0 if distance > 0 else 1.0
        return Evidence(p_lower, p_higher, interval)
    statistic = distance / scale
    return Evidence(
        p_lower=float(stats.t.cdf(statistic, n - 1)),
        p_higher=float(stats.t.sf(statistic, n - 1)),
        interval=interval,
    )


def steps_shifted(baseline: Sequence[float], new: Sequence[float]) -> Evidence:
    """One-sided Mann-Whitney U p-values of the new run's steps against the baseline run's."""
    from scipy import stats

    if not baseline or not new:
        return Evidence(1.0, 1.0)
    lower = stats.mannwhitneyu(new, baseline, alternative="less")
    higher = stats.mannwhitneyu(new, baseline, alternative="greater")
    return Evidence(float(lower.pvalue), float(higher.pvalue))
