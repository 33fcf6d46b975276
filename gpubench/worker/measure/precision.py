"""How sure the median tokens/s is, and when ``steps="auto"`` may stop measuring.

**The interval.** Training steps are correlated (allocator growth, clock ramps, thermal
drift, a neighbour's job), so an interval that treats them as independent is too
narrow. :func:`median_interval` resamples blocks of consecutive steps instead: the
moving-block bootstrap (Künsch 1989, "The jackknife and the bootstrap for general
stationary observations", Ann. Statist. 17(3)) of the median, with a percentile
interval. The block length grows as n^(1/3), the rate Hall, Horowitz & Jing (1995, "On
blocking rules for the bootstrap with dependent data", Biometrika 82(3)) derive; its
constant is estimated from the series' own autocorrelation by Politis & White (2004,
"Automatic block-length selection for the dependent bootstrap", Econometric Reviews
23(1)) with the correction of Patton, Politis & White (2009), so a strongly correlated
run gets long blocks and an independent one blocks of a single step. The bootstrap
draws from a fixed seed: the same steps give the same interval.

The interval is taken on tokens/s itself (``tokens_per_step / step_time``), the figure
:attr:`Metrics.tokens_per_s <gpubench.contracts.result.Metrics.tokens_per_s>`
summarises, so its median is the median the Result reports.

**The stop.** :class:`StopRule` measures ``steps=N`` steps exactly; with
``steps="auto"`` it checks the interval after :data:`MIN_AUTO_STEPS
<gpubench.contracts.case.MIN_AUTO_STEPS>` steps and then each time the count has grown
by :data:`CHECK_GROWTH`, so the checks are few (about 50 between 20 and 2,000 steps)
and the bias of stopping at the first narrow interval stays small; it stops when the
half-width over the median is at most the target, or at ``max_steps``, or once the
measured steps have taken ``max_seconds``. docs/diagnostics.md, "How sure".
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gpubench.contracts.case import DEFAULT_PRECISION_TARGET, MIN_AUTO_STEPS, STEPS_AUTO, Case
from gpubench.contracts.result import Metrics

CONFIDENCE = 0.95  # the interval's level
REPLICATES = 1000  # bootstrap resamples: the 2.5 % and 97.5 % points from 25 draws each
SEED = 0x6770  # the resampling's seed: the same steps give the same interval
MIN_INTERVAL_STEPS = 10  # fewer steps: a median's resamples take a handful of values only
CHECK_GROWTH = 1.10  # steps="auto" checks again once the measured steps grew by 10 %
STOP_REASONS = ("steps", "precision", "max_steps", "max_seconds")  # Metrics.stop_reason


@dataclass(frozen=True)
class MedianInterval:
    """A confidence interval of the median tokens/s over ``n`` measured steps."""

    median: float
    low: float
    high: float
    confidence: float
    n: int
    block: int  # steps per resampled block

    @property
    def precision(self) -> float:
        """The interval's half-width over the median (0.01: ±1 %)."""
        return (self.high - self.low) / 2 / self.median


def block_length(values: np.ndarray) -> int:
    """The moving-block bootstrap's block length for ``values``: Politis & White's (2004)
    estimate for the circular/moving block, as corrected by Patton, Politis & White
    (2009), at least 1 and at most min(3 sqrt(n), n / 3) steps.

    Their rule is b = (2 G^2 / D)^(1/3) n^(1/3), G and D sums of the autocovariances
    weighted by a flat-top window whose width is the first lag after which
    ``k_n`` autocorrelations in a row are insignificant."""
    n = len(values)
    if n < 4:
        return 1
    eps = values - values.mean()
    b_max = math.ceil(min(3 * math.sqrt(n), n / 3))
    k_n = max(5, int(math.log10(n)))
    m_max = min(math.ceil(math.sqrt(n)) + k_n, n - 1)
    significant = 2 * math.sqrt(math.log10(n) / n)
    acov = np.array([eps[k:] @ eps[: n - k] / n for k in range(m_max + 1)])
    if acov[0] <= 0:  # every step alike: nothing to resample in blocks
        return 1
    acorr = np.abs(acov[1:] / acov[0])
    m_hat = _bandwidth(acorr, significant, k_n)
    m = min(2 * max(m_hat, 1), m_max)
    lags = np.arange(-m, m + 1)
    ratio = np.abs(lags) / m
    window = np.where(ratio <= 0.5, 1.0, 2 * (1 - ratio))
    gamma = acov[np.abs(lags)]
    g = float(np.sum(window * np.abs(lags) * gamma))
    spectral = float(np.sum(window * gamma))
    d_moving = 4 / 3 * spectral**2
    if d_moving <= 0:
        return 1
    b = (2 * g**2 / d_moving) ** (1 / 3) * n ** (1 / 3)
    return int(min(max(1, math.ceil(b)), b_max))


def _bandwidth(acorr: np.ndarray, significant: float, run: int) -> int:
    """The first lag after which ``run`` autocorrelations in a row are below
    ``significant``; without such a run, the last significant lag."""
    quiet = 0
    for lag, value in enumerate(acorr, start=1):
        quiet = quiet + 1 if value < significant else 0
        if quiet == run:
            return lag - run
    loud = np.flatnonzero(acorr >= significant)
    return int(loud[-1]) + 1 if loud.size else 1


def median_interval(
    step_times_s: Sequence[float],
    tokens_per_step: float = 1.0,
    *,
    confidence: float = CONFIDENCE,
    replicates: int = REPLICATES,
    seed: int = SEED,
    block: int | None = None,
) -> MedianInterval | None:
    """The ``confidence`` interval of the median tokens/s of ``step_times_s`` by a
    moving-block bootstrap of the median (percentile interval); ``block`` steps per
    block, by default :func:`block_length`. None from fewer than
    :data:`MIN_INTERVAL_STEPS` steps, or a step time that is not positive."""
    times = np.asarray(step_times_s, dtype=float)
    n = len(times)
    if n < MIN_INTERVAL_STEPS or not np.all(times > 0) or not np.all(np.isfinite(times)):
        return None
    rates = tokens_per_step / times
    length = block or block_length(rates)
    length = max(1, min(length, n))
    per_resample = math.ceil(n / length)
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n - length + 1, size=(replicates, per_resample))
    index = (starts[:, :, None] + np.arange(length)).reshape(replicates, -1)[:, :n]
    medians = np.median(rates[index], axis=1)
    alpha = 1 - confidence
    low, high = np.quantile(medians, [alpha / 2, 1 - alpha / 2])
    return MedianInterval(
        median=float(np.median(rates)),
        low=float(low),
        high=float(high),
        confidence=confidence,
        n=n,
        block=length,
    )


class StopRule:
    """When a case's measuring stops: after exactly ``case.steps`` steps, or with
    ``steps="auto"`` when the median is known to ``target`` (or a cap comes first).

    The loop feeds it each measured step's time (:meth:`observe`), exchanges its
    :meth:`vote` with the other ranks (every rank must stop at the same step), and asks
    :meth:`reason` with what the ranks said together."""

    def __init__(self, case: Case, target: float | None = None) -> None:
        self.auto = case.steps == STEPS_AUTO
        self.steps = case.max_steps if self.auto else int(case.steps)
        self.max_seconds = case.max_seconds if self.auto else math.inf
        chosen = target or case.precision_target or DEFAULT_PRECISION_TARGET
        self.target: float | None = chosen if self.auto else None
        self.step_times_s: list[float] = []
        self.measured_s = 0.0  # the measured steps' own time: the clock max_seconds reads
        self.last: MedianInterval | None = None  # the latest check's interval
        self._next_check = MIN_AUTO_STEPS

    @property
    def measured(self) -> int:
        return len(self.step_times_s)

    @property
    def total(self) -> int | None:
        """The measured steps the case will take: ``steps``; None with ``auto``."""
        return None if self.auto else self.steps

    def observe(self, step_time_s: float) -> None:
        self.step_times_s.append(step_time_s)
        self.measured_s += step_time_s

    def capped(self) -> bool:
        """A cap is reached: the step count, or (``auto``) the measured steps' seconds."""
        return self.measured >= self.steps or self.measured_s >= self.max_seconds

    def precise(self) -> bool:
        """``auto``: whether the median is known to the target now. Checked on the geometric
        schedule, and once more at a cap (between checks: False); a fixed count: False."""
        n = self.measured
        if not self.auto or (n < self._next_check and not self.capped()):
            return False
        # rounded first: 50 * 1.1 is 55.000000000000007 in floating point, not past 55
        self._next_check = max(n + 1, math.ceil(round(n * CHECK_GROWTH, 9)))
        self.last = median_interval(self.step_times_s)
        assert self.target is not None
        return self.last is not None and self.last.precision <= self.target

    def vote(self) -> tuple[bool, bool]:
        """This rank's view after a measured step: (not precise yet, a cap reached)."""
        return not self.precise(), self.capped()

    def reason(self, anyone_imprecise: bool, anyone_capped: bool) -> str:
        """Why measuring stops after this step, from every rank's :meth:`vote` (ORed); ""
        to go on. A fixed count stops at ``steps``; ``auto`` once every rank's median is
        precise, else when any rank reached a cap (``max_steps`` before ``max_seconds``:
        one rank's clock may run out before another's)."""
        if not self.auto:
            return "steps" if self.measured >= self.steps else ""
        if not anyone_imprecise:
            return "precision"
        if anyone_capped:
            return "max_steps" if self.measured >= self.steps else "max_seconds"
        return ""


def with_precision(
    metrics: Metrics,
    step_times_s: Sequence[float],
    tokens_per_step: float,
    *,
    stop_reason: str,
    target: float | None,
) -> Metrics:
    """``metrics`` with the median tokens/s's interval over the measured ``step_times_s``
    (none from fewer than :data:`MIN_INTERVAL_STEPS`, or without a throughput), why
    measuring stopped, and with ``steps="auto"``'s ``target`` whether it was reached."""
    interval = median_interval(step_times_s, tokens_per_step) if metrics.tokens_per_s else None
    reached = None
    if target is not None:
        reached = interval is not None and interval.precision <= target
    if interval is None:
        return dataclasses.replace(
            metrics, stop_reason=stop_reason, precision_target=target, precision_reached=reached
        )
    return dataclasses.replace(
        metrics,
        precision_achieved=interval.precision,
        tokens_per_s_low=interval.low,
        tokens_per_s_high=interval.high,
        precision_confidence=interval.confidence,
        precision_target=target,
        precision_reached=reached,
        stop_reason=stop_reason,
    )
