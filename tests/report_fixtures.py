"""Saved results the report tests render: real runs of gpubench (tests/data/report/README.md),
and the CPU smoke suite's quiet runs (tests/data/gate/)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from gpubench.contracts.profiles import resolve_profile
from gpubench.contracts.result import Result
from gpubench.report.load import load_runs

DATA = Path(__file__).parent / "data"
RUN_CPU = DATA / "report" / "run-cpu"  # cpu: ok x2, markup name, diverged, timeout, crashed
RUN_SMALL = DATA / "report" / "run-small-cpu"  # small-cpu (64 MiB, $0.05/h): ok, oom
QUIET = [DATA / "gate" / f"quiet-{i}.jsonl" for i in range(1, 9)]  # the smoke suite, 8 runs
# the shipped suites on cpu: 30 cases, six tests, five workloads, a busy machine
RUN_SUITES = DATA / "report" / "run-suites-cpu" / "results.jsonl"
MARKUP = "<script>alert(1)</script>"


def statuses() -> list[Result]:
    """Both fixture runs merged, and one ``over_capacity`` case: the one status a CPU cannot
    produce (a CUDA device's peak above the profile's capacity, which the worker decides),
    planted in memory, as the gate's tests plant their slowdowns: the cpu run's fastest ok
    case, on an l4 profile emulated at half its measured peak, that peak as the device's."""
    results = list(load_runs([RUN_CPU, RUN_SMALL]).results)
    ok = max((r for r in results if r.status == "ok"), key=lambda r: r.tokens_per_s or 0)
    peak = ok.peak_memory_bytes
    assert peak is not None
    capacity = peak // 2
    over = dataclasses.replace(
        ok,
        status="over_capacity",
        case=ok.case.replace(name="planted-over-capacity"),
        profile=dataclasses.replace(resolve_profile("l4"), memory_bytes=capacity),
        metrics=dataclasses.replace(
            ok.metrics, capacity_bytes=capacity, capacity_emulated=True, peak_reserved_bytes=peak
        ),
    )
    return [*results, over]


def diagnosed() -> Result:
    """The diagnostics of schema v7 planted, in memory, on a copy of the cpu run's fastest ok
    case, on an l4 profile, until a real run of the worker that fills them is committed:
    its real step times split into phases by fixed shares (data 40 %: an input-bound
    step), a 95 % interval of ±3.4 % short of a ±1 % target (steps="auto" stopped at
    max_steps), and telemetry sampled every 0.5 s over its measured steps (GPU utilisation
    low and a power cap, as the L4 seed saw). The report tests read the sections from it;
    the figures are test data, not a measurement."""
    from gpubench.contracts.result import Stats

    ok = max((r for r in load_runs([RUN_CPU]).results if r.fits), key=lambda r: r.tokens_per_s or 0)
    steps = ok.series.step_time_s  # warm-up included: Series.phase_s is aligned with it
    measured = slice(ok.metrics.warmup_steps, None)
    shares = {"data": 0.40, "forward": 0.25, "backward": 0.25, "clip": 0.02, "optimizer": 0.06}
    shares["rest"] = 1 - sum(shares.values())
    phase_s = {name: [share * s for s in steps] for name, share in shares.items()}
    samples = 2 * (len(steps[measured]) + 1)
    telemetry = {
        "t_s": [0.5 * i for i in range(samples)],
        "gpu_util": [20.0 + (i % 5) * 4 for i in range(samples)],
        "power_w": [60.0 + (i % 3) * 6 for i in range(samples)],
        "temperature_c": [70.0 + i * 0.5 for i in range(samples)],
        "sm_clock_mhz": [1800.0 - (i % 4) * 100 for i in range(samples)],
    }
    tps = ok.tokens_per_s or 0.0
    l4 = resolve_profile("l4")
    return dataclasses.replace(
        ok,
        case=ok.case.replace(name="planted-diagnostics", steps="auto", max_steps=200),
        profile=l4,
        metrics=dataclasses.replace(
            ok.metrics,
            capacity_bytes=l4.memory_bytes,
            peak_reserved_bytes=ok.peak_memory_bytes,
            precision_achieved=0.034,
            tokens_per_s_low=tps * 0.966,
            tokens_per_s_high=tps * 1.034,
            precision_confidence=0.95,
            precision_target=0.01,
            precision_reached=False,
            stop_reason="max_steps",
            phases={name: Stats.of(values[measured]) for name, values in phase_s.items()},
            phase_timing="cuda-events",
            gpu_util=Stats.of(telemetry["gpu_util"]),
            power_w=Stats.of(telemetry["power_w"]),
            temperature_c=Stats.of(telemetry["temperature_c"]),
            sm_clock_mhz=Stats.of(telemetry["sm_clock_mhz"]),
            throttle_reasons={"sw_power_cap": 0.4, "gpu_idle": 0.1},
            energy_j=1234.0,
            energy_method="nvml-energy-counter",
            energy_per_token_j=0.0123,
            usd_per_million_tokens=0.42,
            telemetry_interval_s=0.5,
        ),
        series=dataclasses.replace(ok.series, phase_s=phase_s, telemetry=telemetry),
    )
