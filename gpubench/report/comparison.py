"""The baseline comparison section: the gate's verdicts (``gpubench.baseline``) as one table
across cases, regressions first, and each case's history as a small trend (drawn in the
case's detail, linked from its rows).

Nothing is judged here: verdicts come from the run's gate (``verdicts.jsonl``) or,
for ``gpubench report --baseline DIR``, from :func:`gpubench.baseline.offline.judge_runs`,
the comparison ``gpubench compare`` makes. The rows are the gate's own
(:func:`gpubench.baseline.table.verdict_rows`); a column is shown when some row has a
value in it, so a figure the gate adds to its rows (an effective threshold per metric)
shows up, and one it leaves out leaves no empty column.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gpubench.baseline.compare import DECISIONS, CaseVerdict
from gpubench.baseline.table import verdict_rows
from gpubench.contracts.result import Result
from gpubench.report import charts
from gpubench.report.configurations import anchor

Histories = Mapping[tuple[str, str], Sequence[Result]]  # (profile, case id) -> runs

# The table's columns after the case (and profile): (row key, heading, numeric).
COLUMNS = (
    ("metric", "metric", False),
    ("old", "baseline", True),
    ("new", "this run", True),
    ("change", "change", True),
    ("threshold", "threshold", True),
    ("evidence", "evidence", False),
    ("rule", "rule", False),
    ("verdict", "verdict", False),
)


@dataclass(frozen=True)
class CaseComparison:
    verdict: CaseVerdict
    rows: tuple[dict[str, str], ...]  # the gate's table rows of this case
    trend_svg: str | None
    anchor: str | None  # the case's detail in the page, where the trend is drawn


def comparisons(
    verdicts: Sequence[CaseVerdict], results: Sequence[Result], histories: Histories
) -> list[CaseComparison]:
    """One per verdict, regressions first (the gate's own order)."""
    newest = {(r.profile.name, r.case.id): r for r in results if r.repeat == 0}
    ordered = sorted(verdicts, key=lambda v: (DECISIONS.index(v.decision), v.case_id, v.profile))
    found = []
    for index, verdict in enumerate(ordered):
        key = (verdict.profile, verdict.case_id)
        result = newest.get(key)
        history = histories.get(key, ())
        trend = (
            charts.trend_chart(history, result, f"trend{index}")
            if result is not None and history
            else None
        )
        found.append(
            CaseComparison(
                verdict,
                tuple(verdict_rows([verdict])),
                trend,
                anchor(result) if result is not None else None,
            )
        )
    return found


def columns(found: Sequence[CaseComparison]) -> tuple[tuple[str, str, bool], ...]:
    """The columns some row has a value in (in :data:`COLUMNS`' order)."""
    return tuple(
        column
        for column in COLUMNS
        if any(row.get(column[0], "") not in ("", None) for c in found for row in c.rows)
    )
