"""The validation kit's checks of the diagnostics (issue 19), on every CUDA case that trained:
its phases add up to its step time, NVML's telemetry is there and physically plausible,
and its energy per token is above zero.

They need a GPU: on the ``cpu`` profile each skips and says so (the CPU side of the same
figures is tested in ``tests/test_phases.py`` and ``tests/test_telemetry.py``).
"""

from __future__ import annotations

import math
from typing import Any

from gpubench.contracts.result import Result, Stats
from gpubench.validation.checks import FAIL, PASS, SKIP, Check, Results
from gpubench.worker.measure.phases import SUM_TOLERANCE_S, SUM_TOLERANCE_SHARE
from gpubench.worker.trackers.telemetry import ENERGY_COUNTER, POWER_INTEGRAL

# What a working card's NVML readings cannot be outside of. No card gpubench knows draws
# 1.5 kW (a B200 is rated 1 kW); a GPU below 10 °C or above 110 °C is a misread sensor
# (cards shut down around 90-105 °C).
MAX_POWER_W = 1500.0
TEMPERATURE_C = (10.0, 110.0)


def _cuda_ran(results: Results) -> list[Result]:
    return [r for r in results.values() if r.profile.kind == "cuda" and r.ran]


def _no_cuda(name: str) -> Check:
    return Check(name, SKIP, "no case ran on CUDA (cpu profile): NVML and CUDA events need a GPU")


def _phase_sum_problem(result: Result) -> tuple[str | None, float | None]:
    """Why ``result``'s phases do not add up to its step times (None: they do), and the
    worst measured step's |phases - step| / step."""
    m, series = result.metrics, result.series
    if not m.phases or not series.phase_s:
        return "no time per phase (Metrics.phases, Series.phase_s)", None
    if m.phase_timing != "cuda-events":
        return f"phases timed by {m.phase_timing!r}, not CUDA events", None
    steps = series.step_time_s
    short = [p for p, times in series.phase_s.items() if len(times) != len(steps)]
    if short:
        return f"phase series not aligned with the {len(steps)} steps: {short}", None
    worst_share = 0.0
    for i in range(m.warmup_steps, len(steps)):
        total = sum(times[i] for times in series.phase_s.values())
        if not math.isfinite(total) or steps[i] <= 0:
            return f"step {i}: phases sum to {total!r}, step time {steps[i]!r}", None
        off = abs(total - steps[i])
        worst_share = max(worst_share, off / steps[i])
        if off > SUM_TOLERANCE_S + SUM_TOLERANCE_SHARE * steps[i]:
            return (
                f"step {i}: phases sum to {total * 1e3:.3f} ms, the step took "
                f"{steps[i] * 1e3:.3f} ms ({off / steps[i]:.1%} off)",
                off / steps[i],
            )
    return None, worst_share


def phase_sums(results: Results) -> Check:
    """Every measured step's phases add up to its step time within the phase clock's stated
    tolerance (gpubench.worker.measure.phases: SUM_TOLERANCE_S + SUM_TOLERANCE_SHARE of
    the step), timed by CUDA events."""
    name = "phase-sums"
    cuda = _cuda_ran(results)
    if not cuda:
        return _no_cuda(name)
    figure: dict[str, Any] = {}
    wrong = []
    for r in cuda:
        problem, worst = _phase_sum_problem(r)
        figure[r.case.id] = worst
        if problem:
            wrong.append(f"{r.case.id}: {problem}")
    tolerance = f"{SUM_TOLERANCE_S * 1e3:g} ms + {SUM_TOLERANCE_SHARE:.0%} of the step"
    if wrong:
        return Check(name, FAIL, f"{'; '.join(wrong)} (tolerance {tolerance})", figure)
    worst_case = max(figure, key=lambda n: figure[n] or 0.0)
    return Check(
        name,
        PASS,
        f"phases add up to the step time on all {len(cuda)} CUDA cases within {tolerance}; "
        f"worst {worst_case}: {figure[worst_case]:.2%}",
        figure,
    )


def _telemetry_problems(result: Result) -> list[str]:
    m = result.metrics
    readings: dict[str, Stats | None] = {
        "gpu_util": m.gpu_util,
        "power_w": m.power_w,
        "temperature_c": m.temperature_c,
        "sm_clock_mhz": m.sm_clock_mhz,
    }
    missing = [n for n, stats in readings.items() if stats is None]
    if missing:
        return [f"no {', '.join(missing)}"]
    util, power, temperature, clock = (s for s in readings.values() if s is not None)
    problems = []
    if not 0 <= util.min <= util.max <= 100:
        problems.append(f"gpu_util {util.min:g}..{util.max:g} % is outside 0..100")
    elif util.median <= 0:
        problems.append("gpu_util is 0 on a training case (NVML sees another device?)")
    if power.min <= 0 or power.max >= MAX_POWER_W:
        problems.append(f"power_w {power.min:g}..{power.max:g} W is outside 0..{MAX_POWER_W:g}")
    low, high = TEMPERATURE_C
    if not low <= temperature.min <= temperature.max <= high:
        problems.append(
            f"temperature_c {temperature.min:g}..{temperature.max:g} is outside {low:g}..{high:g}"
        )
    if clock.min <= 0:
        problems.append(f"sm_clock_mhz reads {clock.min:g}")
    if len(result.series.telemetry.get("t_s", [])) < 2:
        problems.append("fewer than 2 rows in Series.telemetry")
    return problems


def nvml_telemetry(results: Results) -> Check:
    """NVML's utilisation, power, temperature and SM clock are there on every CUDA case
    and within what a working card reads (:data:`MAX_POWER_W`, :data:`TEMPERATURE_C`)."""
    name = "nvml-telemetry"
    cuda = _cuda_ran(results)
    if not cuda:
        return _no_cuda(name)
    figure: dict[str, Any] = {}
    wrong = []
    for r in cuda:
        m = r.metrics
        figure[r.case.id] = {
            reading: stats.median if stats else None
            for reading, stats in (
                ("gpu_util", m.gpu_util),
                ("power_w", m.power_w),
                ("temperature_c", m.temperature_c),
                ("sm_clock_mhz", m.sm_clock_mhz),
            )
        } | {"throttled": {k: v for k, v in m.throttle_reasons.items() if v > 0}}
        problems = _telemetry_problems(r)
        if problems:
            wrong.append(f"{r.case.id}: {'; '.join(problems)}")
    if wrong:
        return Check(name, FAIL, "; ".join(wrong), figure)
    return Check(
        name, PASS, f"NVML telemetry present and plausible on all {len(cuda)} CUDA cases", figure
    )


def energy_per_token(results: Results) -> Check:
    """Every CUDA case that measured a throughput has an energy per token above zero, from
    the energy counter or the power integral."""
    name = "energy-per-token"
    cuda = [r for r in _cuda_ran(results) if r.metrics.tokens_per_s is not None]
    if not cuda:
        return _no_cuda(name)
    figure = {
        r.case.id: {"j_per_token": r.metrics.energy_per_token_j, "method": r.metrics.energy_method}
        for r in cuda
    }
    wrong = [
        f"{r.case.id}: energy_per_token_j={r.metrics.energy_per_token_j!r} "
        f"({r.metrics.energy_method or 'no energy method'})"
        for r in cuda
        if not (r.metrics.energy_per_token_j or 0) > 0
        or r.metrics.energy_method not in (ENERGY_COUNTER, POWER_INTEGRAL)
    ]
    if wrong:
        return Check(name, FAIL, "; ".join(wrong), figure)
    methods = sorted({r.metrics.energy_method for r in cuda})
    return Check(
        name,
        PASS,
        f"energy per token > 0 on all {len(cuda)} CUDA cases ({', '.join(methods)})",
        figure,
    )


def diagnostic_checks(results: Results) -> list[Check]:
    """The diagnostics' checks, in the order the kit reports them."""
    return [phase_sums(results), nvml_telemetry(results), energy_per_token(results)]
