"""Advice: statements derived from the numbers, each with the rule and the figures that
fired it. No rule, no advice; a rule that finds nothing says nothing.

Each rule is a function ``(results) -> Advice | None`` listed in :data:`RULES`;
an Advice names every case the rule fired on with that case's figures, and the cases
it examined. A rule that fires on more than :data:`MAX_LISTED` cases reads as one line
(how many of the cases examined, the range of its figure, the exceptions by name) with
the per-case evidence below it, folded. A rule never judges a statistic from fewer
measured steps than :data:`gpubench.report.trust.MIN_MEASURED_STEPS`: it says how many
it left out instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gpubench.contracts.case import Case
from gpubench.contracts.plausibility import MFU_BOUND, MFU_FLOOR, implausible_reasons
from gpubench.contracts.result import NOISY_CV, Result
from gpubench.report import figures
from gpubench.report.headroom import capacity_bytes, share_upper_bound
from gpubench.report.trust import MIN_MEASURED_STEPS, has_spread

HEADROOM_FRACTION = 0.5  # peak memory below this share of capacity: a larger batch fits
MAX_LISTED = 5  # findings listed one per line; more read as one line, the list folded


@dataclass(frozen=True)
class Finding:
    result: Result
    figures: str


@dataclass(frozen=True)
class Advice:
    title: str  # what to do
    rule: str  # the condition that fired it
    findings: tuple[Finding, ...]
    examined: tuple[Result, ...] = ()  # the cases the rule looked at (the findings' among them)
    span: str = ""  # the findings' deciding figure, lowest to highest: "CV 5.7-7.3 %"
    unjudged: str = ""  # the cases the rule could not judge, and why

    @property
    def widespread(self) -> bool:
        """Fired on too many cases to list them one per line."""
        return len(self.findings) > MAX_LISTED

    @property
    def exceptions(self) -> tuple[Result, ...]:
        """The cases examined that the rule did not fire on."""
        fired = {id(f.result) for f in self.findings}
        return tuple(r for r in self.examined if id(r) not in fired)

    @property
    def headline(self) -> str:
        """One line: on how many of the cases examined it fired, and the span of its figure."""
        text = f"{len(self.findings)} of {len(self.examined)} cases examined"
        return text + (f": {self.span}" if self.span else "")


def _percent_span(what: str, fractions: list[float], unit: str = "%") -> str:
    """``CV 5.7-7.3 %``: the lowest and highest of ``fractions``, as per cent."""
    if not fractions:
        return ""
    low, high = figures.percent(min(fractions)), figures.percent(max(fractions))
    return f"{what} {low if low == high else f'{low}-{high}'} {unit}"


def _too_few(results: Sequence[Result]) -> str:
    """How many of ``results`` the rule left out for too few measured steps."""
    left = sum(1 for r in results if not has_spread(r))
    if not left:
        return ""
    return f"{left} case(s) with fewer than {MIN_MEASURED_STEPS} measured steps not judged"


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
    examined = [r for r in results if r.fits and share_upper_bound(r) is not None]
    shares = []
    for r in examined:
        share = share_upper_bound(r)
        if share is None or share >= HEADROOM_FRACTION:
            continue
        shares.append(share)
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
        tuple(examined),
        _percent_span("peak", shares, "% of capacity"),
    )


def noisy_measurement(results: Sequence[Result]) -> Advice | None:
    examined = [r for r in results if has_spread(r)]
    noisy = [r for r in examined if r.metrics.noisy and r.metrics.step_time_s is not None]
    findings = [
        Finding(
            r,
            f"step-time CV {figures.percent(r.metrics.step_time_s.cv)} % over "
            f"{r.metrics.step_time_s.n} measured steps",
        )
        for r in noisy
        if r.metrics.step_time_s is not None
    ]
    if not findings:
        return None
    return Advice(
        "Noisy measurement: rerun on a quiet machine, or measure more steps",
        f"step-time coefficient of variation above {figures.percent(NOISY_CV, 0)} %, over at "
        f"least {MIN_MEASURED_STEPS} measured steps",
        tuple(findings),
        tuple(examined),
        _percent_span("CV", [r.metrics.step_time_s.cv for r in noisy if r.metrics.step_time_s]),
        _too_few([r for r in results if r.metrics.step_time_s is not None]),
    )


def loss_not_falling(results: Sequence[Result]) -> Advice | None:
    learnable = [
        r
        for r in results
        if r.ran and r.case.data == "learnable" and r.metrics.loss_start is not None
    ]
    examined = [r for r in learnable if has_spread(r)]
    findings = [
        Finding(r, f"loss {figures.loss_change(r.metrics.loss_start, r.metrics.loss_end)}")
        for r in examined
        if not r.loss_decreased
    ]
    if not findings:
        return None
    return Advice(
        "The loss did not fall: check the learning rate, the data and the model before "
        "trusting the speed",
        "on the learnable stream, the mean loss of the last steps is not below the first "
        f"steps', over at least {MIN_MEASURED_STEPS} measured steps",
        tuple(findings),
        tuple(examined),
        "",
        _too_few(learnable),
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
    fired = {id(f.result) for f in findings}
    examined = [r for r in results if r.ran or id(r) in fired]
    return Advice(
        "Implausible measurement: the model, the token count or the pipeline is not what "
        "was declared",
        f"MFU (model FLOPs, PaLM's 6N + 12·L·d·T) above 100 % or {figures.percent(MFU_BOUND, 0)} "
        f"%, or under {figures.percent(MFU_FLOOR, 0)} % on a GPU; or a parameter count off "
        "its declared size",
        tuple(findings),
        tuple(examined),
    )


def warmup_not_steady(results: Sequence[Result]) -> Advice | None:
    examined = [r for r in results if r.ran and r.case.warmup == "auto"]
    findings = [
        Finding(
            r,
            f"warm-up stopped at max_warmup_steps={r.case.max_warmup_steps} "
            f"({r.metrics.warmup_steps} steps) without a steady state",
        )
        for r in examined
        if not r.metrics.steady_state_detected
    ]
    if not findings:
        return None
    return Advice(
        "Warm-up did not settle: raise max_warmup_steps, the measured steps may include it",
        "automatic warm-up reached its cap before 5 step times agreed within 10 %",
        tuple(findings),
        tuple(examined),
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
