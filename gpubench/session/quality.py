"""Quality across flags: a case's held-out loss against its matrix's reference case.

A matrix declared with ``quality_reference=`` (:mod:`gpubench.declaration`) pairs each
case with the case that trains the same model on the same data and seed and differs only
in the reference's settings (fp32, no checkpointing, ...). Both evaluate the same held-out
batches after training (``Metrics.eval_loss``, :mod:`gpubench.worker.engines.evaluate`);
this module compares the two figures:

    relative_diff = (eval_loss - reference's) / reference's

``outside`` when it is above the threshold (default 0.02, the GPT-2 ladder plan's 2 %):
the flag costs quality, and the case's test fails naming both figures. A lower loss than
the reference's is ``within``, however much lower: the check guards against a flag that
costs quality, not one that gains it (a lower loss is also what a different but equally
good run of the same seed gives). ``not_compared`` says why no comparison was possible
(the reference, or this case, did not train to the end, was only estimated, evaluated no
held-out batches, or did not run in this session).

The check is the session's, made when the case's Result is appended, from this run's
Results only (never a baseline's): results.jsonl holds it under ``quality``, and the
report and the terminal summary read it back from there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from gpubench.contracts.result import QualityCheck, Result


@dataclass(frozen=True)
class QualityRule:
    """A case's comparison as the session runs it."""

    reference: str  # the reference case's id (same profile)
    threshold: float  # the largest relative rise that passes (0.02: 2 %)
    # whether the reference runs in this session (collected, not skipped, not deselected,
    # in this shard): when not, the case is not compared and nothing is waited for
    reference_runs: bool = True
    wait_s: float = 0.0  # how long to wait for another xdist worker's reference Result


def _trained(result: Result) -> str | None:
    """Why ``result`` has no held-out loss to compare; None when it has one."""
    if result.predicted:
        return "estimated, not trained (--gpubench-estimate-only)"
    if not result.ran:
        return f"did not train to the end ({result.status})"
    if result.metrics.eval_loss is None:
        return "evaluated no held-out batches (eval_batches=0, or a non-finite loss)"
    return None


def compare_quality(result: Result, reference: Result | None, rule: QualityRule) -> QualityCheck:
    """``result``'s held-out loss against ``reference``'s (None: no Result of it in this
    run) by ``rule``'s threshold."""
    m = result.metrics
    check = QualityCheck(
        verdict="not_compared",
        reference=rule.reference,
        eval_loss=m.eval_loss,
        perplexity=m.eval_perplexity,
        threshold=rule.threshold,
    )
    if reference is None:
        why = (
            "has no Result in this run"
            if rule.reference_runs
            else "did not run in this session (deselected, skipped or in another shard)"
        )
        return replace(check, note=f"the reference {rule.reference} {why}")
    check = replace(
        check,
        reference_eval_loss=reference.metrics.eval_loss,
        reference_perplexity=reference.metrics.eval_perplexity,
    )
    own, theirs = _trained(result), _trained(reference)
    if own is not None:
        return replace(check, note=f"this case {own}")
    if theirs is not None:
        return replace(check, note=f"the reference {rule.reference} {theirs}")
    loss, reference_loss = m.eval_loss, reference.metrics.eval_loss
    assert loss is not None and reference_loss is not None  # _trained checked both
    if reference_loss <= 0:  # a cross-entropy of 0: nothing to be relative to
        return replace(check, note=f"the reference's held-out loss is {reference_loss:g}")
    diff = (loss - reference_loss) / reference_loss
    if not math.isfinite(diff):
        return replace(check, note="the relative difference is not finite")
    return replace(
        check, verdict="outside" if diff > rule.threshold else "within", relative_diff=diff
    )


def quality_failure(check: QualityCheck | None) -> str | None:
    """The failure message of a case whose quality is outside its threshold, naming both
    figures; None otherwise."""
    if check is None or check.verdict != "outside":
        return None
    assert check.eval_loss is not None and check.reference_eval_loss is not None
    assert check.relative_diff is not None and check.threshold is not None
    return (
        f"quality: held-out loss {check.eval_loss:.4g} (perplexity "
        f"{_perplexity(check.perplexity)}) is {100 * check.relative_diff:.1f} % above the "
        f"reference {check.reference}'s {check.reference_eval_loss:.4g} (perplexity "
        f"{_perplexity(check.reference_perplexity)}); threshold {100 * check.threshold:g} %"
    )


def _perplexity(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
