"""The torch engine's training step against a bare loop's, in one process.

    python benchmarks/inprocess_step.py --rounds 8

harness_overhead.py compares whole cases, each in its own fresh process, and on
a shared 2-core machine one process's throughput can differ from the next's
by ±25 %. This script removes the process from the comparison: in a single
process it alternates (bare, engine, engine, bare, ...) a hand-written loop
(the same one as bare_loop.py) and ``TorchEngine.run`` (no worker, no memory
cap, no parent polling) on the same case, and prints the median of the
per-round ratios engine / bare. What it measures is the engine's own cost per
step (its step function, timer and trackers), nothing about isolation.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F

from gpubench.case import Case, make_case
from gpubench.data.synthetic import TokenStream
from gpubench.engines.torch_engine import ADAMW_BETAS, ADAMW_WEIGHT_DECAY, TorchEngine
from gpubench.models import build_model
from gpubench.profiles import resolve_profile
from gpubench.runner.protocol import ProgressWriter


def bare_tokens_per_s(case: Case) -> float:
    torch.manual_seed(case.seed)
    built = build_model(case, "cpu")
    stream = TokenStream(
        case.data, built.vocab_size, case.batch_size, case.seq_len, case.seed, "cpu"
    )
    params = [p for p in built.module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=case.lr, betas=ADAMW_BETAS, weight_decay=ADAMW_WEIGHT_DECAY
    )
    built.module.train()
    times = []
    for _ in range(int(case.warmup) + case.steps):
        t0 = time.perf_counter()
        x, y = stream.next_batch()
        logits = built.logits(x)
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(
            params, math.inf if case.grad_clip is None else case.grad_clip
        )
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
        times.append(time.perf_counter() - t0)
    return case.tokens_per_step / statistics.median(times[int(case.warmup) :])


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
