"""``gpubench compare OLD NEW``: the gate's table for a run against a baseline or an earlier
run, offline, by the rules the pytest gate applies; exit 1 on a regression."""

from __future__ import annotations

import argparse
from pathlib import Path

from gpubench.options import ANY_ENV, ROOTDIR, THRESHOLD, add_cli_options


def run(args: argparse.Namespace) -> int:
    from gpubench.baseline.offline import judge_runs  # scipy, pandas: when judging
    from gpubench.baseline.rules import GateRules, gate_rules
    from gpubench.baseline.sources import load_histories
    from gpubench.baseline.table import format_verdicts, markdown_summary
    from gpubench.contracts.protocol import write_text_atomic

    # the thresholds each run recorded (its gate's) under --threshold; pyproject's for a
    # run that recorded none
    from gpubench.storage import check_output_file

    if args.md is not None:
        check_output_file(args.md, "--md")  # before the table, not after it
    rules = gate_rules(args.rootdir, None, GateRules(any_env=args.compare_any_env))
    old, new = load_histories(args.old), load_histories(args.new)
    verdicts = judge_runs(old, new, rules, overrides=args.threshold)
    print(format_verdicts(verdicts))
    if args.md is not None:
        write_text_atomic(args.md, markdown_summary(verdicts, title=f"{args.old} -> {args.new}"))
    regressed = [v for v in verdicts if v.regressed]
    print(f"\n{len(regressed)} of {len(verdicts)} case(s) regressed.")
    return 1 if regressed else 0


def add_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="compare a run with a baseline or an earlier run: the gate's table; exit 1 on a "
        "regression",
        description="Compare NEW (a run directory, results.jsonl, or baselines: the newest "
        "run of each case) with OLD (the same kinds: every run of each case is its history), "
        "by the rules the pytest gate uses. Exit 0: no regression; 1: a regression; 2: bad "
        "input (a path it cannot read, a file it cannot write); 3: an internal error "
        "(gpubench's defect, never a regression).",
    )
    parser.add_argument("old", type=Path, help="the baseline: run dir, results file, baselines")
    parser.add_argument("new", type=Path, help="the run to judge: run dir, results file, ...")
    add_cli_options(parser.add_argument, (THRESHOLD, ANY_ENV), argparse.ArgumentTypeError)
    parser.add_argument("--md", type=Path, default=None, metavar="FILE", help="also write Markdown")
    add_cli_options(parser.add_argument, (ROOTDIR,), argparse.ArgumentTypeError)
    parser.set_defaults(run=run)
