"""The verdict a report opens with: per profile, go or no-go, and the recommended case.

The recommended case is the fastest (median tokens/s) of those that trained to
the end within the profile's capacity **less a safety margin** (default 10 %
of capacity: allocator fragmentation and a longer run's growth need room),
whose step time was steady and, on learnable data, whose loss fell. A case
with a noisy step time wins only when its p10 tokens/s is above the steady
winner's p90 (or no case was steady), and the page says it was noisy. Every
other case says why it lost, with its figures. A profile is "go" when it has a
recommended case. The recommendation is also written as ``recommended.json``
(:func:`recommended_record`), which a training script can load.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gpubench.contracts.result import NOISY_CV, Result
from gpubench.report import figures
from gpubench.report.headroom import capacity_bytes, fits_with_margin

DEFAULT_SAFETY_MARGIN = 0.10
RECOMMENDED_FORMAT = "gpubench-recommended"
RECOMMENDED_VERSION = 1


@dataclass(frozen=True)
class Standing:
    """One case of a profile and, unless it is the recommended one, why it lost."""

    result: Result
    reason: str  # "" for the recommended case


@dataclass(frozen=True)
class ProfileVerdict:
    profile: str
    capacity_bytes: int
    margin: float
    is_cpu: bool  # the cap is the kernel's, above the worker's imports: PASS fits it
    recommended: Result | None
    standings: tuple[Standing, ...]  # the recommended case first, then the others by speed

    @property
    def go(self) -> bool:
        return self.recommended is not None

    @property
    def usable_bytes(self) -> int:
        return math.floor(self.capacity_bytes * (1 - self.margin))


def parse_margin(value: str | float, where: str) -> float:
    """A safety margin, a fraction of capacity in [0, 1) (``"0.1"`` or 0.1); ValueError naming
    ``where``, the value and what is expected."""
    try:
        margin = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        margin = math.nan
    if not 0 <= margin < 1:
        raise ValueError(
            f"{where}={value!r}: expected a fraction of capacity in [0, 1), e.g. 0.1 for 10 %"
        )
    return margin


def profile_verdicts(
    results: Sequence[Result], margin: float = DEFAULT_SAFETY_MARGIN
) -> list[ProfileVerdict]:
    """One verdict per profile, in the order profiles first appear in ``results``."""
    by_profile: dict[str, list[Result]] = {}
    for result in results:
        by_profile.setdefault(result.profile.name, []).append(result)
    return [_verdict(runs, margin) for runs in by_profile.values()]


def _healthy(result: Result) -> bool:
    return result.case.data != "learnable" or result.loss_decreased


def _verdict(results: list[Result], margin: float) -> ProfileVerdict:
    fitting = [
        r
        for r in results
        if r.fits and r.tokens_per_s is not None and fits_with_margin(r, margin) and _healthy(r)
    ]
    steady = [r for r in fitting if not r.metrics.noisy]
    best = max(steady, key=_median) if steady else None
    # a noisy case wins only when even its slow steps (p10) beat the steady winner's fast
    # ones (p90): then no noise explains the difference; the page says it was noisy
    clearly_faster = [
        r for r in fitting if r.metrics.noisy and (best is None or _p10(r) > _p90(best))
    ]
    if clearly_faster:
        best = max(clearly_faster, key=_median)
    others = sorted(
        (r for r in results if r is not best),
        key=lambda r: (-(r.tokens_per_s or 0.0) if r.ran else math.inf, r.case.id),
    )
    standings = [Standing(best, "")] if best else []
    standings += [Standing(r, why_not(r, best, margin)) for r in others]
    first = results[0]
    return ProfileVerdict(
        first.profile.name,
        capacity_bytes(first),
        margin,
        first.profile.is_cpu,
        best,
        tuple(standings),
    )


def _median(result: Result) -> float:
    return result.tokens_per_s or 0.0


def _p10(result: Result) -> float:
    tps = result.metrics.tokens_per_s
    return tps.p10 if tps else 0.0


def _p90(result: Result) -> float:
    tps = result.metrics.tokens_per_s
    return tps.p90 if tps else 0.0


def why_not(result: Result, best: Result | None, margin: float) -> str:
    """Why ``result`` is not the recommended case, with the figures that decided it."""
    m = result.metrics
    capacity = capacity_bytes(result)
    peak = result.peak_memory_bytes
    if result.predicted:
        estimated = result.estimate.peak_bytes if result.estimate else None
        return (
            f"predicted {figures.status(result.status)}, not run: estimated peak "
            f"{figures.gib(estimated)} GiB of {figures.gib(capacity)} GiB"
        )
    if result.status == "over_capacity":
        return f"over capacity: peak {figures.gib(peak)} GiB > {figures.gib(capacity)} GiB"
    if result.status == "oom":
        return f"out of memory under {figures.gib(capacity)} GiB"
    if result.status == "diverged":
        return f"diverged: {m.nonfinite_steps} non-finite step(s)"
    if result.status in ("timeout", "crashed"):
        kind = result.error.type if result.error else ""
        return f"{result.status}" + (f" ({kind})" if kind and kind != "Timeout" else "")
    if result.tokens_per_s is None:
        return "no throughput measured"
    if not fits_with_margin(result, margin):
        return (
            f"inside the {figures.percent(margin, 0)} % safety margin: peak "
            f"{figures.gib(peak)} GiB > {figures.gib(capacity * (1 - margin))} GiB usable"
        )
    if not _healthy(result):
        return f"loss did not fall: {figures.loss_change(m.loss_start, m.loss_end)}"
    if best is not None and m.noisy and not best.metrics.noisy:
        cv = m.step_time_s.cv if m.step_time_s else None
        return (
            f"noisy: step-time CV {figures.percent(cv)} % > {figures.percent(NOISY_CV, 0)} %, "
            f"and its p10 ({figures.rate(_p10(result))} tok/s) is not above the "
            f"recommendation's p90 ({figures.rate(_p90(best))})"
        )
    if best is not None and best.tokens_per_s:
        change = result.tokens_per_s / best.tokens_per_s - 1
        return (
            f"slower: {figures.rate(result.tokens_per_s)} vs "
            f"{figures.rate(best.tokens_per_s)} tok/s ({100 * change:+.1f} %)"
        )
    return ""


def measured_figures(result: Result) -> dict[str, Any]:
    """A case's measured figures, as a training script or a later report reads them."""
    m = result.metrics
    tps, step = m.tokens_per_s, m.step_time_s
    return {
        "status": result.status,
        "tokens_per_s_median": tps.median if tps else None,
        "tokens_per_s_p10": tps.p10 if tps else None,
        "tokens_per_s_p90": tps.p90 if tps else None,
        "step_time_s_median": step.median if step else None,
        "step_time_cv": step.cv if step else None,
        "peak_memory_bytes": result.peak_memory_bytes,
        "peak_memory_source": m.peak_memory_source,
        "peak_rss_bytes": m.peak_rss_bytes,
        "capacity_bytes": capacity_bytes(result),
        "loss_start": m.loss_start,
        "loss_end": m.loss_end,
        "n_params": m.n_params or None,
        "measured_steps": m.measured_steps,
    }


def recommended_record(verdicts: Sequence[ProfileVerdict]) -> dict[str, Any]:
    """``recommended.json``: per profile with a recommendation, the case to train with (the
    whole Case, as ``Case.from_dict`` reads it, and its main settings at the top level)
    and what it measured."""
    entries = []
    for verdict in verdicts:
        best = verdict.recommended
        if best is None:
            continue
        case = best.case
        entries.append(
            {
                "profile": verdict.profile,
                "case_id": case.id,
                "model": case.model,
                "batch_size": case.batch_size,
                "seq_len": case.seq_len,
                "precision": case.flags.precision,
                "engine": case.engine,
                "nproc": case.nproc,
                "flags": case.to_dict()["flags"],
                "case": case.to_dict(),
                "safety_margin": verdict.margin,
                "run_id": best.run_id,
                "nodeid": best.nodeid,
                "measured": measured_figures(best),
            }
        )
    return {"format": RECOMMENDED_FORMAT, "version": RECOMMENDED_VERSION, "recommended": entries}
