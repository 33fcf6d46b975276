"""Advice: statements derived from the numbers, each with the rule and the figures that
fired it. No rule, no advice; a rule that finds nothing says nothing.

Each rule is a function ``(results) -> Advice | None`` listed in :data:`RULES`;
an Advice names every case the rule fired on with that case's figures.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gpubench.contracts.case import Case
from gpubench.contracts.plausibility import MFU_BOUND, MFU_FLOOR, implausible_reasons
from gpubench.contracts.result import NOISY_CV, Result
from gpubench.report import figures
from gpubench.report.headroom import capacity_bytes, share_upper_bound

HEADROOM_FRACTION = 0.5  # peak memory below this share of capacity: a larger batch fits


@dataclass(frozen=True)
class Finding:
    result: Result
    figures: str


@dataclass(frozen=True)
class Advice:
    title: str  # what to do
    rule: str  # the condition that fired it
    findings: tuple[Finding, ...]


def _batch_probe_key(result: Result) -> tuple[str, Case]:
    """What two results share when they differ only in batch size (and name, time limit)."""
    return result.profile.name, result.case.replace(batch_size=1, name=None, timeout_s=None)


def memory_headroom(results: Sequence[Result]) -> Advice | None:
    largest_fitting: dict[tuple[str, Case], Result] = {}  # per case but the batch size
    for r in results:
        if r.fits:
            key = _batch_probe_key(r)
            known = largest_fitting.get(key)
            if known is None or r.case.batch_size > known.case.batch_size:
                largest_fitting[key] = r
    findings = []
    for r in results:
        share = share_upper_bound(r)
        if not r.fits or share is None or share >= HEADROOM_FRACTION:
            continue
        source = r.metrics.peak_memory_source
        bound = (
            " (an upper bound: it includes the worker's imports)" if source == "host-rss" else ""
        )
        text = (
            f"peak {figures.gib(r.peak_memory_bytes)} GiB ({source}){bound} is "
            f"{figures.percent(share)} % of {figures.gib(capacity_bytes(r))} GiB"
        )
        largest = largest_fitting[_batch_probe_key(r)]
        if largest.case.batch_size > r.case.batch_size:
            text += (
                f"; batch {largest.case.batch_size} measured to fit ({largest.case.id}, peak "
                f"{figures.gib(largest.peak_memory_bytes)} GiB)"
            )
        else:
            text += f"; no batch above {r.case.batch_size} was measured: add one to the matrix"
        findings.append(Finding(r, text))
    if not findings:
        return None
    return Advice(
        "Memory is under-used: a larger batch fits",
        f"peak memory below {figures.percent(HEADROOM_FRACTION, 0)} % of the profile's capacity",
        tuple(findings),
    )


def noisy_measurement(results: Sequence[Result]) -> Advice | None:
    findings = [
        Finding(
            r,
            f"step-time CV {figures.percent(r.metrics.step_time_s.cv)} % over "
            f"{r.metrics.step_time_s.n} measured steps",
        )
        for r in results
        if r.metrics.step_time_s is not None and r.metrics.noisy
    ]
    if not findings:
        return None
    return Advice(
        "Noisy measurement: rerun on a quiet machine, or measure more steps",
        f"step-time coefficient of variation above {figures.percent(NOISY_CV, 0)} %",
        tuple(findings),
    )


def loss_not_falling(results: Sequence[Result]) -> Advice | None:
    findings = [
        Finding(r, f"loss {figures.loss_change(r.metrics.loss_start, r.metrics.loss_end)}")
        for r in results
        if r.ran
        and r.case.data == "learnable"
        and r.metrics.loss_start is not None
        and not r.loss_decreased
    ]
    if not findings:
        return None
    return Advice(
        "The loss did not fall: check the learning rate, the data and the model before "
        "trusting the speed",
        "on the learnable stream, the mean loss of the last steps is not below the first steps'",
        tuple(findings),
    )


def implausible_measurement(results: Sequence[Result]) -> Advice | None:
    """The Results :mod:`gpubench.contracts.plausibility` finds implausible: the reasons the worker
    recorded, or for a record older than that field, the same rules applied now."""
    findings = [
        Finding(r, " ".join(reasons))
        for r in results
        if (reasons := r.implausible or implausible_reasons(r))
    ]
    if not findings:
        return None
    return Advice(
        "Implausible measurement: the model, the token count or the pipeline is not what "
        "was declared",
        f"MFU (model FLOPs, PaLM's 6N + 12·L·d·T) above 100 % or {figures.percent(MFU_BOUND, 0)} "
        f"%, or under {figures.percent(MFU_FLOOR, 0)} % on a GPU; or a parameter count off "
        "its declared size",
        tuple(findings),
    )


def warmup_not_steady(results: Sequence[Result]) -> Advice | None:
    findings = [
        Finding(
            r,
            f"warm-up stopped at max_warmup_steps={r.case.max_warmup_steps} "
            f"({r.metrics.warmup_steps} steps) without a steady state",
        )
        for r in results
        if r.ran and r.case.warmup == "auto" and not r.metrics.steady_state_detected
    ]
    if not findings:
        return None
    return Advice(
        "Warm-up did not settle: raise max_warmup_steps, the measured steps may include it",
        "automatic warm-up reached its cap before 5 step times agreed within 10 %",
        tuple(findings),
    )


RULES: tuple[Callable[[Sequence[Result]], Advice | None], ...] = (
    implausible_measurement,
    loss_not_falling,
    noisy_measurement,
    warmup_not_steady,
    memory_headroom,
)


def advise(results: Sequence[Result]) -> list[Advice]:
    return [advice for rule in RULES if (advice := rule(results)) is not None]
