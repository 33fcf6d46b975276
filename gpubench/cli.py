"""The ``gpubench`` console script.

    gpubench profiles [--json] [--rootdir DIR] [--file FILE]
    gpubench compare OLD NEW [--threshold METRIC=VALUE,...] [--any-env] [--md FILE]
    gpubench export --format pytest-benchmark RESULTS -o FILE

Each subcommand is one ``_add_<name>_command(subparsers)`` function that adds
its parser and sets ``run`` to a function ``(args) -> exit code``; adding a
subcommand (``report``, ...) means writing those two functions and listing the
first in ``_COMMANDS``. Errors gpubench can explain (a bad profile file, ...)
print one line to stderr and exit 2, like argparse's own usage errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pandas as pd

from gpubench.profiles import (
    GB_PER_S,
    TFLOPS,
    GiB,
    HardwareProfile,
    ProfileError,
    available_profiles,
    load_user_profiles,
)

# -- gpubench profiles ----------------------------------------------------------------------------


def _figure(value: float | None, scale: float, digits: int) -> str:
    return "-" if value is None else f"{value / scale:.{digits}f}"


def profiles_frame(profiles: Iterable[HardwareProfile]) -> pd.DataFrame:
    """One row per profile, figures in the units people quote (GiB, TFLOP/s, GB/s, $/h)."""
    rows = [
        {
            "name": p.name,
            "kind": p.kind,
            "memory GiB": _figure(p.memory_bytes, GiB, 1),
            "bf16 TFLOP/s": _figure(p.bf16_flops, TFLOPS, 1),
            "fp32 TFLOP/s": _figure(p.fp32_flops, TFLOPS, 1),
            "bandwidth GB/s": _figure(p.memory_bandwidth, GB_PER_S, 0),
            "$/h": _figure(p.usd_per_hour, 1.0, 2),
        }
        for p in profiles
    ]
    return pd.DataFrame(rows)


def _run_profiles(args: argparse.Namespace) -> int:
    user = load_user_profiles(rootdir=args.rootdir, file=args.file)
    profiles = list(available_profiles(user).values())
    if args.json:
        print(json.dumps([p.to_dict() for p in profiles], indent=2))
        return 0
    print(profiles_frame(profiles).to_string(index=False))
    print()
    print("Figures are dense peaks (no sparsity); GeForce bf16 is the tensor-core rate with FP32")
    print("accumulate. Profile `auto` detects GPU 0 (CUDA_VISIBLE_DEVICES' first) with NVML.")
    if user:
        print(f"User-defined or overridden here: {', '.join(user)}")
    print()
    print("Sources:")
    for p in profiles:
        print(f"  {p.name}: {p.source or '-'}")
    return 0


def _add_profiles_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "profiles",
        help="list hardware profiles (built-in and user) with their figures and sources",
        description="List the hardware profiles a run can use: built-in (cited) and user "
        "profiles from pyproject.toml [tool.gpubench.profiles.<name>] or a profiles file.",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list of profiles")
    parser.add_argument(
        "--rootdir",
        type=Path,
        default=Path.cwd(),
        metavar="DIR",
        help="read user profiles from DIR/pyproject.toml (default: the current directory)",
    )
    parser.add_argument(
        "--file",
        type=Path,
        default=None,
        metavar="FILE",
        help="also read [profiles.<name>] tables from this TOML file",
    )
    parser.set_defaults(run=_run_profiles)


# -- gpubench compare ----------------------------------------------------------------------------


def _run_compare(args: argparse.Namespace) -> int:
    from gpubench.baseline.compare import compare
    from gpubench.baseline.rules import GateRules, pyproject_thresholds
    from gpubench.baseline.sources import load_histories, newest_runs, one_per_run
    from gpubench.baseline.table import format_verdicts, markdown_summary

    old = load_histories(args.old)
    new = newest_runs(load_histories(args.new))
    thresholds = {**pyproject_thresholds(args.rootdir), **(args.threshold or {})}
    rules = GateRules(any_env=args.any_env).with_thresholds(thresholds)
    verdicts = []
    for result, confirmations in new:
        history = one_per_run(old.get((result.profile.name, result.case.id), []))
        verdicts.append(compare(result, history, rules, confirmations))
    print(format_verdicts(verdicts))
    if args.md is not None:
        args.md.write_text(markdown_summary(verdicts, title=f"{args.old} -> {args.new}"))
    regressed = [v for v in verdicts if v.regressed]
    print(f"\n{len(regressed)} of {len(verdicts)} case(s) regressed.")
    return 1 if regressed else 0


def _threshold_arg(text: str) -> dict[str, float]:
    from gpubench.baseline.rules import GateError, parse_thresholds

    try:
        return parse_thresholds(text, "--threshold")
    except GateError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_compare_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="compare a run with a baseline or an earlier run: the gate's table; exit 1 on a "
        "regression",
        description="Compare NEW (a run directory, results.jsonl, or baselines: the newest "
        "run of each case) with OLD (the same kinds: every run of each case is its history), "
        "by the rules the pytest gate uses. Exit 0: no regression; 1: a regression; 2: bad "
        "input.",
    )
    parser.add_argument("old", type=Path, help="the baseline: run dir, results file, baselines")
    parser.add_argument("new", type=Path, help="the run to judge: run dir, results file, ...")
    parser.add_argument(
        "--threshold",
        type=_threshold_arg,
        default=None,
        metavar="METRIC=VALUE[,...]",
        help="thresholds (relative changes in (0, 1)) for tokens_per_s, peak_memory, "
        "host_rss, loss",
    )
    parser.add_argument(
        "--any-env",
        action="store_true",
        help="let runs from another device, driver, torch or gpubench major version decide",
    )
    parser.add_argument("--md", type=Path, default=None, metavar="FILE", help="also write Markdown")
    parser.add_argument(
        "--rootdir",
        type=Path,
        default=Path.cwd(),
        metavar="DIR",
        help="read [tool.gpubench.gate] from DIR/pyproject.toml (default: the current directory)",
    )
    parser.set_defaults(run=_run_compare)


# -- gpubench export -----------------------------------------------------------------------------


def _run_export(args: argparse.Namespace) -> int:
    from gpubench.baseline.sources import load_histories, newest_runs
    from gpubench.pytest_benchmark_export import pytest_benchmark_json

    results = [first for first, _ in newest_runs(load_histories(args.results))]
    args.output.write_text(json.dumps(pytest_benchmark_json(results), indent=1) + "\n")
    print(f"{args.output}: {len(results)} case(s) in pytest-benchmark's format")
    return 0


def _add_export_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write a run in another tool's format (pytest-benchmark)",
        description="Write the cases of RESULTS (a run directory, results.jsonl or baselines) "
        "as a pytest-benchmark saved run, which `pytest-benchmark compare` reads.",
    )
    parser.add_argument("results", type=Path, help="run dir, results file or baselines")
    parser.add_argument(
        "--format", choices=("pytest-benchmark",), default="pytest-benchmark", help="the format"
    )
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="FILE")
    parser.set_defaults(run=_run_export)


# -- the command line -----------------------------------------------------------------------------
_COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_profiles_command,
    _add_compare_command,
    _add_export_command,
)


def _explained_errors() -> tuple[type[Exception], ...]:
    from gpubench.baseline.rules import GateError
    from gpubench.baseline.sources import SourceError
    from gpubench.baseline.store import BaselineError

    return (ProfileError, GateError, SourceError, BaselineError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpubench",
        description="Declarative GPU training benchmarks (run them with pytest; "
        "this command inspects profiles and results).",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_command in _COMMANDS:
        add_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``gpubench`` command line; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) and usage errors (2): argparse already printed
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return int(args.run(args))
    except _explained_errors() as exc:
        print(f"gpubench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `gpubench profiles | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
