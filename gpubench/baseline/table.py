"""The gate's verdicts as a table: one frame, shown in the terminal, in Markdown, in a failure.

Regressions first. Each row is one metric (or the status) of one case: old ->
new, the change, the threshold as applied and how it came to be (``35 % ×2
(one-run history) = 70 %``), the evidence (one-sided p-value, and the prediction
interval when the history decided) and the rule that decided. A case's notes
(a busy machine, a cold run) follow its rows. The terminal shows one block per
case, no line wider than :data:`TERMINAL_WIDTH`.
"""

from __future__ import annotations

import shutil
import textwrap
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
from gpubench.baseline.gated import BUSY, COLD, GATED_METRICS
from gpubench.contracts.text import safe_text
from gpubench.contracts.units import GiB

TERMINAL_WIDTH = 120  # the widest the terminal table gets (narrower on a narrower terminal)

RULES = {
    "runs": "vs the spread of {runs} baseline runs",
    # the threshold's own text says it was widened, and why (too few runs for a spread)
    "steps": "steps vs the last baseline run's",
    "threshold": "threshold only ({runs} run(s): no spread)",
    "": "",
}
_UNITS = {m.name: m.unit for m in GATED_METRICS}


def _figure(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    if _UNITS.get(metric) == "bytes":
        return f"{value / GiB:.3f} GiB"
    if _UNITS.get(metric) == "tok/s":
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _threshold(m: MetricVerdict) -> str:
    return "" if m.decision in (NEW, ELSEWHERE) else m.threshold_text


def _rule(m: MetricVerdict) -> str:
    said = RULES[m.rule].format(runs=m.runs)
    if m.at_step is not None:
        said = f"{said}, at step {m.at_step}" if said else f"at step {m.at_step}"
    if m.decision in (BUSY, COLD):
        why = "the machine was busy" if m.decision == BUSY else "the run was cold"
        said = f"not judged: {why} in every run; {said}"
    return said


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
                    "rule": _rule(m),
                    "verdict": m.decision,
                }
            )
    return rows


def verdict_frame(verdicts: Sequence[CaseVerdict]) -> pd.DataFrame:
    """One row per case and metric, the cases that regressed first."""
    ordered = sorted(verdicts, key=lambda v: (DECISIONS.index(v.decision), v.case_id, v.profile))
    return pd.DataFrame(verdict_rows(ordered))


def format_verdicts(verdicts: Sequence[CaseVerdict], width: int | None = None) -> str:
    """The terminal table: a block per case (regressions first), its metrics in columns,
    the evidence and rule, then its notes, wrapped so that no line is wider than ``width``
    (default: the terminal's, at most :data:`TERMINAL_WIDTH`)."""
    if not verdicts:
        return "no case was compared with a baseline"
    if width is None:
        width = min(TERMINAL_WIDTH, max(80, shutil.get_terminal_size((TERMINAL_WIDTH, 24))[0]))
    ordered = sorted(verdicts, key=lambda v: (DECISIONS.index(v.decision), v.case_id, v.profile))
    blocks = [_case_block(v, width) for v in ordered]
    return "\n\n".join(blocks)


_COLUMNS = ("metric", "old", "new", "change", "threshold", "verdict")
_HEADINGS = {"old": "baseline", "new": "this run"}


def _free_text(row: dict[str, str]) -> str:
    """Evidence and rule; a figure left unjudged says why first."""
    parts = (row["evidence"], row["rule"])
    if row["verdict"] in (BUSY, COLD):
        parts = parts[::-1]
    return ", ".join(part for part in parts if part and part != "-")


def _case_block(verdict: CaseVerdict, width: int) -> str:
    head = f"{verdict.decision.upper()}: {verdict.case_id} on {verdict.profile}"
    if not verdict.baseline_runs:  # nothing to compare with: one line says it
        head += f": {_status_rule(verdict)}"
    lines = textwrap.wrap(head, width, subsequent_indent="    ", break_on_hyphens=False)
    if verdict.baseline_runs:
        lines += _metric_lines(verdict_rows([verdict]), width)
    for note in verdict.notes:
        lines += textwrap.wrap(
            f"note: {note}",
            width,
            initial_indent="  ",
            subsequent_indent="        ",
            break_on_hyphens=False,
        )
    return "\n".join(lines)


def _metric_lines(rows: list[dict[str, str]], width: int) -> list[str]:
    """The rows in columns, evidence and rule wrapped beside them; a paragraph per row where
    the columns leave too little room."""
    cells = [[_HEADINGS.get(c, c) for c in _COLUMNS]] + [[r[c] for c in _COLUMNS] for r in rows]
    texts = ["evidence, rule"] + [_free_text(r) for r in rows]
    sizes = [max(len(row[i]) for row in cells) for i in range(len(_COLUMNS))]
    start = 2 + sum(sizes) + 2 * len(sizes)  # where the free text begins
    lines: list[str] = []
    if start + 24 > width:
        for row, text in zip(cells[1:], texts[1:], strict=True):
            metric, old, new, change, threshold, decision = row
            said = f"{metric}: {old} -> {new}" + (f" ({change})" if change else "")
            said += (f", threshold {threshold}" if threshold else "") + f": {decision}"
            said += f"; {text}" if text else ""
            lines += textwrap.wrap(said, width, initial_indent="  ", subsequent_indent="      ")
        return lines
    for row, text in zip(cells, texts, strict=True):
        fixed = "  " + "  ".join(cell.ljust(size) for cell, size in zip(row, sizes, strict=True))
        wrapped = textwrap.wrap(text, width - start) or [""]
        lines.append((fixed + "  " + wrapped[0]).rstrip())
        lines += [" " * start + more for more in wrapped[1:]]
    return lines


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
            f"threshold {m.threshold_text}, {_evidence(m)}; {_rule(m)})"
        )
    lines += [f"  note: {note}" for note in verdict.notes]
    return safe_text("\n".join(lines))  # a case id is the user's text


def markdown_summary(verdicts: Sequence[CaseVerdict], title: str = "gpubench gate") -> str:
    """The run's gate as Markdown (GitHub's step summary): counts, then the table."""
    counts = {d: sum(v.decision == d for v in verdicts) for d in DECISIONS}
    head = ", ".join(f"{n} {d}" for d, n in counts.items() if n)
    if not verdicts:
        return f"## {title}\n\nNo case was compared with a baseline.\n"
    table = markdown_table(verdict_frame(verdicts))
    notes = [
        f"- {v.case_id} on {v.profile}: {note}".replace("|", "\\|")
        for v in verdicts
        for note in v.notes
    ]
    said = "\n\nNotes:\n\n" + "\n".join(notes) if notes else ""
    return f"## {title}\n\n{head or 'nothing compared'}\n\n{table}{said}\n"


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured pipe table (``|`` in a cell escaped)."""

    def row(cells: Sequence[object]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    lines = [row(frame.columns), row(["---"] * len(frame.columns))]
    lines += [row(values) for values in frame.itertuples(index=False)]
    return "\n".join(lines)
