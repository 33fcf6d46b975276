"""The resume check in the report: a row per case that asked for one (verdict, the save and
load seconds, the checkpoint's size, the largest loss difference, what differed), and in
each case's detail the run's and the resumed worker's losses step by step.

The projections' checkpoint overhead stays the user's (``checkpoint_interval_steps`` and
``checkpoint_save_s`` go together): a save measured here is one save of this case's
model on this machine, shown beside it (the section says so) for the user to carry over,
not put in its place: a real run's checkpoint goes to its own storage, at its own size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gpubench.contracts.result import Result, ResumeCheck
from gpubench.contracts.units import format_bytes
from gpubench.report import figures
from gpubench.report.configurations import anchor

VERDICTS = {"passed": "passed", "failed": "FAILED", "not_checked": "not checked"}


@dataclass(frozen=True)
class ResumeRow:
    """One case's resume check, its figures written."""

    case: str
    profile: str
    anchor: str
    verdict: str
    save_step: str
    comparison: str  # "bitwise", or "relative, within 1e-02"
    save_s: str
    load_s: str
    checkpoint: str  # its size on disk and format
    max_diff: str  # largest relative loss difference, %
    said: str  # what differed, or why it was not checked


@dataclass(frozen=True)
class ResumeStep:
    step: int
    run_loss: str
    resumed_loss: str
    diff: str  # relative, %


def _comparison(check: ResumeCheck) -> str:
    if check.comparison == "relative" and check.tolerance is not None:
        return f"relative, within {check.tolerance:.0e}"
    return check.comparison or figures.MISSING


def resume_row(result: Result) -> ResumeRow | None:
    check = result.resume
    if check is None:
        return None
    size = check.checkpoint_bytes
    return ResumeRow(
        case=result.case.id,
        profile=result.profile.name,
        anchor=anchor(result),
        verdict=VERDICTS.get(check.verdict, check.verdict),
        save_step=str(check.save_step) if check.save_step is not None else figures.MISSING,
        comparison=_comparison(check),
        save_s=figures.seconds(check.save_s, 2),
        load_s=figures.seconds(check.load_s, 2),
        checkpoint=(
            f"{format_bytes(size)} ({check.checkpoint_format})"
            if size is not None
            else figures.MISSING
        ),
        max_diff=figures.number(
            None if check.max_relative_diff is None else 100 * check.max_relative_diff, 2
        ),
        said="; ".join(check.differences) or check.note,
    )


def resume_rows(results: Sequence[Result]) -> list[ResumeRow]:
    return [row for r in results if (row := resume_row(r)) is not None]


def resume_steps(result: Result) -> tuple[ResumeStep, ...]:
    """The run's and the resumed worker's loss at each step after the save."""
    check = result.resume
    if check is None or check.save_step is None:
        return ()
    rows = []
    for i, run in enumerate(check.reference_loss):
        resumed = check.resumed_loss[i] if i < len(check.resumed_loss) else None
        diff = None if resumed is None or not run else abs(resumed - run) / abs(run)
        rows.append(
            ResumeStep(
                step=check.save_step + i + 1,
                run_loss=f"{run:.6f}",
                resumed_loss=figures.MISSING if resumed is None else f"{resumed:.6f}",
                diff=figures.number(None if diff is None else 100 * diff, 2),
            )
        )
    return tuple(rows)
