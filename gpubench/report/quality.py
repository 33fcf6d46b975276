"""The quality column: each case's held-out loss and its comparison with its reference.

From the Results alone (``Result.quality``, made by :mod:`gpubench.session.quality` when
the case's Result was appended): a compared case reads ``+38.2 % vs gpt-tiny-fp32:
outside 2 %``; a case other cases were compared with reads ``reference``; a case that
could not be compared says why. The configuration matrix shows the columns only where a
row has a held-out loss or a check (a record before schema v9 renders as before); the
terminal summary has a short form of the same cell (:func:`short_label`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gpubench.contracts.result import Result
from gpubench.report import figures

# the matrix's quality columns: (row key, heading, numeric)
COLUMNS = (
    ("eval_loss", "held-out loss", True),
    ("eval_perplexity", "perplexity", True),
    ("quality_diff", "vs reference", True),
)
KEYS = frozenset(key for key, _, _ in COLUMNS)
REFERENCE = "reference"


def reference_ids(results: Sequence[Result]) -> set[tuple[str, str]]:
    """(profile, case id) of every case some other case was compared with."""
    return {
        (r.profile.name, r.quality.reference)
        for r in results
        if r.quality is not None and r.quality.reference
    }


def quality_fields(result: Result, references: set[tuple[str, str]]) -> dict[str, Any]:
    """The matrix row's quality figures: raw values, written by :func:`quality_cell`."""
    check = result.quality
    is_reference = (result.profile.name, result.case.id) in references
    return {
        "eval_loss": result.metrics.eval_loss,
        "eval_perplexity": result.metrics.eval_perplexity,
        "quality_diff": check.relative_diff if check else None,
        "quality_verdict": check.verdict if check else (REFERENCE if is_reference else None),
        "quality_reference": check.reference if check else "",
        "quality_threshold": check.threshold if check else None,
        "quality_note": check.note if check else "",
    }


def quality_cell(row: dict[str, Any], key: str) -> str:
    """A quality cell's text, as both the HTML and the Markdown write it."""
    if key == "eval_loss":
        return figures.loss(row[key])
    if key == "eval_perplexity":
        return figures.number(row[key], 4)
    verdict = row["quality_verdict"]
    if verdict is None:
        return figures.MISSING
    if verdict == REFERENCE:
        return REFERENCE
    if verdict == "not_compared":
        return f"not compared: {row['quality_note']}"
    threshold = figures.percent(row["quality_threshold"], 0 if _whole(row) else 1)
    diff, reference = _signed_percent(row["quality_diff"]), row["quality_reference"]
    return f"{diff} % vs {reference}: {verdict} {threshold} %"


def short_label(result: Result, references: set[tuple[str, str]]) -> str:
    """The terminal summary's cell: ``+38.2% out``, ``-0.1% in``, ``ref``, ``n/c``."""
    check = result.quality
    if check is None:
        in_refs = (result.profile.name, result.case.id) in references
        return "ref" if in_refs else figures.MISSING
    if check.verdict == "not_compared" or check.relative_diff is None:
        return "n/c"
    return (
        f"{_signed_percent(check.relative_diff)}% {'out' if check.verdict == 'outside' else 'in'}"
    )


def _signed_percent(fraction: float | None) -> str:
    return figures.MISSING if fraction is None else f"{100 * fraction:+.1f}"


def _whole(row: dict[str, Any]) -> bool:
    threshold = row["quality_threshold"]
    return threshold is not None and float(100 * threshold).is_integer()
