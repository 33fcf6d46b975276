"""What a gpubench test tells pytest, and what pytest tells back.

A case's figures as test properties (pytest's ``user_properties``): ``--junitxml``
carries them, and the pytest-xdist controller reads them to count a case a worker ran
(:mod:`gpubench.xdist_hooks`); values are JSON, so they cross xdist's channel. And
pytest's outcome of the test (:func:`test_outcome`), which the report shows beside the
case's status, so the two never disagree."""

from __future__ import annotations

from typing import Any

from gpubench.baseline.compare import CaseVerdict
from gpubench.contracts.case import Case
from gpubench.contracts.profiles import HardwareProfile
from gpubench.contracts.result import Result
from gpubench.storage import OUTCOME_REASON_CHARS, TestOutcome

STATUS = "gpubench_status"
SUMMARY = "gpubench_summary"
DURATION = "gpubench_duration_s"
CASES_TOTAL = "gpubench_cases_total"


def case_properties(
    result: Result, verdict: CaseVerdict | None, cases_total: int
) -> list[tuple[str, Any]]:
    """The Result's headline figures, the gate's verdict, and what the xdist controller's
    progress lines need (the one-line summary, the duration, the collected total)."""
    return [
        (STATUS, result.status),
        ("gpubench_tokens_per_s", result.tokens_per_s),
        ("gpubench_peak_memory_bytes", result.peak_memory_bytes),
        ("gpubench_run_id", result.run_id),
        (SUMMARY, result.describe()),
        (DURATION, result.duration_s),
        (CASES_TOTAL, cases_total),
        *verdict_properties(verdict),
    ]


def verdict_properties(verdict: CaseVerdict | None) -> list[tuple[str, Any]]:
    """The gate's figures, per metric: baseline, change and decision."""
    if verdict is None:
        return []
    properties: list[tuple[str, Any]] = [
        ("gpubench_verdict", verdict.decision),
        ("gpubench_status_baseline", verdict.status_old),
    ]
    for m in verdict.metrics:
        properties += [
            (f"gpubench_{m.metric}_baseline", m.old),
            (f"gpubench_{m.metric}_change", m.change),
            (f"gpubench_{m.metric}_verdict", m.decision),
            (f"gpubench_{m.metric}_threshold", m.threshold),  # as applied
            (f"gpubench_{m.metric}_threshold_rule", m.threshold_text),  # and how
        ]
    return properties


def test_outcome(
    report: Any, profile: HardwareProfile, case: Case | None, run_id: str | None = None
) -> TestOutcome | None:
    """The test's outcome from one phase's report (pytest's ``TestReport``, duck-typed):
    the call phase's, or a setup that did not pass (an error, a skip); None otherwise."""
    if report.when == "teardown" or (report.when == "setup" and report.passed):
        return None
    if hasattr(report, "wasxfail"):
        outcome, reason = ("xfailed", report.wasxfail) if report.skipped else ("passed", "")
    elif report.skipped:
        longrepr = report.longrepr
        outcome = "skipped"
        reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else ""
    elif report.failed:
        outcome = "failed" if report.when == "call" else "error"
        crash = getattr(getattr(report, "longrepr", None), "reprcrash", None)
        reason = crash.message if crash is not None else str(report.longrepr or "")
    else:
        outcome, reason = "passed", ""
    return TestOutcome(
        nodeid=report.nodeid,
        outcome=outcome,
        profile=profile.name,
        case_id=case.id if isinstance(case, Case) else None,
        reason=str(reason).removeprefix("reason: ")[:OUTCOME_REASON_CHARS],
        run_id=run_id,
    )
