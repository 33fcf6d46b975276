"""The control for benchmarks/adaptive_stop.py: can *any* run on this machine be within 1 %
of a run ten times longer, when no model and no harness are involved?

    python benchmarks/machine_drift.py --step-ms 10,100 --repeats 10 \
        --out docs/benchmarks/machine-drift-2026-12-03.json

A "step" here is a fixed number of float32 matrix products (256 x 256, one torch thread),
sized once so that it takes about ``--step-ms`` milliseconds; nothing allocates, nothing
is built, the work is identical every step. Per step size the script runs the same protocol
as benchmarks/adaptive_stop.py with gpubench's own stop rule
(:class:`gpubench.worker.measure.precision.StopRule`, ``steps="auto"``, target ±1 %,
first check at 50 steps, ``--max-steps`` cap): ``--repeats`` adaptive runs, and between
their two halves one run of ``--long-factor`` times their median step count. It reports
the same figures (the share of repeats within 1 % of the long run's median, how often a
repeat's 95 % interval holds it, the spread of the repeats' medians).

If this loop cannot meet the figure either, the limit is the machine (its speed drifts
between runs a minute apart), not the way gpubench stops or measures.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch
from adaptive_stop import against_a_long_run, figures  # this folder: the same protocol

from gpubench.contracts.case import make_case
from gpubench.worker.measure.precision import StopRule, median_interval

SIZE = 256


def products_per_step(step_ms: float) -> int:
    """How many 256 x 256 products take about ``step_ms`` here (after a short warm-up)."""
    a, b = torch.randn(SIZE, SIZE), torch.randn(SIZE, SIZE)
    for _ in range(200):
        a @ b
    start, count = time.perf_counter(), 0
    while time.perf_counter() - start < 1.0:
        a @ b
        count += 1
    return max(1, round(count * step_ms / 1000))


def timed_steps(products: int, stop: StopRule) -> list[float]:
    """Steps of ``products`` products until ``stop`` says so; each step's seconds."""
    a, b = torch.randn(SIZE, SIZE), torch.randn(SIZE, SIZE)
    for _ in range(3 * products):  # a warm-up of three steps, unmeasured
        a @ b
    while True:
        start = time.perf_counter()
        for _ in range(products):
            a @ b
        stop.observe(time.perf_counter() - start)
        reason = stop.reason(*stop.vote())
        if reason:
            return stop.step_times_s


def run(products: int, steps: int | str, args: argparse.Namespace) -> dict[str, Any]:
    case = make_case(model="gpt-tiny", steps=steps, max_steps=args.max_steps, max_seconds=600.0)
    stop = StopRule(case, target=args.target if steps == "auto" else None)
    times = timed_steps(products, stop)
    interval = median_interval(times, products)  # products/s, the "tokens" of this loop
    assert interval is not None
    return {
        "median": interval.median,
        "low": interval.low,
        "high": interval.high,
        "precision": interval.precision,
        "steps": len(times),
        "reached": interval.precision <= args.target if steps == "auto" else None,
    }


def step_size(step_ms: float, args: argparse.Namespace) -> dict[str, Any]:
    products = products_per_step(step_ms)
    repeats, long = against_a_long_run(
        lambda: run(products, "auto", args), lambda steps: run(products, steps, args), args
    )
    return {
        "step_ms": step_ms,
        "products_per_step": products,
        "long": long,
        "repeats": repeats,
        "ratios": [r["median"] / long["median"] for r in repeats],
        **figures(repeats, long),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step-ms", default="10,100", help="step lengths, comma-separated")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--target", type=float, default=0.01)
    parser.add_argument("--max-steps", type=int, default=400)
    parser.add_argument("--long-factor", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    results = []
    for step_ms in (float(s) for s in args.step_ms.split(",")):
        result = step_size(step_ms, args)
        results.append(result)
        print(
            f"{step_ms:g} ms steps: long {result['long']['steps']} steps "
            f"(its own ±{result['long']['precision']:.1%}); repeats/long "
            + " ".join(f"{r:.3f}" for r in result["ratios"])
            + f"; within 1 %: {result['within_1pct']:.0%}, coverage {result['coverage']:.0%}, "
            f"between-runs CV {result['between_runs_cv']:.1%}, a repeat's own ± "
            f"{result['within_run_precision_median']:.1%}, target reached {result['reached']:.0%}",
            flush=True,
        )
        if args.out is not None:  # a cut run keeps the step sizes it finished
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(
                json.dumps(
                    {
                        "settings": {
                            k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                        },
                        "machine": {"platform": platform.platform(), "torch": torch.__version__},
                        "step_sizes": results,
                        "seconds": time.perf_counter() - started,
                    },
                    indent=2,
                )
                + "\n"
            )


if __name__ == "__main__":
    main()
