"""The verdict a report opens with: per profile and workload, whether to go, and the case
to train with.

Cases are ranked only against *comparable, trustworthy* ones (:mod:`gpubench.report.trust`
says what both mean): the same workload (model, sequence length, data), enough measured
steps for a spread, learnable data whose loss fell, no implausible figure. A run that
mixes workloads gets a verdict per workload, since tokens/s of another model or sequence
length is not a faster setting of this one. Per workload, one of:

- **GO**: the recommended case is the fastest (median tokens/s) of the trustworthy cases
  that trained to the end within the profile's capacity **less a safety margin** (default
  10 % of capacity: allocator fragmentation and a longer run's growth need room) with a
  settled measurement. A case's median tokens/s is known to its confidence interval
  (``metrics.tokens_per_s_low``/``high``); one whose ``steps="auto"`` stopped at a cap
  before its precision target is unsettled, and wins only when its interval's low end is
  above the settled winner's high end (or no case was settled). A record without an
  interval (before schema v7, or too few steps) falls back on its step time: a noisy one
  (CV above 5 %) wins only when its p10 tokens/s is above the winner's p90. The page says
  which.
- **FITS, NOT RANKED**: a case trained to the end within the margin, but none can be
  ranked (each one's reasons are shown: too few steps, random data, a loss that did not
  fall, an implausible figure).
- **NO-GO**: no case trained to the end within the margin.
- **PREDICTED TO FIT** / **PREDICTED NO-GO**: nothing ran (``--gpubench-estimate-only``):
  the memory estimate says whether a case fits; no throughput, so nothing is ranked.

Every other case says why it lost, with its figures. The recommendations are also
written as ``recommended.json`` (:func:`recommended_record`), which a training script
can load.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gpubench.contracts.result import NOISY_CV, Result
from gpubench.report import figures
from gpubench.report.headroom import capacity_bytes, fits_with_margin
from gpubench.report.trust import Workload, distrust, workload

DEFAULT_SAFETY_MARGIN = 0.10
RECOMMENDED_FORMAT = "gpubench-recommended"
RECOMMENDED_VERSION = 2  # v2: one entry per profile *and workload*, which it names

LISTED_STANDINGS = 12  # a verdict's "why not" rows shown open; more are folded

GO = "GO"
NOT_RANKED = "FITS, NOT RANKED"
NO_GO = "NO-GO"
PREDICTED_FIT = "PREDICTED TO FIT"
PREDICTED_NO_GO = "PREDICTED NO-GO"


@dataclass(frozen=True)
class Standing:
    """One case of a workload and, unless it is the recommended one, why it lost."""

    result: Result
    reason: str  # "" for the recommended case


@dataclass(frozen=True)
class WorkloadVerdict:
    """The cases of one workload on one profile, judged together."""

    workload: Workload
    kind: str  # GO, NOT_RANKED, NO_GO, PREDICTED_FIT or PREDICTED_NO_GO
    recommended: Result | None
    standings: tuple[Standing, ...]  # the recommended case first, then the others by speed
    summary: str  # one line: what decided the kind, with counts (for all but GO)

    @property
    def go(self) -> bool:
        return self.recommended is not None

    @property
    def cases(self) -> int:
        return len(self.standings)

    @property
    def losers(self) -> tuple[Standing, ...]:
        return tuple(s for s in self.standings if s.reason)

    @property
    def predicted(self) -> bool:
        return self.kind in (PREDICTED_FIT, PREDICTED_NO_GO)

    @property
    def predicted_to_fit(self) -> int:
        """Cases the estimate says fit within the margin (of a predicted workload)."""
        return sum(s.reason.startswith(PREDICTIONS[0]) for s in self.standings)


@dataclass(frozen=True)
class ProfileVerdict:
    profile: str
    capacity_bytes: int
    margin: float
    is_cpu: bool  # the cap is the kernel's, above the worker's imports: PASS fits it
    workloads: tuple[WorkloadVerdict, ...]  # GO first, then by number of cases

    @property
    def go(self) -> bool:
        """A case is recommended for some workload."""
        return any(w.go for w in self.workloads)

    @property
    def kind(self) -> str | None:
        """The profile's verdict where it ran one workload; None with several (each has its
        own: a GO for a smoke test says nothing of the model the run was for)."""
        return self.workloads[0].kind if len(self.workloads) == 1 else None

    @property
    def recommendations(self) -> tuple[Result, ...]:
        return tuple(w.recommended for w in self.workloads if w.recommended is not None)

    @property
    def standings(self) -> tuple[Standing, ...]:
        return tuple(s for w in self.workloads for s in w.standings)

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
    return [_profile_verdict(runs, margin) for runs in by_profile.values()]


def _profile_verdict(results: list[Result], margin: float) -> ProfileVerdict:
    by_workload: dict[Workload, list[Result]] = {}
    for result in results:
        by_workload.setdefault(workload(result), []).append(result)
    judged = [_workload_verdict(w, runs, margin) for w, runs in by_workload.items()]
    order = (GO, NOT_RANKED, PREDICTED_FIT, NO_GO, PREDICTED_NO_GO)
    judged.sort(key=lambda v: (order.index(v.kind), -v.cases))
    first = results[0]
    return ProfileVerdict(
        first.profile.name, capacity_bytes(first), margin, first.profile.is_cpu, tuple(judged)
    )


def _fits(result: Result, margin: float) -> bool:
    """Trained to the end, with a throughput, within capacity less the margin."""
    return result.fits and result.tokens_per_s is not None and fits_with_margin(result, margin)


def predicted_to_fit(result: Result, margin: float) -> bool:
    """A predicted case whose estimated peak is within capacity less the margin (on a cpu
    profile: estimated to fit, the margin being a GPU's)."""
    estimate = result.estimate
    if not result.predicted or estimate is None or estimate.status != "ok":
        return False
    return result.profile.is_cpu or estimate.peak_bytes <= capacity_bytes(result) * (1 - margin)


def _workload_verdict(work: Workload, results: list[Result], margin: float) -> WorkloadVerdict:
    fitting = [r for r in results if _fits(r, margin)]
    ranked = [r for r in fitting if not distrust(r)]
    steady = [r for r in ranked if not unsettled(r)]
    best = max(steady, key=_median) if steady else None
    # an unsettled case wins only when even its low end (interval, else p10) beats the
    # settled winner's high end (interval, else p90): then no noise explains the difference
    clearly_faster = [r for r in ranked if unsettled(r) and (best is None or _low(r) > _high(best))]
    if clearly_faster:
        best = max(clearly_faster, key=_median)
    others = sorted(
        (r for r in results if r is not best),
        key=lambda r: (-(r.tokens_per_s or 0.0) if r.ran else math.inf, r.case.id),
    )
    standings = [Standing(best, "")] if best else []
    standings += [Standing(r, why_not(r, best, margin)) for r in others]
    if best is not None:
        kind, summary = GO, ""
    elif results and all(r.predicted for r in results):
        kind, summary = _predicted(results, margin)
    elif fitting:
        kind, summary = NOT_RANKED, _not_ranked(fitting, results)
    else:
        kind, summary = NO_GO, _no_go(results, margin)
    return WorkloadVerdict(work, kind, best, tuple(standings), summary)


def _counted(counts: Counter[str]) -> str:
    return ", ".join(f"{n} {what}" for what, n in counts.most_common())


def _not_ranked(fitting: list[Result], results: list[Result]) -> str:
    reasons: Counter[str] = Counter(
        reason.split(":", 1)[0] for r in fitting for reason in distrust(r)
    )
    return (
        f"{len(fitting)} of {len(results)} case(s) trained to the end within the margin, "
        f"none can be ranked: {_counted(reasons)}"
    )


def _no_go(results: list[Result], margin: float) -> str:
    statuses: Counter[str] = Counter(
        figures.status(r.status)
        if not r.fits
        else ("no throughput" if r.tokens_per_s is None else "inside the margin")
        for r in results
        if not _fits(r, margin)
    )
    return f"No case trained to the end within the margin: {_counted(statuses)}"


def _predicted(results: list[Result], margin: float) -> tuple[str, str]:
    outcomes = Counter(_prediction(r, margin)[0] for r in results)
    counted = ", ".join(f"{outcomes[o]} {o}" for o in PREDICTIONS if outcomes[o])
    text = (
        f"Of {len(results)} case(s), {counted}. Nothing ran (estimate only): no throughput, "
        "so no case is ranked or recommended; run without --gpubench-estimate-only to "
        "measure them"
    )
    return (PREDICTED_FIT if outcomes[PREDICTIONS[0]] else PREDICTED_NO_GO), text


PREDICTIONS = (
    "predicted to fit",
    "predicted inside the margin",
    "too close to call",
    "predicted out of memory",
)


def _prediction(result: Result, margin: float) -> tuple[str, str]:
    """(outcome, its figures) of a predicted case: one of :data:`PREDICTIONS`."""
    capacity = capacity_bytes(result)
    estimated = result.estimate.peak_bytes if result.estimate else None
    figure = f"estimated peak {figures.gib(estimated)} GiB of {figures.gib(capacity)} GiB"
    if predicted_to_fit(result, margin):
        return PREDICTIONS[0], figure
    if result.status == "ok":
        usable = figures.gib(capacity * (1 - margin))
        return PREDICTIONS[1], f"{figure} ({usable} GiB usable with the margin)"
    if result.status == "over_capacity":  # the tensors fit, the allocator's margin may not
        return PREDICTIONS[2], f"{figure}: the estimate's verdict is over capacity (PASS*)"
    return PREDICTIONS[3], figure


def _median(result: Result) -> float:
    return result.tokens_per_s or 0.0


def has_interval(result: Result) -> bool:
    """The median tokens/s has a confidence interval (schema v7, enough measured steps)."""
    m = result.metrics
    return m.tokens_per_s_low is not None and m.tokens_per_s_high is not None


def unsettled(result: Result) -> bool:
    """Its median is not known well enough to rank on alone: with an interval, steps="auto"
    stopped before its precision target; without one, a noisy step time (the fallback for
    records before v7)."""
    if has_interval(result):
        return result.metrics.precision_reached is False
    return result.metrics.noisy


def _low(result: Result) -> float:
    """The interval's low end, else p10 tokens/s."""
    m = result.metrics
    if m.tokens_per_s_low is not None and has_interval(result):
        return m.tokens_per_s_low
    return m.tokens_per_s.p10 if m.tokens_per_s else 0.0


def _high(result: Result) -> float:
    """The interval's high end, else p90 tokens/s."""
    m = result.metrics
    if m.tokens_per_s_high is not None and has_interval(result):
        return m.tokens_per_s_high
    return m.tokens_per_s.p90 if m.tokens_per_s else 0.0


def _bounds(result: Result) -> str:
    """``"interval 4,510-4,620"`` or ``"p10 4,652"``-style names of the figures compared."""
    return "interval's low end" if has_interval(result) else "p10"


def _unsettled_reason(result: Result, best: Result) -> str:
    m = result.metrics
    high = "interval's high end" if has_interval(best) else "p90"
    if has_interval(result):
        why = (
            f"precision target not reached: ±{figures.percent(m.precision_achieved)} % > "
            f"±{figures.percent(m.precision_target)} %"
        )
    else:
        cv = m.step_time_s.cv if m.step_time_s else None
        why = f"noisy: step-time CV {figures.percent(cv)} % > {figures.percent(NOISY_CV, 0)} %"
    return (
        f"{why}, and its {_bounds(result)} ({figures.rate(_low(result))} tok/s) is not above "
        f"the recommendation's {high} ({figures.rate(_high(best))})"
    )


def why_not(result: Result, best: Result | None, margin: float) -> str:
    """Why ``result`` is not the recommended case, with the figures that decided it."""
    m = result.metrics
    capacity = capacity_bytes(result)
    peak = result.peak_memory_bytes
    if result.predicted:
        outcome, figure = _prediction(result, margin)
        return f"{outcome}, not run: {figure}"
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
    reasons = distrust(result)
    if reasons:
        return "not ranked: " + "; ".join(reasons)
    if best is not None and unsettled(result) and not unsettled(best):
        return _unsettled_reason(result, best)
    if best is not None and best.tokens_per_s:
        change = result.tokens_per_s / best.tokens_per_s - 1
        text = (
            f"slower: {figures.rate(result.tokens_per_s)} vs "
            f"{figures.rate(best.tokens_per_s)} tok/s ({100 * change:+.1f} %)"
        )
        if has_interval(result) and has_interval(best) and _high(result) >= _low(best):
            text += (
                f"; the intervals overlap ({figures.rate_range(_low(result), _high(result))} "
                f"vs {figures.rate_range(_low(best), _high(best))}): within the precision"
            )
        return text
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
        "tokens_per_s_low": m.tokens_per_s_low,  # the median's confidence interval
        "tokens_per_s_high": m.tokens_per_s_high,
        "precision_achieved": m.precision_achieved,
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
    """``recommended.json``: per profile and workload with a recommendation, the case to
    train with (the whole Case, as ``Case.from_dict`` reads it, and its main settings at
    the top level), its workload and what it measured."""
    entries = []
    for verdict in verdicts:
        for judged in verdict.workloads:
            best = judged.recommended
            if best is None:
                continue
            case = best.case
            entries.append(
                {
                    "profile": verdict.profile,
                    "workload": {
                        "model": case.model,
                        "seq_len": case.seq_len,
                        "data": case.data,
                        "model_config": dict(case.model_config),
                        "vocab_size": case.vocab_size,
                    },
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
