"""A case's figures as test properties (pytest's ``user_properties``): ``--junitxml``
carries them, and the pytest-xdist controller reads them to count a case a worker ran
(:mod:`gpubench.xdist_hooks`). Values are JSON, so they cross xdist's channel."""

from __future__ import annotations

from typing import Any

from gpubench.baseline.compare import CaseVerdict
from gpubench.contracts.result import Result

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
        ]
    return properties
