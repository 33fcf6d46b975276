"""``gpubench export``: a run in another tool's format (pytest-benchmark's saved run)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from gpubench.baseline.sources import load_histories, newest_runs
    from gpubench.contracts.protocol import write_text_atomic
    from gpubench.report.pytest_benchmark import pytest_benchmark_json
    from gpubench.storage import check_output_file

    check_output_file(args.output, "-o/--output")
    results = [first for first, _ in newest_runs(load_histories(args.results))]
    write_text_atomic(args.output, json.dumps(pytest_benchmark_json(results), indent=1) + "\n")
    print(f"{args.output}: {len(results)} case(s) in pytest-benchmark's format")
    return 0


def add_command(subparsers: argparse._SubParsersAction) -> None:
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
    parser.set_defaults(run=run)
