"""What a benchmark test makes of its Result: a defect fails it, a finding does not.

A suite answers a question ("which sizes fit this card?", "is it ready?"). A case
that does not fit, or fits only without the margin the plan asks for, *is* that
answer: :func:`xfail_unless_fits` shows it to pytest as an expected failure with
the reason (``XFAIL`` in the terminal, ``skipped`` with the reason in JUnit XML),
so the run stays green and the finding is still read. A defect is red:
:func:`assert_healthy` fails a case that crashed, hung or diverged, whose figures
are implausible (MFU, the parameter count), whose loss did not fall on the
learnable stream, or whose resume check failed. A regression against the baseline is
red too, even where the test called its result a finding (the plugin's gate decides
that after the test).

    @LADDER
    def test_ladder(gpubench_result, gpubench_profile):
        gpubench.assert_healthy(gpubench_result)
        gpubench.xfail_unless_fits(gpubench_result, gpubench_profile, margin_bytes=2 * GiB)

A prediction (``--gpubench-estimate-only``) is judged the same way on what it
predicts: its estimated peak against the capacity.
"""

from __future__ import annotations

from gpubench.contracts.profiles import HardwareProfile
from gpubench.contracts.result import Result, ResumeCheck
from gpubench.contracts.text import safe_text
from gpubench.contracts.units import format_bytes

DEFECTS = ("crashed", "timeout", "diverged")  # never an answer to a suite's question


def _describe(result: Result) -> str:
    """The Result's one-line account, its user text (an exception's message) made safe to
    print: pytest writes it to the terminal and the JUnit file as it is."""
    return safe_text(result.describe())


def assert_healthy(result: Result) -> None:
    """AssertionError naming the defect: a crash, a hang, a divergence, an implausible
    figure, a loss that did not fall on learnable data in a case that trained, or a failed
    resume check (``case.resume_check``: each difference named)."""
    # raised, not asserted: pytest's rewritten assert would print the Result's repr raw
    if result.status in DEFECTS or result.implausible:
        raise AssertionError(_describe(result))
    if result.ran and result.case.data == "learnable" and not result.metrics.loss_decreased:
        raise AssertionError(f"loss did not fall: {_describe(result)}")
    failed_resume = resume_failure(result.resume)
    if failed_resume:
        raise AssertionError(safe_text(f"{failed_resume}: {result.describe()}"))


def resume_failure(check: ResumeCheck | None) -> str | None:
    """``resume check failed: <each difference>`` for a failed resume check; None otherwise."""
    if check is None or check.verdict != "failed":
        return None
    return safe_text("resume check failed: " + "; ".join(check.differences or [check.note]))


def fit_finding(result: Result, profile: HardwareProfile, margin_bytes: int = 0) -> str | None:
    """Why ``result`` does not answer "it fits" (with ``margin_bytes`` left free), or None
    when it does. The peak is the measured one, or the estimate's for a prediction."""
    predicted = " (predicted)" if result.predicted else ""
    if result.status == "oom":
        return f"does not fit{predicted}: {_describe(result)}"
    if result.status == "over_capacity":
        return (
            f"fits only above the capacity{predicted} (PASS*: the peak exceeds "
            f"{format_bytes(profile.memory_bytes)}): {_describe(result)}"
        )
    if result.status != "ok" or margin_bytes <= 0:
        return None
    if result.predicted:
        peak = result.estimate.peak_bytes if result.estimate else None
    else:
        peak = result.peak_memory_bytes
    if peak is None:
        return None
    headroom = profile.memory_bytes - peak
    if headroom >= margin_bytes:
        return None
    return (
        f"fits{predicted} with {format_bytes(max(headroom, 0))} free of "
        f"{format_bytes(profile.memory_bytes)}, under the {format_bytes(margin_bytes)} margin "
        f"asked for: {_describe(result)}"
    )


def xfail_unless_fits(result: Result, profile: HardwareProfile, margin_bytes: int = 0) -> None:
    """Mark the test an expected failure (a finding) when the case does not fit, fits only
    above the capacity, or leaves less than ``margin_bytes`` free; return otherwise."""
    reason = fit_finding(result, profile, margin_bytes)
    if reason is not None:
        import pytest

        pytest.xfail(reason)
