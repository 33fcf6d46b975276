"""Benchmark of gpubench itself: what does the harness cost?

1. Throughput ratio: tokens/s of the same model, data, optimizer and step count
   trained by gpubench (a worker process started by the runner) and by a bare
   hand-written loop (``bare_loop.py``, also a fresh process). Target >= 0.98.
2. Fixed cost per case: seconds a gpubench case spends outside its measured
   steps (process start to answer, minus the sum of the measured step times)
   beyond what the bare script spends outside its own. Both run the same
   fixed warm-up and pay python start, ``import torch``, model build and the
   lazy ``torch._dynamo`` import of the first AdamW (gpubench before its
   first step, the bare loop inside it: hence measured steps only); the
   difference is the harness: its imports, job/result files,
   fingerprint, trackers, the memory-cap set-up and the parent's polling.
3. The parent's own CPU while a case runs (share of one core, and voluntary
   context switches per second): unlike the two figures above, it hardly
   depends on how busy the machine is, and every bit of it is taken from
   a case that uses all the cores.

``--no-time-phases`` runs the gpubench side without the phase split
(``Case.time_phases=False``): two runs, with and without it, give its cost.

``--threads N`` sets OMP_NUM_THREADS for both sides (torch's intra-op threads).
With N below the core count the harness's own threads (the parent's polling,
the worker's samplers) have a core to themselves, which separates what the
harness costs from how crowded the machine is.

Runs alternate (gpubench, bare, bare, gpubench, ...) so a drifting machine
biases neither side. Usage:

    python benchmarks/harness_overhead.py --repeats 5 --out docs/benchmarks/harness-overhead.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from gpubench.contracts.case import make_case  # noqa: E402
from gpubench.contracts.profiles import resolve_profile  # noqa: E402
from gpubench.runner import run_case  # noqa: E402


def run_gpubench(case_kwargs: dict, timeout_s: float, env: dict[str, str]) -> dict:
    case = make_case(**case_kwargs)
    before = resource.getrusage(resource.RUSAGE_SELF)
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run_case(case, resolve_profile("cpu"), timeout_s=timeout_s, env=env)
    after = resource.getrusage(resource.RUSAGE_SELF)
    children = child_usage(children_before)
    if result.status != "ok":
        raise SystemExit(f"gpubench case failed: {result.describe()}")
    m = result.metrics
    assert m.tokens_per_s is not None and result.duration_s is not None
    measured_s = sum(result.series.step_time_s[m.warmup_steps :])
    return {
        "tokens_per_s": m.tokens_per_s.median,
        "duration_s": result.duration_s,
        "measured_s": measured_s,
        "outside_s": result.duration_s - measured_s,
        # the parent (this process, run_case's poll loop) competes with the case for cores
        "parent_cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        "parent_wakeups": after.ru_nvcsw - before.ru_nvcsw,
        **children,
    }


def child_usage(before: resource.struct_rusage) -> dict:
    """What the processes reaped since ``before`` used: CPU seconds and minor page faults
    (the case's process, start-up included; glibc handing freed memory back to the
    kernel and faulting it in again shows up as faults)."""
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "child_cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        "child_minor_faults": after.ru_minflt - before.ru_minflt,
    }


def run_bare(case_kwargs: dict, env: dict[str, str]) -> dict:
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, str(HERE / "bare_loop.py"), json.dumps(case_kwargs)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    )
    duration = time.perf_counter() - started
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "tokens_per_s": data["tokens_per_s"],
        "duration_s": duration,
        "measured_s": data["measured_s"],
        "outside_s": duration - data["measured_s"],
        **child_usage(children_before),
    }


def python_and_torch_startup_s(repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch"], check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gpt-mini")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS, both sides")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for both sides (repeatable), e.g. glibc malloc tunables",
    )
    parser.add_argument(
        "--no-time-phases",
        action="store_true",
        help="gpubench without the phase split (Case.time_phases=False), to measure its cost",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    args.extra_env = {}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--env {item!r}: expected NAME=VALUE")
        args.extra_env[name] = value
    return args


def run_pairs(
    case_kwargs: dict, repeats: int, timeout: float, env: dict[str, str]
) -> dict[str, list[dict]]:
    """``repeats`` pairs, each side once per pair, the order alternating."""
    runs: dict[str, list[dict]] = {"gpubench": [], "bare": []}
    for i in range(repeats):
        order = ("gpubench", "bare") if i % 2 == 0 else ("bare", "gpubench")
        for side in order:
            run = (
                run_gpubench(case_kwargs, timeout, env)
                if side == "gpubench"
                else run_bare(case_kwargs, env)
            )
            runs[side].append(run)
            print(
                f"repeat {i + 1} {side:8s} {run['tokens_per_s']:10,.0f} tok/s "
                f"outside training {run['outside_s']:.2f} s, "
                f"{run['child_minor_faults']:,} minor faults",
                flush=True,
            )
    return runs


def summarise(runs: dict[str, list[dict]], args: argparse.Namespace, case_kwargs: dict) -> dict:
    def med(side: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[side])

    # each repeat ran both sides back to back: the ratio within a pair is less exposed
    # to the machine's drift than a ratio of two medians
    pair_ratios = sorted(
        g["tokens_per_s"] / b["tokens_per_s"]
        for g, b in zip(runs["gpubench"], runs["bare"], strict=True)
    )
    return {
        "command": "python benchmarks/harness_overhead.py " + " ".join(args.argv),
        "case": case_kwargs,
        "omp_num_threads": args.threads,
        "env": args.extra_env,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
        },
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "throughput_ratio": statistics.median(pair_ratios),
        "throughput_ratio_of_medians": med("gpubench", "tokens_per_s")
        / med("bare", "tokens_per_s"),
        "pair_ratios": pair_ratios,
        "gpubench_tokens_per_s_median": med("gpubench", "tokens_per_s"),
        "bare_tokens_per_s_median": med("bare", "tokens_per_s"),
        "fixed_cost_per_case_s": med("gpubench", "outside_s") - med("bare", "outside_s"),
        "parent_cpu_share": med("gpubench", "parent_cpu_s") / med("gpubench", "duration_s"),
        "parent_wakeups_per_s": med("gpubench", "parent_wakeups") / med("gpubench", "duration_s"),
        "minor_faults_median": {side: med(side, "child_minor_faults") for side in runs},
        "python_and_import_torch_s": python_and_torch_startup_s(),
        "runs": runs,
    }


def print_summary(summary: dict) -> None:
    pairs = summary["pair_ratios"]
    print(
        f"\nthroughput ratio gpubench/bare, median of {len(pairs)} pairs: "
        f"{summary['throughput_ratio']:.3f} (pairs {pairs[0]:.3f}..{pairs[-1]:.3f}; "
        "target >= 0.98)"
    )
    print(
        f"fixed cost per case beyond python + import torch: "
        f"{summary['fixed_cost_per_case_s']:.2f} s "
        f"(python + import torch alone: {summary['python_and_import_torch_s']:.2f} s)"
    )
    print(
        f"parent while a case runs: {summary['parent_cpu_share']:.2%} of a core, "
        f"{summary['parent_wakeups_per_s']:.0f} wake-ups/s (set-up and result handling included)"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.argv = argv if argv is not None else sys.argv[1:]
    case_kwargs = {
        "model": args.model,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "steps": args.steps,
        "warmup": args.warmup,
        "precision": "fp32",
    }
    if args.no_time_phases:
        case_kwargs["time_phases"] = False  # the bare loop reads the Case and ignores it
    env = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
    env.update(args.extra_env)
    runs = run_pairs(case_kwargs, args.repeats, args.timeout, env)
    summary = summarise(runs, args, case_kwargs)
    print_summary(summary)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
