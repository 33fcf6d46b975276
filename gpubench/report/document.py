"""A report's content, built once from results (and baselines): every section's data,
ready for the templates. Nothing here knows pytest, a session or a file format.

A section is None or empty when its data does not exist (no projection inputs, no
baseline, no failed case...): the templates then leave it out, never a placeholder.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gpubench.baseline.compare import CaseVerdict, representative
from gpubench.contracts.case import STEPS_AUTO
from gpubench.contracts.result import Result
from gpubench.report import charts
from gpubench.report.advice import Advice, advise
from gpubench.report.charts import Chart
from gpubench.report.comparison import CaseComparison, Histories, columns, comparisons
from gpubench.report.configurations import anchor, matrix_columns, matrix_frame
from gpubench.report.diagnostics import (
    PhaseRow,
    ReadingRow,
    energy_facts,
    interval_sentence,
    phase_rows,
    reading_rows,
)
from gpubench.report.prediction import PredictionRow, prediction_rows, sources
from gpubench.report.projection import ProjectionInputs, projection_frame
from gpubench.report.provenance import (
    EnvironmentColumn,
    Rerun,
    environment_columns,
    profile_spec,
    rerun_command,
)
from gpubench.report.pytest_outcomes import LABELS, GoNoGo, Outcomes, go_no_go_rows
from gpubench.report.ranks import RankRow, rank_rows
from gpubench.report.recommendation import DEFAULT_SAFETY_MARGIN, ProfileVerdict, profile_verdicts
from gpubench.report.resume import ResumeRow, ResumeStep, resume_rows, resume_steps
from gpubench.storage import Invocation, TestOutcome


@dataclass(frozen=True)
class ReportData:
    """What a report is made from."""

    results: Sequence[Result]
    verdicts: Sequence[CaseVerdict] = ()  # the gate's, for the baseline comparison
    histories: Histories = field(default_factory=dict)  # the baseline's runs per case
    invocations: Sequence[Invocation] = ()  # the command lines that ran the runs
    projection: ProjectionInputs = field(default_factory=ProjectionInputs)
    safety_margin: float = DEFAULT_SAFETY_MARGIN
    outcomes: Sequence[TestOutcome] = ()  # pytest's outcome of each gpubench test


@dataclass(frozen=True)
class CaseDetail:
    result: Result
    anchor: str
    label: str
    chart_svg: str | None
    rerun: str | None  # the pytest command that runs this case alone
    settings: tuple[tuple[str, str], ...]
    trend_svg: str | None = None  # tokens/s over the baseline's runs and this one
    # the diagnostics (gpubench.report.diagnostics): empty where the Result has none
    interval: str = ""  # the median tokens/s's interval, and the adaptive stop's target
    phases: tuple[PhaseRow, ...] = ()
    readings: tuple[ReadingRow, ...] = ()
    energy: tuple[tuple[str, str], ...] = ()
    telemetry_svg: str | None = None  # utilisation, power, temperature over time
    ranks: tuple[RankRow, ...] = ()  # each rank's figures (gpubench.report.ranks); (): one
    resume: tuple[ResumeStep, ...] = ()  # the resume check's losses step by step; (): none


@dataclass(frozen=True)
class Report:
    run_ids: tuple[str, ...]
    profiles: tuple[str, ...]
    started: tuple[str, str]  # first and last case's start (ISO 8601, UTC)
    cases: int
    status_counts: Mapping[str, int]
    predicted: int  # cases answered by the memory estimator, not run (--gpubench-estimate-only)
    verdicts: tuple[ProfileVerdict, ...]
    go_no_go: tuple[GoNoGo, ...]  # each suite's go/no-go test, as pytest ended it
    matrix: tuple[dict[str, Any], ...]
    matrix_columns: tuple[tuple[str, str, bool], ...]  # (row key, heading, numeric)
    charts: Mapping[str, Chart]  # title -> inline SVG and its caption
    projection: ProjectionInputs
    projections: tuple[dict[str, Any], ...]
    # predicted tokens/s per case and profile, beside the measured where both exist
    predictions: tuple[PredictionRow, ...]
    prediction_sources: tuple[str, ...]  # each method and source of the predictions, once
    advice: tuple[Advice, ...]
    comparisons: tuple[CaseComparison, ...]
    comparison_columns: tuple[tuple[str, str, bool], ...]  # (row key, heading, numeric)
    details: tuple[CaseDetail, ...]
    environments: tuple[EnvironmentColumn, ...]
    rerun: Rerun | None
    safety_margin: float
    resume_checks: tuple[ResumeRow, ...] = ()  # each case's resume check (report/resume.py)

    @property
    def several_profiles(self) -> bool:
        return len(self.profiles) > 1

    @property
    def title(self) -> str:
        runs = ", ".join(self.run_ids) if len(self.run_ids) <= 3 else f"{len(self.run_ids)} runs"
        return f"gpubench report: {runs or 'results'}"


def representatives(results: Sequence[Result]) -> list[Result]:
    """One result per case of each run: a case the gate ran again to confirm a regression
    is stood for by its median run (the gate's :func:`representative`)."""
    groups: dict[tuple[str | None, str, str], list[Result]] = {}
    for result in results:
        groups.setdefault((result.run_id, result.profile.name, result.case.id), []).append(result)
    return [representative(runs) for runs in groups.values()]


def _settings(result: Result) -> tuple[tuple[str, str], ...]:
    case = result.case
    flags = case.flags
    m = result.metrics
    items = [
        ("model", case.model + (f" ({m.n_params:,} parameters)" if m.n_params else "")),
        ("engine", case.engine + (f", {case.nproc} processes" if case.nproc > 1 else "")),
        ("nodes", f"{case.nnodes}" if case.nnodes > 1 else ""),
        ("launched by", shlex.join(result.environment.launch_command)),
        ("batch x sequence", f"{case.batch_size} x {case.seq_len}"),
        ("tokens per step (all ranks)", f"{m.tokens_per_step or case.tokens_per_step:,}"),
        ("precision", flags.precision),
        ("flags", ", ".join(flags.id_tokens()[1:]) or "none"),
        ("data", case.data),
        (
            "steps",
            f"{m.warmup_steps} warm-up (excluded) + {m.measured_steps} measured"
            + (
                f" (steps='auto': at most {case.max_steps} steps or {case.max_seconds:g} s)"
                if case.steps == STEPS_AUTO
                else ""
            ),
        ),
        ("timing", m.timing),
        ("started", result.started_at),
        ("pytest id", result.nodeid or ""),
        ("run", result.run_id or ""),
    ]
    return tuple((k, v) for k, v in items if v)


def _pytest_setting(outcomes: Outcomes, result: Result) -> tuple[tuple[str, str], ...]:
    outcome = outcomes.of(result)
    if outcome is None:
        return ()
    text = LABELS[outcome.outcome] + (f": {outcome.reason}" if outcome.reason else "")
    return (("pytest", text),)


def _details(
    results: Sequence[Result], several: bool, outcomes: Outcomes, trends: Mapping[str, str]
) -> tuple[CaseDetail, ...]:
    """Each case's detail: its settings, per-step chart, diagnostics and rerun command."""
    case_svgs = charts.case_charts(results)
    return tuple(
        CaseDetail(
            result=r,
            anchor=anchor(r),
            label=charts.label(r, several) + (f" (rerun {r.repeat})" if r.repeat else ""),
            chart_svg=case_svgs[index],
            rerun=(
                shlex.join(["pytest", r.nodeid, "--gpu-profile", profile_spec(r)])
                if r.nodeid
                else None
            ),
            settings=_settings(r) + _pytest_setting(outcomes, r),
            trend_svg=trends.get(anchor(r)),
            interval=interval_sentence(r),
            phases=phase_rows(r),
            readings=reading_rows(r),
            energy=energy_facts(r),
            telemetry_svg=charts.telemetry_chart(r, f"telemetry{index}"),
            ranks=rank_rows(r),
            resume=resume_steps(r),
        )
        for index, r in enumerate(results)
    )


def build_report(data: ReportData) -> Report:
    results = list(data.results)
    if not results:
        raise ValueError("a report needs at least one Result")
    cases = representatives(results)
    profiles = tuple(dict.fromkeys(r.profile.name for r in results))
    several = len(profiles) > 1
    starts = sorted(r.started_at for r in results if r.started_at)
    outcomes = Outcomes(data.outcomes)
    # a case whose test failed (a defect, a regression) is not a candidate
    verdicts = profile_verdicts([r for r in cases if not outcomes.red(r)], data.safety_margin)
    recommended = [r for v in verdicts for r in v.recommendations]
    chart_svgs = {
        title: chart
        for title, chart in (
            ("Throughput", charts.throughput_chart(cases, recommended)),
            ("Peak memory", charts.memory_chart(cases, data.safety_margin)),
            ("Loss", charts.loss_chart(cases, recommended)),
            ("Time per phase", charts.phase_chart(cases)),
        )
        if chart is not None
    }
    found = comparisons(data.verdicts, results, data.histories)
    frame = matrix_frame(results, outcomes)
    trends = {c.anchor: c.trend_svg for c in found if c.anchor and c.trend_svg}
    details = _details(results, several, outcomes, trends)
    projections = (
        projection_frame(cases, data.projection).to_dict("records")
        if data.projection.active
        else []
    )
    predictions = prediction_rows(cases)
    return Report(
        run_ids=tuple(dict.fromkeys(r.run_id for r in results if r.run_id)),
        profiles=profiles,
        started=(starts[0], starts[-1]) if starts else ("", ""),
        cases=len(cases),
        status_counts={
            s: n for s in dict.fromkeys(r.status for r in cases) if (n := _count(cases, s))
        },
        predicted=sum(1 for r in cases if r.predicted),
        verdicts=tuple(verdicts),
        go_no_go=tuple(go_no_go_rows(outcomes)),
        matrix=tuple(frame.to_dict("records")),
        matrix_columns=matrix_columns(frame),
        charts=chart_svgs,
        projection=data.projection,
        projections=tuple(projections),
        predictions=tuple(predictions),
        prediction_sources=tuple(sources(predictions)),
        advice=tuple(advise(cases)),
        comparisons=tuple(found),
        comparison_columns=columns(found),
        details=details,
        environments=tuple(environment_columns(results)),
        rerun=rerun_command(results, data.invocations),
        safety_margin=data.safety_margin,
        resume_checks=tuple(resume_rows(cases)),
    )


def _count(results: Sequence[Result], status: str) -> int:
    return sum(r.status == status for r in results)
