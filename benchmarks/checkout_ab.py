"""Did a change make gpubench's harness slower? The same case run by two checkouts, alternating.

    git worktree add /tmp/before <old commit>; git worktree add /tmp/after <new commit>
    python benchmarks/checkout_ab.py --a /tmp/before --b /tmp/after --repeats 40

harness_overhead.py compares gpubench with a bare loop; across commits its
figure moves by a few per cent with the machine alone, more than a change to
the harness could cost. This script asks the narrower question directly: each
run is a fresh ``python`` whose ``PYTHONPATH`` starts with one checkout, so the
parent (``run_case``), the worker and the engine are all that checkout's code;
runs alternate a, b, b, a, ... so a drifting machine biases neither side. The
figure is the median over pairs of b's tokens/s / a's (1.0: no difference),
with a bootstrap 90 % interval of that median.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ONE_CASE = """
import json, sys
import gpubench
from gpubench.contracts.case import make_case
from gpubench.contracts.profiles import resolve_profile
from gpubench.runner import run_case
result = run_case(make_case(**json.loads(sys.argv[1])), resolve_profile("cpu"), timeout_s=600)
if result.status != "ok":
    raise SystemExit(result.describe())
print(json.dumps({"tokens_per_s": result.tokens_per_s, "module": gpubench.__file__}))
"""


def run_one(checkout: Path, case: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=str(checkout))
    done = subprocess.run(
        [sys.executable, "-c", ONE_CASE, json.dumps(case)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=checkout,
    )
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    if not answer["module"].startswith(str(checkout)):
        raise SystemExit(f"{checkout}: gpubench came from {answer['module']}, not the checkout")
    return answer


def bootstrap_median(values: list[float], rounds: int = 10_000) -> tuple[float, float]:
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(rounds))
    return medians[int(0.05 * rounds)], medians[int(0.95 * rounds)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", type=Path, required=True, help="the checkout before")
    parser.add_argument("--b", type=Path, required=True, help="the checkout after")
    parser.add_argument("--model", default="gpt-mini")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20, help="pairs")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    case = dict(model=args.model, batch_size=8, seq_len=128, steps=args.steps, warmup=args.warmup)
    checkouts = {"a": args.a.resolve(), "b": args.b.resolve()}
    runs: dict[str, list[float]] = {"a": [], "b": []}
    for i in range(args.repeats):
        for side in ("a", "b") if i % 2 == 0 else ("b", "a"):
            tokens_per_s = run_one(checkouts[side], case)["tokens_per_s"]
            runs[side].append(tokens_per_s)
            print(f"pair {i + 1} {side} {tokens_per_s:,.0f} tok/s", flush=True)
    ratios = [b / a for a, b in zip(runs["a"], runs["b"], strict=True)]
    low, high = bootstrap_median(ratios)
    summary = {
        "command": "python " + " ".join(sys.argv),
        "case": case,
        "checkouts": {k: str(v) for k, v in checkouts.items()},
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d"),
        "ratio_b_over_a": statistics.median(ratios),
        "ratio_interval_90": [low, high],
        "pair_ratios": ratios,
        "tokens_per_s": runs,
    }
    print(
        f"\ntokens/s b / a, median of {len(ratios)} pairs: {summary['ratio_b_over_a']:.3f} "
        f"(90 % interval {low:.3f}..{high:.3f}; pairs {min(ratios):.3f}..{max(ratios):.3f})"
    )
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
