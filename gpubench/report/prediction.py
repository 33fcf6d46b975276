"""The report's predicted throughput: each case's predicted tokens/s on its profile (the
roofline bound and the expected range, :mod:`gpubench.estimate.throughput`), marked
predicted, and beside it the measured tokens/s with the prediction's error where the case
also ran. Predictions stay in this section and the projections; no measured column, chart
or ranking reads them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gpubench.contracts.result import Result
from gpubench.estimate.throughput import predicted_middle


@dataclass(frozen=True)
class PredictionRow:
    result: Result
    bound: float | None  # tokens/s, all ranks
    low: float | None
    high: float | None
    measured: float | None  # the measured median tokens/s; None for an estimate-only case
    error_pct: float | None  # 100 x (the range's middle - measured) / measured
    inside: bool | None  # whether the measured median fell inside the range
    method: str
    source: str


def prediction_rows(results: Sequence[Result]) -> list[PredictionRow]:
    """A row per Result whose estimate predicted a tokens/s bound or range."""
    rows = []
    for r in results:
        e = r.estimate
        if e is None or (e.tokens_per_s_bound is None and e.tokens_per_s_low is None):
            continue
        measured = r.tokens_per_s if r.ran else None
        error = e.tokens_per_s_error_pct
        if error is None and measured and predicted_middle(e) is not None:
            error = 100.0 * ((predicted_middle(e) or 0.0) - measured) / measured
        inside = None
        if measured and e.tokens_per_s_low is not None and e.tokens_per_s_high is not None:
            inside = e.tokens_per_s_low <= measured <= e.tokens_per_s_high
        rows.append(
            PredictionRow(
                result=r,
                bound=e.tokens_per_s_bound,
                low=e.tokens_per_s_low,
                high=e.tokens_per_s_high,
                measured=measured,
                error_pct=error,
                inside=inside,
                method=e.throughput_method or "",
                source=e.throughput_source or "",
            )
        )
    return rows


def sources(rows: Sequence[PredictionRow]) -> list[str]:
    """Each distinct part of the methods (their ``;``-separated clauses) and each source,
    once, for the section's footnotes."""
    parts = [part for row in rows for part in row.method.split("; ") if part]
    return list(dict.fromkeys([*parts, *(row.source for row in rows if row.source)]))
