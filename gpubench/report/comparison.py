"""The baseline comparison section: the gate's verdicts (``gpubench.baseline``), regressions
first, and each case's history as a small trend.

Nothing is judged here: verdicts come from the run's gate (``verdicts.jsonl``) or,
for ``gpubench report --baseline DIR``, from :func:`gpubench.baseline.offline.judge_runs`,
the comparison ``gpubench compare`` makes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gpubench.baseline.compare import DECISIONS, CaseVerdict
from gpubench.baseline.table import verdict_rows
from gpubench.contracts.result import Result
from gpubench.report import charts

Histories = Mapping[tuple[str, str], Sequence[Result]]  # (profile, case id) -> runs


@dataclass(frozen=True)
class CaseComparison:
    verdict: CaseVerdict
    rows: tuple[dict[str, str], ...]  # the gate's table rows of this case
    trend_svg: str | None


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
        found.append(CaseComparison(verdict, tuple(verdict_rows([verdict])), trend))
    return found
