"""``gpubench merge RUN_DIR... -o DIR``: the run directories of a sharded collection
(``pytest --gpubench-shard I/N`` on each machine) joined into one run directory, which
``gpubench report`` and ``gpubench compare`` read as any run (:mod:`gpubench.merge`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from gpubench.merge import MergeError, check_output, plan_merge, read_run, write_merge

    check_output(args.output)  # before anything is read
    runs = [read_run(path) for path in args.runs]
    plan = plan_merge(runs)
    problems = plan.problems(args.allow_missing)
    if problems:
        raise MergeError("; ".join(problems) + "; nothing written")
    write_merge(runs, args.output)
    for problem in plan.missing:  # --allow-missing: said, not fatal
        print(f"gpubench merge: warning: {problem}", file=sys.stderr)
    results = sum(len(run.results) for run in runs)
    shards = [run.shard for run in runs if run.shard is not None]
    joined = (
        f"shards {', '.join(str(s) for s in sorted(shards, key=lambda s: s.index))} of a "
        f"collection of {shards[0].collection_size} case(s)"
        if shards
        else f"{len(runs)} run(s)"
    )
    print(f"{args.output}: {results} result(s) from {joined}")
    return 0


def add_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "merge",
        help="join the run directories of a sharded run (--gpubench-shard) into one",
        description="Join run directories, the shards of one collection (pytest "
        "--gpubench-shard I/N on each machine), into one run directory: results, verdicts, "
        "pytest's outcomes and an invocation.json naming the shards. Refused, with every "
        "problem named and nothing written: shards of different collections, a shard given "
        "twice, a case in two runs, and (unless --allow-missing) a missing shard or a case "
        "of a shard without a Result. Exit 0: written; 2: refused or bad input (a path "
        "that is not a run directory, an output folder that exists and is not empty); 3: "
        "an internal error.",
    )
    parser.add_argument("runs", type=Path, nargs="+", metavar="RUN_DIR", help="run directories")
    parser.add_argument(
        "-o", "--output", type=Path, required=True, metavar="DIR", help="the merged run (new)"
    )
    parser.add_argument(
        "--allow-missing",
        action="store_true",
        help="merge what is there when a shard or some of a shard's cases are missing "
        "(each one said on stderr)",
    )
    parser.set_defaults(run=run)
