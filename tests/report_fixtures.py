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
