"""The harness ratio on the machine at hand: gpubench's tokens/s over a bare loop's.

The same case (fixed warm-up, so both sides skip the same steps) runs as a
gpubench case (:func:`gpubench.runner.run_case`: a worker process, trackers,
the memory cap, the result file) and as the bare loop
(:mod:`gpubench.validation.bare_loop`, a fresh ``python -m`` process), in
alternating order (gpubench, bare, bare, gpubench, ...) so a drifting machine
biases neither side. The ratio is the median of the pairs' ratios.
``benchmarks/harness_overhead.py`` is the CPU benchmark with more figures.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from gpubench.contracts.case import make_case
from gpubench.contracts.profiles import HardwareProfile
from gpubench.runner import run_case

HARNESS_TARGET = 0.98  # the project's target (docs/benchmarks/README.md)


class HarnessError(RuntimeError):
    """One side of the comparison did not produce a throughput."""


def gpubench_tokens_per_s(
    case_kwargs: Mapping[str, Any], profile: HardwareProfile, timeout_s: float
) -> float:
    result = run_case(make_case(**case_kwargs), profile, timeout_s=timeout_s)
    if result.status != "ok" or result.metrics.tokens_per_s is None:
        raise HarnessError(f"gpubench side: {result.describe()}")
    return result.metrics.tokens_per_s.median


def bare_tokens_per_s(case_kwargs: Mapping[str, Any], device: str, timeout_s: float) -> float:
    command = [
        sys.executable,
        "-m",
        "gpubench.validation.bare_loop",
        json.dumps(dict(case_kwargs)),
        device,
    ]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise HarnessError(f"bare side ran past {timeout_s:.0f} s") from exc
    if out.returncode != 0:
        raise HarnessError(f"bare side exited {out.returncode}: {out.stderr[-2000:]}")
    return float(json.loads(out.stdout.strip().splitlines()[-1])["tokens_per_s"])


def harness_ratio(
    case_kwargs: Mapping[str, Any], profile: HardwareProfile, pairs: int, timeout_s: float
) -> dict[str, Any]:
    """Run ``pairs`` alternating pairs; the figures and the median pair ratio."""
    device = "cuda" if profile.kind == "cuda" else "cpu"
    sides: dict[str, list[float]] = {"gpubench": [], "bare": []}
    for i in range(pairs):
        for side in ("gpubench", "bare") if i % 2 == 0 else ("bare", "gpubench"):
            if side == "gpubench":
                sides[side].append(gpubench_tokens_per_s(case_kwargs, profile, timeout_s))
            else:
                sides[side].append(bare_tokens_per_s(case_kwargs, device, timeout_s))
    ratios = [g / b for g, b in zip(sides["gpubench"], sides["bare"], strict=True)]
    return {
        "ratio": statistics.median(ratios),
        "pair_ratios": ratios,
        "tokens_per_s": sides,
        "case": dict(case_kwargs),
        "device": device,
        "target": HARNESS_TARGET,
    }
