"""The torch engine's training step against a bare loop's, step for step, in one process.

    python benchmarks/inprocess_step.py --steps 200

harness_overhead.py compares whole cases, each in its own fresh process, and on
a shared 2-core machine one run's throughput differs from the next's by 5 to
15 %, more than the 2 % the harness may cost. This script takes the process
and the machine's drift out of the comparison: one process builds the same
case twice, once as the bare loop's step (bare_loop.py's ``bare_step``) and
once as the step the torch engine times (``TorchEngine.build_step`` on the
model and stream of ``build_for_training``: the engine's own code, not a
copy), and alternates them step by step (bare, engine, engine, bare, ...), so
both see the same moment of the machine. Each side is timed as gpubench times
it: the engine's step by
``perf_counter`` around the step function, its loss and gradient norm read
after the clock (as ``training_loop`` does); the bare step with its
``loss.item()`` inside.

What it measures is the cost of the engine's step code (the loss sum, the
extra division, the autocast and no_sync contexts, the gradient norm kept),
nothing about isolation, trackers or the loop around the step.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from bare_loop import bare_step  # benchmarks/, beside this script

from gpubench.contracts.case import make_case
from gpubench.contracts.profiles import resolve_profile
from gpubench.worker.engines.context import TrainingContext
from gpubench.worker.engines.distributed import Ranks
from gpubench.worker.engines.recipe import build_for_training
from gpubench.worker.engines.torch_engine import TorchEngine


def quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gpt-mini")
    parser.add_argument("--steps", type=int, default=200, help="measured steps per side")
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    case = make_case(model=args.model, batch_size=8, seq_len=128, steps=args.steps, warmup=5)

    bare = bare_step(case)
    torch.manual_seed(case.seed)  # the engine's run() seeds here (prepare_device)
    ctx = TrainingContext(case, resolve_profile("cpu"), torch.device("cpu"), Ranks())
    model, stream = build_for_training(ctx)
    engine = TorchEngine().build_step(ctx, model, stream)

    def time_bare() -> float:
        t0 = time.perf_counter()
        bare()
        return time.perf_counter() - t0

    def time_engine() -> float:
        t0 = time.perf_counter()
        loss, grad_norm = engine()
        elapsed = time.perf_counter() - t0
        if not (math.isfinite(float(loss)) and math.isfinite(float(grad_norm))):
            raise SystemExit("the engine's step went non-finite")
        return elapsed

    for _ in range(args.warmup):
        time_bare()
        time_engine()
    times: dict[str, list[float]] = {"bare": [], "engine": []}
    for i in range(args.steps):
        for name in ("bare", "engine") if i % 2 == 0 else ("engine", "bare"):
            times[name].append(time_bare() if name == "bare" else time_engine())
    # tokens/s ratio engine / bare of each adjacent pair of steps
    ratios = [b / e for b, e in zip(times["bare"], times["engine"], strict=True)]
    bare_ms = statistics.median(times["bare"]) * 1e3
    engine_ms = statistics.median(times["engine"]) * 1e3
    print(
        f"{args.steps} steps each, {case.tokens_per_step} tokens per step: median step "
        f"bare {bare_ms:.1f} ms, engine {engine_ms:.1f} ms\n"
        f"tokens/s engine / bare: ratio of medians {bare_ms / engine_ms:.4f}; "
        f"median of per-pair ratios {statistics.median(ratios):.4f} "
        f"(p10 {quantile(ratios, 0.1):.3f}, p90 {quantile(ratios, 0.9):.3f})"
    )


if __name__ == "__main__":
    main()
