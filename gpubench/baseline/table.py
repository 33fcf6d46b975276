"""The gate's verdicts as a table: one frame, shown in the terminal, in Markdown, in a failure.

Regressions first. Each row is one metric (or the status) of one case: old ->
new, the change, the threshold as applied, the evidence (one-sided p-value, and
the prediction interval when the history decided) and the rule that decided.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from gpubench.baseline.compare import (
    DECISIONS,
    ELSEWHERE,
    NEW,
    REGRESSION,
    CaseVerdict,
    MetricVerdict,
)
from gpubench.baseline.gated import GATED_METRICS

RULES = {
    "runs": "vs the spread of {runs} baseline runs",
    "steps": "steps vs the last baseline run's (threshold x2: {runs} run(s) show no spread)",
    "threshold": "threshold only ({runs} run(s) show no spread)",
    "": "",
}
_UNITS = {m.name: m.unit for m in GATED_METRICS}


def _figure(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    if _UNITS.get(metric) == "bytes":
        return f"{value / 2**30:.3f} GiB"
    if _UNITS.get(metric) == "tok/s":
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _threshold(m: MetricVerdict) -> str:
    return "" if m.decision in (NEW, ELSEWHERE) else f"{100 * m.threshold:.0f}%"


def _evidence(m: MetricVerdict) -> str:
    parts = []
    if m.p_value is not None and m.rule in ("runs", "steps"):
        parts.append(f"p={m.p_value:.3g}")
    if m.interval is not None and m.rule == "runs":
        lo, hi = m.interval
        parts.append(f"[{_figure(m.metric, lo)} .. {_figure(m.metric, hi)}]")
    return " ".join(parts) or "-"


def _status_rule(v: CaseVerdict) -> str:
    if not v.baseline_runs:
        return "no baseline for this case yet"
    if v.elsewhere:
        return f"baseline from elsewhere ({v.elsewhere}): shown, not judged"
    return f"{v.comparable_runs} comparable baseline run(s)"


def verdict_rows(verdicts: Sequence[CaseVerdict]) -> list[dict[str, str]]:
    rows = []
    for v in verdicts:
        rows.append(
            {
                "case": v.case_id,
                "profile": v.profile,
                "metric": "status",
                "old": v.status_old or "-",
                "new": v.status_new,
                "change": "",
                "threshold": "",
                "evidence": "",
                "rule": _status_rule(v),
                "verdict": v.status_decision,
            }
        )
        if not v.baseline_runs:
            continue  # nothing to compare its figures with
        for m in v.metrics:
            change = m.change
            rows.append(
                {
                    "case": v.case_id,
                    "profile": v.profile,
                    "metric": m.metric,
                    "old": _figure(m.metric, m.old),
                    "new": _figure(m.metric, m.new),
                    "change": f"{100 * change:+.1f}%" if change is not None else "",
                    "threshold": _threshold(m),
                    "evidence": _evidence(m),
                    "rule": RULES[m.rule].format(runs=m.runs),
                    "verdict": m.decision,
                }
            )
    return rows


def verdict_frame(verdicts: Sequence[CaseVerdict]) -> pd.DataFrame:
    """One row per case and metric, the cases that regressed first."""
    ordered = sorted(verdicts, key=lambda v: (DECISIONS.index(v.decision), v.case_id, v.profile))
    return pd.DataFrame(verdict_rows(ordered))


def format_verdicts(verdicts: Sequence[CaseVerdict]) -> str:
    """The terminal table."""
    if not verdicts:
        return "no case was compared with a baseline"
    return str(verdict_frame(verdicts).to_string(index=False))


def describe_regression(verdict: CaseVerdict) -> str:
    """The failure message of a regressed case: what moved, by how much, and by which rule."""
    lines = [f"gpubench: {verdict.case_id} on {verdict.profile} regressed against its baseline"]
    if verdict.status_decision == REGRESSION:
        lines.append(f"  status: {verdict.status_old} -> {verdict.status_new}")
    for m in verdict.metrics:
        if m.decision != REGRESSION:
            continue
        change = f"{100 * m.change:+.1f}%" if m.change is not None else "?"
        lines.append(
            f"  {m.metric}: {_figure(m.metric, m.old)} -> {_figure(m.metric, m.new)} ({change}, "
            f"threshold {100 * m.threshold:.0f}%, {_evidence(m)}; "
            f"{RULES[m.rule].format(runs=m.runs)})"
        )
    return "\n".join(lines)


def markdown_summary(verdicts: Sequence[CaseVerdict], title: str = "gpubench gate") -> str:
    """The run's gate as Markdown (GitHub's step summary): counts, then the table."""
    counts = {d: sum(v.decision == d for v in verdicts) for d in DECISIONS}
    head = ", ".join(f"{n} {d}" for d, n in counts.items() if n)
    if not verdicts:
        return f"## {title}\n\nNo case was compared with a baseline.\n"
    table = markdown_table(verdict_frame(verdicts))
    return f"## {title}\n\n{head or 'nothing compared'}\n\n{table}\n"


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured pipe table (``|`` in a cell escaped)."""

    def row(cells: Sequence[object]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    lines = [row(frame.columns), row(["---"] * len(frame.columns))]
    lines += [row(values) for values in frame.itertuples(index=False)]
    return "\n".join(lines)
