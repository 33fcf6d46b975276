"""The torch engine's training step against a bare loop's, in one process.

    python benchmarks/inprocess_step.py --rounds 8

harness_overhead.py compares whole cases, each in its own fresh process, and on
a shared 2-core machine one process's throughput can differ from the next's
by ±25 %. This script removes the process from the comparison: in a single
process it alternates (bare, engine, engine, bare, ...) a hand-written loop
(bare_loop.py's) and ``TorchEngine.run`` (no worker, no memory
cap, no parent polling) on the same case, and prints the median of the
per-round ratios engine / bare. What it measures is the engine's own cost per
step (its step function, timer and trackers), nothing about isolation.
"""

from __future__ import annotations

import argparse
import statistics

from bare_loop import measured_step_times  # benchmarks/, beside this script

from gpubench.case import Case, make_case
from gpubench.engines.torch_engine import TorchEngine
from gpubench.profiles import resolve_profile
from gpubench.runner.protocol import ProgressWriter


def bare_tokens_per_s(case: Case) -> float:
    return case.tokens_per_step / statistics.median(measured_step_times(case))


def engine_tokens_per_s(case: Case) -> float:
    result = TorchEngine().run(case, resolve_profile("cpu"), ProgressWriter(None))
    if result.status != "ok" or result.metrics.tokens_per_s is None:
        raise SystemExit(f"engine case failed: {result.describe()}")
    return result.metrics.tokens_per_s.median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--model", default="gpt-mini")
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    case = make_case(model=args.model, batch_size=8, seq_len=128, steps=args.steps, warmup=5)
    sides = {"bare": bare_tokens_per_s, "engine": engine_tokens_per_s}
    runs: dict[str, list[float]] = {name: [] for name in sides}
    for i in range(args.rounds):
        for name in ("bare", "engine") if i % 2 == 0 else ("engine", "bare"):
            runs[name].append(sides[name](case))
            print(f"round {i + 1} {name:6s} {runs[name][-1]:,.0f} tok/s", flush=True)
    ratios = [e / b for b, e in zip(runs["bare"], runs["engine"], strict=True)]
    engine, bare = statistics.median(runs["engine"]), statistics.median(runs["bare"])
    print(
        f"engine / bare, median of {args.rounds} rounds: {statistics.median(ratios):.3f} "
        f"(rounds {min(ratios):.3f}..{max(ratios):.3f}); medians: engine {engine:,.0f}, "
        f"bare {bare:,.0f} tok/s"
    )


if __name__ == "__main__":
    main()
