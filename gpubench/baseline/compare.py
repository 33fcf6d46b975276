"""``compare(result, history, rules) -> CaseVerdict``: is this run a regression of its case?

Per metric (:data:`~gpubench.baseline.gated.GATED_METRICS`) a regression needs
both a practical change, beyond the metric's threshold in the bad direction, and
statistical evidence that the run is not one more draw of the baseline's
(:mod:`gpubench.baseline.evidence`):

- ``runs``: with at least ``min_history`` comparable baseline runs, the new run's
  value against the prediction interval of those runs' values (their spread
  from run to run);
- ``steps``: with fewer runs, a Mann-Whitney test of the new run's per-step
  samples against the newest baseline run's, and the threshold widened
  (``within_run_widening``), since steps of one run are not independent
  samples of its speed;
- ``threshold``: a metric with one figure per run (memory, final loss) and fewer
  runs than ``min_history``: the threshold alone, widened the same way, since
  how far one run's figure moves from another's is not known yet.

Improvements are found the same way in the other direction. A case that
trained to the end within capacity and now does not (``oom``,
``over_capacity``, ``diverged``, ...) is a regression whatever its figures.

Like is compared with like (docs/baselines.md, "No false alarms"):

- the loss is every run's loss after the same number of steps (the fewest any
  run compared trained), warm-up included: the same seed gives the same loss
  there however long an automatic warm-up took;
- a figure is not judged on a run whose conditions distort it
  (:attr:`GatedMetric.distorted_by`): tokens/s measured while the machine was
  busy with other work, memory high-water marks of a cold run (ops built,
  caches filled). Such runs are set aside for that figure, in the history and
  in this session, as long as another run is left to judge by (else they are
  used, and the verdict's notes say so). When every new run was, a change
  that would be a regression is reported as ``busy`` or ``cold`` instead,
  with the figures and the reason, and fails nothing; the caller runs such a
  case again as it does a suspected regression.

A case that looks regressed is run again (``rules.confirm`` more times, by the
caller) and judged on all its runs: each metric on the median of their
values, the status on the most common one. On a shared machine a single run
now and then lands tens of per cent off (a neighbour's burst during a short
measurement); one such run then fails nothing (docs/baselines.md).

Baseline runs are comparable when they ran on the same device (GPU or CPU model,
and on a CPU its core count), driver, torch, gpubench major version and
profile capacity. Runs from elsewhere are shown, not used to decide, unless
``rules.any_env``: a baseline recorded on another machine must not fail a
newcomer's first run.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gpubench.baseline.evidence import Evidence, prediction_interval, steps_shifted
from gpubench.baseline.gated import BUSY, COLD, GATED_METRICS, GatedMetric
from gpubench.baseline.rules import GateRules
from gpubench.contracts.conditions import busy_sentence, cold_sentence
from gpubench.contracts.result import Result
from gpubench.contracts.schema import record_fields

REGRESSION = "regression"
IMPROVEMENT = "improvement"
UNCHANGED = "unchanged"
NEW = "new"  # the baseline has no figure for it
ELSEWHERE = "elsewhere"  # only baseline runs from another environment: shown, not judged
# a change that would be a regression, measured only in runs whose conditions distort the
# figure: said with its reason, never failed (BUSY, COLD are also the conditions' names)
DECISIONS = (REGRESSION, BUSY, COLD, IMPROVEMENT, UNCHANGED, NEW, ELSEWHERE)


def environment_key(result: Result) -> tuple[Any, ...]:
    """What must match for one run's figures to judge another's."""
    env = result.environment
    major = env.gpubench.split(".", 1)[0] if env.gpubench else ""
    on_cpu = result.profile.kind == "cpu"
    return (
        env.device,
        env.cpu_count if on_cpu else None,
        env.driver,
        env.torch,
        major,
        result.profile.memory_bytes,
    )


def describe_environment(result: Result) -> str:
    env = result.environment
    cores = f", {env.cpu_count} cores" if result.profile.kind == "cpu" else ""
    driver = f", driver {env.driver}" if env.driver else ""
    software = f"torch {env.torch or '?'}, gpubench {env.gpubench or '?'}"
    return f"{env.device or '?'}{cores}{driver}, {software}"


@dataclass(frozen=True)
class MetricVerdict:
    metric: str
    decision: str  # one of DECISIONS
    old: float | None  # the baseline's: median of the runs judged against
    new: float | None
    threshold: float  # the relative change that counts, as applied (widened or not)
    rule: str  # "runs", "steps", "threshold" or "" (not judged)
    runs: int = 0  # baseline runs the figure was judged against
    p_value: float | None = None  # one-sided, in the direction of the change
    interval: tuple[float, float] | None = None  # where an unchanged run would fall
    new_runs: int = 1  # runs of this session ``new`` is the median of (confirmation reruns)
    # the threshold as declared, before the "steps" rule widened it (None: a verdict
    # written before gpubench recorded it), the factor, and where it was declared
    declared_threshold: float | None = None
    widening: float = 1.0
    threshold_source: str = ""
    at_step: int | None = None  # the step count every run's figure was taken at (the loss)
    set_aside: int = 0  # baseline runs not judged by: measured busy or cold (distorted_by)

    @property
    def change(self) -> float | None:
        """Relative change new / old - 1."""
        if self.old is None or self.new is None or self.old == 0:
            return None
        return self.new / self.old - 1

    @property
    def threshold_text(self) -> str:
        """The threshold actually applied, and how it came to be: ``35 % ×2 (one-run
        history) = 70 %``, or ``10 %``."""
        applied = _percent(self.threshold)
        declared = self.declared_threshold
        if declared is None or self.widening == 1.0:
            return applied
        history = _HISTORY_WORDS.get(self.runs, f"{self.runs}-run")
        return f"{_percent(declared)} ×{self.widening:g} ({history} history) = {applied}"

    def to_dict(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        data["interval"] = list(self.interval) if self.interval else None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "verdict.metric") -> MetricVerdict:
        """Read by the policy of :mod:`gpubench.contracts.schema`."""
        fields = record_fields(cls, data, where)
        if fields.get("interval") is not None:
            fields["interval"] = tuple(fields["interval"])
        return cls(**fields)


@dataclass(frozen=True)
class CaseVerdict:
    """The gate's answer for one case on one profile."""

    case_id: str
    profile: str
    nodeid: str | None
    status_old: str | None  # the newest comparable baseline run's status
    status_new: str
    status_decision: str
    metrics: tuple[MetricVerdict, ...] = ()
    baseline_runs: int = 0  # runs in the history
    comparable_runs: int = 0  # of those, from this environment
    elsewhere: str = ""  # the baseline's environment when none is comparable
    # what the reader must know to trust the figures: a busy machine, a cold run, baseline
    # runs set aside for either
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def regressed(self) -> bool:
        return self.status_decision == REGRESSION or any(
            m.decision == REGRESSION for m in self.metrics
        )

    @property
    def suspect(self) -> bool:
        """Worth running again: it regressed, or a figure dropped in runs that were busy or
        cold (a run on a quieter or warm machine can judge it)."""
        return self.regressed or any(m.decision in (BUSY, COLD) for m in self.metrics)

    @property
    def improved(self) -> bool:
        return not self.regressed and (
            self.status_decision == IMPROVEMENT
            or any(m.decision == IMPROVEMENT for m in self.metrics)
        )

    @property
    def decision(self) -> str:
        if self.regressed:
            return REGRESSION
        for condition in (BUSY, COLD):
            if any(m.decision == condition for m in self.metrics):
                return condition
        if self.improved:
            return IMPROVEMENT
        if self.baseline_runs == 0:
            return NEW
        if self.comparable_runs == 0:
            return ELSEWHERE
        return UNCHANGED

    def to_dict(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        data["metrics"] = [m.to_dict() for m in self.metrics]
        data["notes"] = list(self.notes)
        data["decision"] = self.decision
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CaseVerdict:
        """Read by the policy of :mod:`gpubench.contracts.schema` (``decision`` is derived)."""
        fields = record_fields(cls, data, "verdict", derived=("decision",))
        metrics = enumerate(fields.get("metrics", ()))
        fields["metrics"] = tuple(
            MetricVerdict.from_dict(m, f"verdict.metrics[{i}]") for i, m in metrics
        )
        fields["notes"] = tuple(fields.get("notes", ()))
        return cls(**fields)


def compare(
    result: Result,
    history: Sequence[Result],
    rules: GateRules,
    confirmations: Sequence[Result] = (),
) -> CaseVerdict:
    """``result`` (with the reruns that confirm it) judged against the history of its case
    (oldest run first)."""
    key = environment_key(result)
    comparable = [r for r in history if rules.any_env or environment_key(r) == key]
    elsewhere = describe_environment(history[-1]) if history and not comparable else ""
    judged = comparable or list(history)  # runs from elsewhere are shown, not judged
    status_old = judged[-1].status if judged else None
    runs = [result, *confirmations]
    status_new = _most_common_status(runs)
    metrics = tuple(
        verdict
        for metric in GATED_METRICS
        if _values(metric, runs)
        and (verdict := _judge_metric(metric, runs, judged, bool(comparable), rules))
    )
    return CaseVerdict(
        case_id=result.case.id,
        profile=result.profile.name,
        nodeid=result.nodeid,
        status_old=status_old,
        status_new=status_new,
        status_decision=_status_decision(status_old, status_new, bool(comparable)),
        metrics=metrics,
        baseline_runs=len(history),
        comparable_runs=len(comparable),
        elsewhere=elsewhere,
        notes=_notes(runs, judged, metrics),
    )


def representative(runs: Sequence[Result]) -> Result:
    """The run that stands for several runs of one case in one session (a confirmed
    verdict's, or a run directory's): the median by tokens/s of those that trained to the
    end, else the first."""
    ran = sorted((r for r in runs if r.tokens_per_s is not None), key=lambda r: r.tokens_per_s or 0)
    return ran[(len(ran) - 1) // 2] if ran else runs[0]


def _values(metric: GatedMetric, runs: Sequence[Result]) -> list[float]:
    return _judgeable(metric.value(r) for r in runs)


def _judgeable(figures: Iterable[float | None]) -> list[float]:
    """The figures the gate judges: positive, finite numbers (a NaN is never "unchanged";
    the readers refuse one, this holds for a Result made in memory too)."""
    return [v for v in figures if v is not None and math.isfinite(v) and v > 0]


def _most_common_status(runs: Sequence[Result]) -> str:
    """The status most runs ended with (ties: the earliest run's)."""
    statuses = [r.status for r in runs]
    return max(statuses, key=lambda s: (statuses.count(s), -statuses.index(s)))


def _status_decision(old: str | None, new: str, comparable: bool) -> str:
    if old is None:
        return NEW
    if not comparable:
        return ELSEWHERE
    if old == "ok" and new != "ok":
        return REGRESSION
    if old != "ok" and new == "ok":
        return IMPROVEMENT
    return UNCHANGED


def _judge_metric(
    metric: GatedMetric,
    new_runs: list[Result],
    baseline_runs: list[Result],
    comparable: bool,
    rules: GateRules,
) -> MetricVerdict | None:  # None: no run of this session has a figure to judge
    threshold = rules.threshold(metric.name)
    # runs whose conditions distort this figure are set aside while others are left (all
    # new runs distorted: judged, but a regression is said as the condition, below)
    clean = [r for r in new_runs if not metric.distorted(r)]
    judged_new = clean or new_runs
    usable = [r for r in baseline_runs if _values(metric, [r])]
    judged = [r for r in usable if not metric.distorted(r)] or usable
    at_step = _common_steps(metric, judged_new + judged)
    news = _judgeable(_figure(metric, r, at_step) for r in judged_new)
    values = _judgeable(_figure(metric, r, at_step) for r in judged)
    if not news:  # no figure of this session's to judge at the common step
        return None
    new = statistics.median(news)

    def verdict(
        decision: str, old: float | None, applied: float, rule: str, **more: Any
    ) -> MetricVerdict:
        return MetricVerdict(
            metric.name,
            decision,
            old,
            new,
            applied,
            rule,
            new_runs=len(news),
            declared_threshold=threshold,
            threshold_source=rules.source(metric.name),
            at_step=at_step,
            set_aside=len(usable) - len(judged),
            **more,
        )

    if not values:
        return verdict(NEW, None, threshold, "")
    old = statistics.median(values)
    if not comparable:
        return verdict(ELSEWHERE, old, threshold, "", runs=len(values))
    typical = representative(judged_new)
    rule, evidence, applied = _evidence(metric, typical, judged, values, new, rules)
    change = new / old - 1 if old else 0.0
    better = change if metric.higher_is_better else -change
    if metric.higher_is_better:
        p_worse, p_better = evidence.p_lower, evidence.p_higher
    else:
        p_worse, p_better = evidence.p_higher, evidence.p_lower
    decision = UNCHANGED
    if -better > applied and p_worse < rules.alpha:
        decision = REGRESSION
        if not clean:  # every run of the session was busy (or cold): not the code's figure
            held = set().union(*(metric.distorted(r) for r in new_runs))
            decision = BUSY if BUSY in held else COLD
    elif better > applied and p_better < rules.alpha:
        decision = IMPROVEMENT
    return verdict(
        decision,
        old,
        applied,
        rule,
        runs=len(values),
        p_value=p_worse if better < 0 else p_better,
        interval=evidence.interval,
        widening=applied / threshold if threshold else 1.0,
    )


def _common_steps(metric: GatedMetric, runs: Sequence[Result]) -> int | None:
    """The step count every run's figure is taken at (the fewest steps any run trained),
    for a metric compared at the same step; None for the others, or a run without steps."""
    if metric.at_steps is None:
        return None
    counts = [len(r.series.loss) for r in runs if metric.value(r) is not None]
    return min(counts) if counts and min(counts) > 0 else None


def _figure(metric: GatedMetric, result: Result, at_step: int | None) -> float | None:
    if at_step is not None and metric.at_steps is not None:
        return metric.at_steps(result, at_step)
    return metric.value(result)


def _notes(
    runs: Sequence[Result], history: Sequence[Result], metrics: Sequence[MetricVerdict]
) -> tuple[str, ...]:
    """What the reader must know to trust the figures: the conditions of this session's
    runs, and the baseline runs set aside for them (or, with no other, judged by)."""
    notes = []
    for run in runs:
        which = "this run" if run.repeat == 0 else f"rerun {run.repeat}"
        for sentence in (busy_sentence(run.machine_load), cold_sentence(run.cold_start)):
            if sentence:
                notes.append(f"{which}: {sentence}")
    gated = {g.name: g for g in GATED_METRICS}
    for m in metrics:
        metric = gated[m.metric]
        how = " or ".join(metric.distorted_by)
        if m.set_aside:
            notes.append(f"{m.metric}: {m.set_aside} baseline run(s) measured {how} set aside")
        elif m.decision not in (NEW, ELSEWHERE):
            distorted = sum(1 for r in history if metric.distorted(r) and metric.value(r))
            if distorted:
                notes.append(f"{m.metric}: judged against baseline runs measured {how} (no other)")
    return tuple(notes)


def _evidence(
    metric: GatedMetric,
    result: Result,
    judged: list[Result],
    values: list[float],
    new: float,
    rules: GateRules,
) -> tuple[str, Evidence, float]:
    """(rule, evidence, threshold as applied) for one metric."""
    threshold = rules.threshold(metric.name)
    if len(values) >= rules.min_history and len(values) >= 2:
        return "runs", prediction_interval(values, new, rules.alpha), threshold
    if metric.samples is not None:
        evidence = steps_shifted(metric.samples(judged[-1]), metric.samples(result))
        return "steps", evidence, min(0.99, threshold * rules.within_run_widening)
    return "threshold", Evidence(0.0, 0.0), min(0.99, threshold * rules.within_run_widening)


_HISTORY_WORDS = {1: "one-run", 2: "two-run", 3: "three-run", 4: "four-run"}


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.3g} %"
