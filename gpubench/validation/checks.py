"""The validation kit's checks: each one a pass, a fail or a skip, with its figure.

A check reads the Results of the plan's cases (by case name) and says what it
found in ``figure`` (the number that decided) and ``detail`` (why). A check
whose case is missing fails: the kit ran it, so a missing Result is a defect
of the kit or of gpubench. Skips name their reason; nothing passes by default.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from gpubench.contracts.flops import FORMULA, case_flops_per_token, mfu, peak_flops
from gpubench.contracts.profiles import profile_name_for_device
from gpubench.contracts.result import Result
from gpubench.contracts.units import format_bytes
from gpubench.validation import plan as P

PASS, FAIL, SKIP = "pass", "fail", "skip"
ESTIMATE_TOLERANCE = 0.10  # |estimated - measured| / measured of the peak (docs/estimate.md)


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # pass | fail | skip
    detail: str  # what was found, or why it was skipped
    figure: Any = None  # the number (or numbers) that decided

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Results = Mapping[str, Result]  # case name -> its Result


def _missing(name: str, case: str) -> Check:
    return Check(name, FAIL, f"no Result for case {case!r}: the kit ran it and got no answer")


def _trained(result: Result) -> str | None:
    """Why ``result`` did not train healthily, or None."""
    if result.status != "ok":
        return f"status {result.status}: {result.describe()}"
    m = result.metrics
    if not m.loss_decreased:
        return f"loss did not fall ({m.loss_start} -> {m.loss_end})"
    return None


def trains(name: str, case: str, what: str) -> Callable[[Results], Check]:
    """``what`` trains: ok, loss falling; the figure is the loss start -> end."""

    def check(results: Results) -> Check:
        result = results.get(case)
        if result is None:
            return _missing(name, case)
        m = result.metrics
        figure = {"loss_start": m.loss_start, "loss_end": m.loss_end}
        if m.tokens_per_s is not None:
            figure["tokens_per_s"] = m.tokens_per_s.median
        problem = _trained(result)
        if problem:
            return Check(name, FAIL, f"{what}: {problem}", figure)
        return Check(
            name, PASS, f"{what} trains, loss {m.loss_start:.3f} -> {m.loss_end:.3f}", figure
        )

    return check


def _cuda_results(results: Results) -> list[Result]:
    return [r for r in results.values() if r.profile.kind == "cuda" and r.ran]


def timing(results: Results) -> Check:
    """Step times come from CUDA events on a GPU."""
    name = "cuda-event-timing"
    cuda = _cuda_results(results)
    if not cuda:
        used = sorted({r.metrics.timing for r in results.values() if r.ran})
        return Check(name, SKIP, "no case ran on CUDA (cpu profile)", {"timing": used})
    wrong = {r.case.id: r.metrics.timing for r in cuda if r.metrics.timing != "cuda-events"}
    if wrong:
        return Check(name, FAIL, f"not timed with CUDA events: {wrong}", wrong)
    return Check(name, PASS, f"{len(cuda)} CUDA cases timed with CUDA events", len(cuda))


def memory_figures(results: Results) -> Check:
    """torch allocated <= reserved <= NVML per-process used, all non-null, on every CUDA case."""
    name = "memory-figures"
    cuda = _cuda_results(results)
    if not cuda:
        rss = {r.case.id: r.metrics.peak_rss_bytes for r in results.values() if r.ran}
        if not rss or not all(rss.values()):
            return Check(name, FAIL, f"host RSS missing on a case that ran: {rss}", rss)
        return Check(name, SKIP, "no case ran on CUDA; host RSS measured on every case", rss)
    figures, wrong = {}, []
    for r in cuda:
        m = r.metrics
        allocated, reserved, nvml = (
            m.peak_allocated_bytes,
            m.peak_reserved_bytes,
            m.nvml_peak_used_bytes,
        )
        figures[r.case.id] = {"allocated": allocated, "reserved": reserved, "nvml": nvml}
        if not (allocated and reserved and nvml):
            wrong.append(f"{r.case.id}: a figure is missing {figures[r.case.id]}")
        elif not allocated <= reserved <= nvml:
            wrong.append(
                f"{r.case.id}: allocated {format_bytes(allocated)}, reserved "
                f"{format_bytes(reserved)}, NVML {format_bytes(nvml)} are out of order"
            )
    if wrong:
        return Check(name, FAIL, "; ".join(wrong), figures)
    return Check(
        name, PASS, f"allocated <= reserved <= NVML on all {len(cuda)} CUDA cases", figures
    )


def capacity_emulation(results: Results) -> Check:
    """On the smaller emulated profile, the too-big case ends oom and the small one fits."""
    name = "capacity-emulation"
    fits, big = results.get(P.FITS), results.get(P.TOO_BIG)
    if fits is None or big is None:
        return _missing(name, P.FITS if fits is None else P.TOO_BIG)
    figure = {
        "profile": big.profile.name,
        "capacity": big.profile.memory_bytes,
        P.FITS: {"status": fits.status, "peak": fits.peak_memory_bytes},
        P.TOO_BIG: {"status": big.status},
    }
    wrong = []
    if fits.status != "ok":
        wrong.append(f"{P.FITS} ended {fits.status}, expected ok ({fits.describe()})")
    if big.status != "oom":
        wrong.append(f"{P.TOO_BIG} ended {big.status}, expected oom ({big.describe()})")
    if fits.profile.kind == "cuda" and not fits.metrics.capacity_emulated:
        wrong.append(f"{P.FITS} did not record capacity_emulated")
    if wrong:
        return Check(name, FAIL, "; ".join(wrong), figure)
    how = (
        "set_per_process_memory_fraction"
        if fits.profile.kind == "cuda"
        else "RLIMIT_DATA (the CPU stand-in)"
    )
    return Check(
        name,
        PASS,
        f"{big.profile.name} ({format_bytes(big.profile.memory_bytes)}) by {how}: "
        f"{P.TOO_BIG} oom, {P.FITS} ok at {format_bytes(fits.peak_memory_bytes or 0)}",
        figure,
    )


def profile_auto(results: Results, device_name: str | None) -> Check:
    """``--gpu-profile auto`` resolved the card NVML names to its built-in profile."""
    name = "gpu-profile-auto"
    main = [r for n, r in results.items() if n in (P.BF16, P.REFERENCE)]
    if not main:
        return _missing(name, P.BF16)
    resolved = main[0].profile.name
    if device_name is None:
        if resolved != "cpu":
            return Check(name, FAIL, f"no GPU, yet auto resolved to {resolved!r}", resolved)
        return Check(name, SKIP, "no GPU: auto resolved to the cpu profile", resolved)
    expected = profile_name_for_device(device_name)
    if expected is None:
        return Check(
            name, FAIL, f"{device_name!r} has no built-in profile; auto made {resolved!r}", resolved
        )
    if resolved != expected:
        return Check(
            name, FAIL, f"{device_name!r} resolved to {resolved!r}, expected {expected!r}", resolved
        )
    return Check(name, PASS, f"{device_name!r} -> {resolved!r}", resolved)


def reference_mfu(results: Results) -> Check:
    """The reference GPT-2 small run's MFU against the target (plan.MFU_TARGET)."""
    name = "reference-mfu"
    result = results.get(P.REFERENCE)
    if result is None:
        return _missing(name, P.REFERENCE)
    problem = _trained(result)
    if problem or result.metrics.tokens_per_s is None:
        return Check(name, FAIL, f"the reference case did not train: {problem}")
    tokens_per_s = result.metrics.tokens_per_s.median
    per_token = case_flops_per_token(result.case)
    peak = peak_flops(result.profile, result.case.flags.precision)
    figure: dict[str, Any] = {
        "tokens_per_s": tokens_per_s,
        "flops_per_token": per_token,
        "formula": FORMULA,
        "peak_flops": peak,
        "profile": result.profile.name,
        "target": P.MFU_TARGET,
    }
    if per_token is None or peak is None:
        why = "no FLOPs count for this model" if per_token is None else "no peak FLOP/s"
        return Check(name, SKIP, f"{why} on profile {result.profile.name!r}: MFU undefined", figure)
    value = mfu(tokens_per_s, per_token, peak)
    figure["mfu"] = value
    detail = (
        f"{tokens_per_s:,.0f} tokens/s x {per_token / 1e6:,.0f} MFLOP/token = "
        f"{tokens_per_s * per_token / 1e12:,.0f} TFLOP/s of {peak / 1e12:,.0f} "
        f"({result.profile.name}): MFU {value:.1%}, target {P.MFU_TARGET:.0%}"
    )
    return Check(name, PASS if value >= P.MFU_TARGET else FAIL, detail, figure)


def estimate_vs_measured(results: Results, tolerance: float = ESTIMATE_TOLERANCE) -> Check:
    """The memory estimate against the measured peak it is comparable to (on a GPU, the
    caching allocator's peak reserved memory; :mod:`gpubench.estimate.measured`), for
    every case that trained to the end; the target is ±10 % per case."""
    name = "estimate-vs-measured"
    errors = {
        n: r.estimate.error_pct / 100
        for n, r in results.items()
        if r.ran and r.estimate is not None and r.estimate.error_pct is not None
    }
    if not errors:
        return Check(name, SKIP, "no case that trained carries an estimate compared with a peak")
    worst = max(errors, key=lambda n: abs(errors[n]))
    source = results[worst].estimate.measured_source  # type: ignore[union-attr]
    detail = (
        f"{len(errors)} cases, worst {worst}: {errors[worst]:+.1%} against {source} "
        f"(tolerance ±{tolerance:.0%})"
    )
    ok = abs(errors[worst]) <= tolerance
    return Check(name, PASS if ok else FAIL, detail, errors)


def estimate_verdicts(results: Results) -> Check:
    """The estimator's fits/oom verdict against what the worker did, for every case that
    ended ok, over_capacity or oom (the emulated too-big case among them)."""
    name = "estimate-verdicts"
    judged = {
        n: (r.estimate.status, r.status)
        for n, r in results.items()
        if r.estimate is not None and r.status in ("ok", "over_capacity", "oom")
    }
    if not judged:
        return Check(name, SKIP, "no case carries an estimate")
    # over_capacity: too close to call (gpubench.estimate.fit): any ending agrees
    wrong = {n: (e, m) for n, (e, m) in judged.items() if e != m and e != "over_capacity"}
    figure = {n: {"estimated": e, "measured": m} for n, (e, m) in judged.items()}
    if wrong:
        detail = "; ".join(f"{n}: estimated {e}, ended {m}" for n, (e, m) in wrong.items())
        return Check(name, FAIL, f"{len(wrong)} of {len(judged)} disagree: {detail}", figure)
    return Check(name, PASS, f"all {len(judged)} verdicts agree", figure)


# (check, case, what) of the checks that a flag trains: ok and loss falling
TRAINING = (
    ("bf16", P.BF16, "bf16 autocast"),
    ("fp16-gradscaler", P.FP16, "fp16 autocast with GradScaler"),
    ("tf32", P.TF32, "fp32 with TF32 matmuls"),
    ("compile", P.REFERENCE, "torch.compile (the reference case)"),
    ("fused-adamw", P.FUSED_ADAMW, "fused AdamW"),
    ("deepspeed-zero2", P.ZERO2, "DeepSpeed ZeRO-2"),
    ("deepspeed-zero2-offload", P.ZERO2_OFFLOAD, "DeepSpeed ZeRO-2 + CPU optimizer offload"),
)


def case_checks(
    results: Results,
    skipped: Mapping[str, str],
    device_name: str | None,
    estimate_tolerance: float = ESTIMATE_TOLERANCE,
) -> list[Check]:
    """Every check that reads the cases' Results, in the order the kit reports them;
    ``skipped`` maps a check this scale does not run to the reason."""
    checks = [timing(results), memory_figures(results), capacity_emulation(results)]
    for name, case, what in TRAINING:
        if name in skipped:
            checks.append(Check(name, SKIP, skipped[name]))
        else:
            checks.append(trains(name, case, what)(results))
    if "gpu-profile-auto" in skipped:
        checks.append(Check("gpu-profile-auto", SKIP, skipped["gpu-profile-auto"]))
    else:
        checks.append(profile_auto(results, device_name))
    checks.append(reference_mfu(results))
    if "estimate-vs-measured" in skipped:
        checks.append(Check("estimate-vs-measured", SKIP, skipped["estimate-vs-measured"]))
    else:
        checks.append(estimate_vs_measured(results, estimate_tolerance))
    checks.append(estimate_verdicts(results))
    return checks
