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

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gpubench.contracts.case import Case
from gpubench.contracts.plausibility import (
    MFU_BOUND,
    MFU_FLOOR,
    implausible_reasons,
    result_mfu,
)
from gpubench.contracts.result import Result
from gpubench.report import figures
from gpubench.report.headroom import capacity_bytes, share_upper_bound
from gpubench.report.trust import MIN_MEASURED_STEPS, has_spread
from gpubench.worker.measure.divergence import SPIKE_FACTOR, SPIKE_WINDOW

HEADROOM_FRACTION = 0.5  # peak memory below this share of capacity: a larger batch fits
# a judgement: clipping nearly every step of a run's second half means grad_clip, not the
# learning rate, sets the step size once training is under way. Early steps are not judged:
# a freshly initialised model's norm is above 1 for its first hundreds of steps (gpt-mini on
# the learnable stream at 3e-4: 1.5-2.3 over 22 steps, every one clipped at 1.0)
CLIP_RATE_HIGH = 0.9
CLIP_ADVICE_MIN_STEPS = 100  # a run shorter than this is not advised on its clipping
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


def _cap(result: Result) -> str:
    """The cap steps="auto" stopped at, as the case set it: ``max_steps=200``."""
    stop, case = result.metrics.stop_reason, result.case
    if stop == "max_steps":
        return f"max_steps={case.max_steps}"
    if stop == "max_seconds":
        return f"max_seconds={case.max_seconds:g}"
    return stop or "a cap"


def precision_not_reached(results: Sequence[Result]) -> Advice | None:
    """steps="auto" stopped at a cap before the median tokens/s was known to its target:
    with its interval, or with too few measured steps for one. A case of fixed steps chose
    its count and is not judged (a record before schema v7 has no target either)."""
    examined = [r for r in results if r.ran and r.metrics.precision_reached is not None]
    findings = []
    for r in examined:
        m = r.metrics
        if m.precision_reached or m.precision_target is None:
            continue
        target = f"target ±{figures.percent(m.precision_target)} %"
        stopped = f"stopped at {_cap(r)} after {m.measured_steps} measured steps"
        if m.precision_achieved is None:  # too few steps for an interval
            text = f"no interval: {stopped}, too few for one; {target}"
        else:
            text = (
                f"median {figures.rate(r.tokens_per_s)} tok/s known to "
                f"±{figures.percent(m.precision_achieved)} % "
                f"({figures.rate_range(m.tokens_per_s_low, m.tokens_per_s_high)}), {target}; "
                + stopped
            )
        findings.append(Finding(r, text))
    if not findings:
        return None
    achieved = [a for f in findings if (a := f.result.metrics.precision_achieved) is not None]
    return Advice(
        "Precision target not reached: raise max_steps or max_seconds, or rerun on a quiet machine",
        "steps='auto' stopped at its step or time cap before the confidence interval of the "
        "median tokens/s narrowed to its target (or before it had the steps for an interval)",
        tuple(findings),
        tuple(examined),
        _percent_span("±", achieved, "% achieved"),
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


def late_clip_rate(result: Result) -> tuple[float, int] | None:
    """(share clipped, steps judged) over the second half of a run of at least
    :data:`CLIP_ADVICE_MIN_STEPS` steps with clipping; None otherwise."""
    norms, clip = result.series.grad_norm, result.case.grad_clip
    if clip is None or len(norms) < CLIP_ADVICE_MIN_STEPS:
        return None
    late = [n for n in norms[len(norms) // 2 :] if n is not None and math.isfinite(n)]
    return (sum(n > clip for n in late) / len(late), len(late)) if late else None


def gradients_unhealthy(results: Sequence[Result]) -> Advice | None:
    """Gradient-norm spikes (gpubench.worker.measure.divergence), or nearly every step of a
    long run's second half clipped."""
    examined = [r for r in results if r.ran and r.metrics.grad_spikes is not None]
    findings = []
    for r in examined:
        m, said = r.metrics, []
        if m.grad_spikes:
            said.append(f"{m.grad_spikes} spike(s) at step(s) {_steps(m.grad_spike_steps)}")
        late = late_clip_rate(r)
        if late is not None and late[0] > CLIP_RATE_HIGH:
            said.append(
                f"{figures.percent(late[0])} % of the last {late[1]} steps clipped at "
                f"{r.case.grad_clip:g}"
            )
        if said:
            findings.append(Finding(r, "; ".join(said)))
    if not findings:
        return None
    return Advice(
        "Gradient spikes or heavy clipping: lower the learning rate or lengthen its warm-up "
        "before trusting a long run",
        f"a gradient norm above {SPIKE_FACTOR:g}x the median of the {SPIKE_WINDOW} steps "
        f"before it, or more than {figures.percent(CLIP_RATE_HIGH, 0)} % of the second half's "
        f"steps clipped in a run of {CLIP_ADVICE_MIN_STEPS} steps or more",
        tuple(findings),
        tuple(examined),
    )


def _steps(steps: list[int], most: int = 8) -> str:
    shown = ", ".join(str(step) for step in steps[:most])
    return shown + (f" and {len(steps) - most} more" if len(steps) > most else "")


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


# -- why a case runs at the speed it does: phases and telemetry (issue 19) ----------------
# A loader that keeps pace costs next to nothing (the L4 seed's data phase: 0.1 ms of a
# 2,184 ms step); a tenth of the step spent waiting for a batch is time more workers hide.
INPUT_BOUND_DATA_SHARE = 0.10
# A GPU fed without pause reads 90-100 % (the warm-up probe's steady state: ~98 % median);
# below 70 % it idles for a third of the time, as the L4 seed's 6-39 % did.
UNDER_USED_GPU_UTIL = 70.0
# NVML's power and thermal clock-event reasons (the worker's names); a reason active in more
# than a tenth of the samples lowers the clock often enough to move the median step.
THROTTLE_REASONS = (
    "sw_power_cap",
    "hw_slowdown",
    "sw_thermal_slowdown",
    "hw_thermal_slowdown",
    "hw_power_brake_slowdown",
)
THROTTLE_SHARE = 0.10
# AdamW on the device is a few per cent of a step (the L4 seed: 0.6 ms of 2,184 ms); at
# 30 % the optimizer, usually DeepSpeedCPUAdam on the host behind a PCIe copy, is the step.
OPTIMIZER_SHARE = 0.30
# A busy GPU (utilisation at least 80 %) at an MFU under 25 % spends its time in slow or
# unfused kernels: tuned dense transformer training reaches 35-60 % (PaLM, Megatron-LM).
BUSY_GPU_UTIL = 80.0
KERNEL_BOUND_MFU = 0.25


def phase_share(result: Result, phase: str) -> float | None:
    """The phase's median seconds per step over the median step time; None unsplit."""
    stats, step = result.metrics.phases.get(phase), result.metrics.step_time_s
    if stats is None or step is None or step.median <= 0:
        return None
    return stats.median / step.median


def _ms(seconds: float | None) -> str:
    return figures.milliseconds(seconds)


def input_bound(results: Sequence[Result]) -> Advice | None:
    """The data phase a large share of the step, and on a GPU its utilisation low with it
    (a slow loader shows as both); on a CPU (no utilisation read) the share alone."""
    examined = [r for r in results if r.ran and has_spread(r) and phase_share(r, "data")]
    findings, shares = [], []
    for r in examined:
        share = phase_share(r, "data") or 0.0
        util = r.metrics.gpu_util
        if share < INPUT_BOUND_DATA_SHARE or (util and util.median >= UNDER_USED_GPU_UTIL):
            continue
        data, step = r.metrics.phases["data"], r.metrics.step_time_s
        text = (
            f"data {_ms(data.median)} ms of a {_ms(step.median if step else None)} ms step "
            f"({figures.percent(share)} %)"
        )
        if util:
            text += f"; GPU utilisation median {util.median:.0f} % (p90 {util.p90:.0f} %)"
        findings.append(Finding(r, text))
        shares.append(share)
    if not findings:
        return None
    return Advice(
        "Input-bound: the step waits for data; more loader workers (num_workers, "
        "persistent_workers), pinned memory (pin_memory=True, non_blocking copies) or a "
        "larger batch",
        f"the data phase at least {figures.percent(INPUT_BOUND_DATA_SHARE, 0)} % of the median "
        f"step, with GPU utilisation under {UNDER_USED_GPU_UTIL:.0f} % where it was read",
        tuple(findings),
        tuple(examined),
        _percent_span("data", shares, "% of the step"),
    )


def _telemetry_figures(result: Result) -> str:
    m = result.metrics
    parts = []
    if m.power_w:
        parts.append(f"power median {m.power_w.median:,.0f} W (max {m.power_w.max:,.0f} W)")
    if m.temperature_c:
        parts.append(
            f"temperature median {m.temperature_c.median:.0f} °C (max {m.temperature_c.max:.0f})"
        )
    if m.sm_clock_mhz:
        parts.append(
            f"SM clock median {m.sm_clock_mhz.median:,.0f} MHz (min {m.sm_clock_mhz.min:,.0f})"
        )
    return "; ".join(parts)


def clocks_throttled(results: Sequence[Result]) -> Advice | None:
    examined = [r for r in results if r.ran and r.metrics.throttle_reasons]
    findings, worst = [], []
    for r in examined:
        active = {
            name: share
            for name in THROTTLE_REASONS
            if (share := r.metrics.throttle_reasons.get(name, 0.0)) > THROTTLE_SHARE
        }
        if not active:
            continue
        reasons = ", ".join(
            f"{name} in {figures.percent(share, 0)} % of samples"
            for name, share in sorted(active.items(), key=lambda kv: -kv[1])
        )
        extra = _telemetry_figures(r)
        findings.append(Finding(r, reasons + (f"; {extra}" if extra else "")))
        worst.append(max(active.values()))
    if not findings:
        return None
    return Advice(
        "Clocks throttled by power or temperature: the figures are this card in this state; "
        "check its cooling and power limit (nvidia-smi -q -d PERFORMANCE,POWER,TEMPERATURE) "
        "before comparing",
        f"an NVML power or thermal clock-event reason ({', '.join(THROTTLE_REASONS)}) active "
        f"in more than {figures.percent(THROTTLE_SHARE, 0)} % of the telemetry samples",
        tuple(findings),
        tuple(examined),
        _percent_span("throttled in", worst, "% of samples"),
    )


def optimizer_bound(results: Sequence[Result]) -> Advice | None:
    examined = [r for r in results if r.ran and has_spread(r) and phase_share(r, "optimizer")]
    findings, shares, offloaded = [], [], False
    for r in examined:
        share = phase_share(r, "optimizer") or 0.0
        if share < OPTIMIZER_SHARE:
            continue
        flags = r.case.flags
        where = (
            " (optimizer states offloaded to the CPU)"
            if flags.offload_optimizer
            else " (parameters offloaded to the CPU)"
            if flags.offload_params
            else ""
        )
        offloaded = offloaded or bool(where)
        step = r.metrics.step_time_s
        findings.append(
            Finding(
                r,
                f"optimizer {_ms(r.metrics.phases['optimizer'].median)} ms of a "
                f"{_ms(step.median if step else None)} ms step ({figures.percent(share)} %)"
                + where,
            )
        )
        shares.append(share)
    if not findings:
        return None
    title = (
        "Offload-bound: the optimizer step on the CPU dominates; offload only what the card "
        "cannot hold (offload_optimizer=False where it fits, ZeRO-2 before offload), a host "
        "with more cores, or a larger batch per step"
        if offloaded
        else "Optimizer-bound: the optimizer step dominates; fused AdamW (fused_adamw=True) or "
        "a larger batch (or grad_accum) to spread it over more tokens"
    )
    return Advice(
        title,
        f"the optimizer phase at least {figures.percent(OPTIMIZER_SHARE, 0)} % of the median step",
        tuple(findings),
        tuple(examined),
        _percent_span("optimizer", shares, "% of the step"),
    )


def _kernel_switches(result: Result) -> str:
    flags = result.case.flags
    off = []
    if not flags.compile:
        off.append("compile=True")
    if flags.attention != "sdpa":
        off.append("attention='sdpa'")
    if not flags.fused_adamw and not flags.offload_optimizer:
        off.append("fused_adamw=True")
    return ", ".join(off)


def kernel_bound(results: Sequence[Result]) -> Advice | None:
    examined = [r for r in results if r.ran and r.metrics.gpu_util is not None and result_mfu(r)]
    findings, mfus = [], []
    for r in examined:
        mfu, util = result_mfu(r), r.metrics.gpu_util
        if mfu is None or util is None or mfu >= KERNEL_BOUND_MFU or util.median < BUSY_GPU_UTIL:
            continue
        switches = _kernel_switches(r)
        findings.append(
            Finding(
                r,
                f"MFU {figures.percent(mfu)} % with GPU utilisation median {util.median:.0f} %"
                + (f"; not yet tried here: {switches}" if switches else ""),
            )
        )
        mfus.append(mfu)
    if not findings:
        return None
    return Advice(
        "Kernel-bound: the GPU is busy but slow; torch.compile (compile=True), fused kernels "
        "(fused_adamw=True) and SDPA attention (attention='sdpa'), or bf16 on tensor cores",
        f"MFU under {figures.percent(KERNEL_BOUND_MFU, 0)} % with GPU utilisation at least "
        f"{BUSY_GPU_UTIL:.0f} % (median)",
        tuple(findings),
        tuple(examined),
        _percent_span("MFU", mfus),
    )


RULES: tuple[Callable[[Sequence[Result]], Advice | None], ...] = (
    implausible_measurement,
    loss_not_falling,
    gradients_unhealthy,
    precision_not_reached,
    warmup_not_steady,
    input_bound,
    clocks_throttled,
    optimizer_bound,
    kernel_bound,
    memory_headroom,
)


def advise(results: Sequence[Result]) -> list[Advice]:
    return [advice for rule in RULES if (advice := rule(results)) is not None]
