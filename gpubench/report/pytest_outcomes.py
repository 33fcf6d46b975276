"""pytest's outcome of each gpubench test beside the Results, so the report and pytest
never disagree: a case whose test failed says so in its row and is not recommended, a
finding (an expected failure) says its reason, and each suite's go/no-go test is shown
with its answer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gpubench.contracts.result import Result
from gpubench.storage import TestOutcome

LABELS = {
    "passed": "passed",
    "failed": "FAILED",
    "error": "ERROR",
    "xfailed": "finding (xfail)",
    "skipped": "skipped",
}
RED = ("failed", "error")


class Outcomes:
    """The outcomes of a set of runs, looked up by the Result they belong to."""

    def __init__(self, outcomes: Sequence[TestOutcome]) -> None:
        self._by_test = {(o.run_id, o.nodeid): o for o in outcomes if o.case_id is not None}
        self.go_no_go = tuple(o for o in outcomes if o.case_id is None)

    def __bool__(self) -> bool:
        return bool(self._by_test or self.go_no_go)

    def of(self, result: Result) -> TestOutcome | None:
        """The outcome of the test that ran ``result`` (a batch probe's runs share theirs)."""
        return self._by_test.get((result.run_id, result.nodeid or ""))

    def red(self, result: Result) -> bool:
        outcome = self.of(result)
        return outcome is not None and outcome.outcome in RED


@dataclass(frozen=True)
class GoNoGo:
    """A suite's go/no-go test on one profile, as pytest ended it."""

    test: str
    profile: str
    answer: str  # GO, NO-GO, FAILED, ERROR, skipped
    reason: str


def go_no_go_rows(outcomes: Outcomes) -> list[GoNoGo]:
    answers = {"passed": "GO", "xfailed": "NO-GO", "failed": "FAILED", "error": "ERROR"}
    return [
        GoNoGo(
            test=o.nodeid.rsplit("::", 1)[-1].split("[", 1)[0],
            profile=o.profile or "",
            answer=answers.get(o.outcome, o.outcome),
            reason=o.reason,
        )
        for o in outcomes.go_no_go
    ]
