"""Throughput calibration across "cards": CPU runs of different thread counts stand in for
two profiles, and each run's Result predicts the other's tokens/s (gpubench.estimate.throughput:
its MFU carried over, scaled by the ratio of the peaks). The error of each prediction is
100 x (the range's middle - measured) / measured.

A profile's peak is what a datasheet would state: the best FLOP/s of an fp32 matmul of the
model's own width (tokens x d_model by d_model x 4 d_model, the MLP's) at that thread count.
The load average is printed beside every repeat: other work on the machine slows the run
and not the best-of-5 peak, so a busy machine's error is the contention's.

    python benchmarks/calibration.py --models gpt-tiny,gpt-mini --threads 1,2 --repeats 3 \
        --out docs/benchmarks/calibration-2026-12-03.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from gpubench.contracts.case import Case, make_case  # noqa: E402
from gpubench.contracts.profiles import HardwareProfile  # noqa: E402
from gpubench.contracts.units import GiB  # noqa: E402
from gpubench.estimate.measured import compared_throughput  # noqa: E402
from gpubench.estimate.predicted import predicted_result  # noqa: E402
from gpubench.estimate.shape import builtin_shape  # noqa: E402
from gpubench.runner import run_case  # noqa: E402

SHAPES = {"gpt-tiny": (4, 64), "gpt-mini": (8, 128)}  # batch, seq: seconds a run on 2 cores


def matmul_peak(threads: int, rows: int, width: int) -> float:
    """Best FLOP/s of [rows, width] @ [width, 4 width] in fp32 on ``threads`` threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(rows, width), torch.randn(width, 4 * width)
        a @ b
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(4):
                a @ b
            best = min(best, time.perf_counter() - start)
        return 2 * rows * width * 4 * width * 4 / best
    finally:
        torch.set_num_threads(before)


def one_repeat(case: Case, threads: list[int]) -> list[dict[str, Any]]:
    shape = builtin_shape(case)
    width = shape.d_model if shape is not None else 512
    cards = {
        n: HardwareProfile(
            f"cpu-{n}t",
            "cpu",
            4 * GiB,
            None,
            matmul_peak(n, case.batch_size * case.seq_len, width),
            None,
        )
        for n in threads
    }
    load = os.getloadavg()[0]
    runs = {
        n: run_case(case, cards[n], timeout_s=600, env={"OMP_NUM_THREADS": str(n)}) for n in threads
    }
    rows = []
    for source in threads:
        for target in threads:
            if source == target or not runs[source].tokens_per_s or not runs[target].tokens_per_s:
                continue
            predicted = predicted_result(case, cards[target], trace=False, measured=[runs[source]])
            assert predicted.estimate is not None
            error = compared_throughput(predicted.estimate, runs[target]).tokens_per_s_error_pct
            rows.append(
                {
                    "case": case.id,
                    "from_threads": source,
                    "to_threads": target,
                    "peak_from_gflops": cards[source].fp32_flops / 1e9,
                    "peak_to_gflops": cards[target].fp32_flops / 1e9,
                    "measured_from": runs[source].tokens_per_s,
                    "measured_to": runs[target].tokens_per_s,
                    "predicted_low": predicted.estimate.tokens_per_s_low,
                    "predicted_high": predicted.estimate.tokens_per_s_high,
                    "error_pct": error,
                    "load_average": load,
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="gpt-tiny,gpt-mini")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    rows: list[dict[str, Any]] = []
    for model in args.models.split(","):
        batch, seq = SHAPES.get(model, (8, 128))
        case = make_case(model=model, batch_size=batch, seq_len=seq, steps=12, warmup=2)
        for _ in range(args.repeats):
            for row in one_repeat(case, threads):
                rows.append(row)
                print(
                    f"{row['case']}: {row['from_threads']} -> {row['to_threads']} threads, "
                    f"peaks {row['peak_from_gflops']:.0f} -> {row['peak_to_gflops']:.0f} "
                    f"GFLOP/s, measured {row['measured_from']:,.0f} -> "
                    f"{row['measured_to']:,.0f} tok/s, predicted {row['predicted_low']:,.0f}-"
                    f"{row['predicted_high']:,.0f}, error {row['error_pct']:+.1f} % "
                    f"(load {row['load_average']:.1f})",
                    flush=True,
                )
    errors = [abs(r["error_pct"]) for r in rows if r["error_pct"] is not None]
    if errors:
        print(
            f"|error|: median {statistics.median(errors):.1f} %, max {max(errors):.1f} % "
            f"over {len(errors)} predictions"
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
