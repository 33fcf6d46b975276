"""``gpubench report RUN...``: the report a pytest run writes at its end, rendered offline
from run directories or results files (merged), judged against a baseline if asked."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gpubench.options import (
    ANY_ENV,
    PROJECTION,
    ROOTDIR,
    SAFETY_MARGIN,
    TENSORBOARD,
    THRESHOLD,
    add_cli_options,
)
from gpubench.report.projection import PROJECTION_OPTIONS, ProjectionInputs, pyproject_projection


def run(args: argparse.Namespace) -> int:
    # the report's renderers (pandas, matplotlib, jinja2) load only when one is rendered
    from gpubench.baseline.offline import judge_runs
    from gpubench.baseline.rules import GateRules, gate_rules
    from gpubench.baseline.sources import Histories, group_histories, merged_histories
    from gpubench.report.document import ReportData
    from gpubench.report.load import load_runs
    from gpubench.report.write import write_report

    _check_outputs(args)  # before anything is read or written
    runs = load_runs(args.results)
    projection = ProjectionInputs.merged(
        pyproject_projection(args.rootdir),
        **{key: getattr(args, key) for key in PROJECTION_OPTIONS},
    )
    verdicts = list(runs.verdicts)
    histories: Histories = {}
    if args.baseline:  # judged here, by the gate's rules, against that baseline
        histories = merged_histories(args.baseline)
        rules = gate_rules(args.rootdir, None, GateRules(any_env=args.compare_any_env))
        new = group_histories(runs.results)
        verdicts = judge_runs(histories, new, rules, overrides=args.threshold)
    data = ReportData(
        results=runs.results,
        verdicts=verdicts,
        histories=histories,
        invocations=runs.invocations,
        projection=projection,
        safety_margin=args.safety_margin,
        outcomes=runs.outcomes,
    )
    written = write_report(data, args.output, args.md)
    for path in written.paths:
        print(path)
    if args.tensorboard is not None:
        from gpubench.report.tensorboard import TensorBoardMissing, export_tensorboard

        try:
            export_tensorboard(runs.results, args.tensorboard)
            print(args.tensorboard)
        except TensorBoardMissing as exc:
            print(f"gpubench report: {exc}", file=sys.stderr)
    return 0


def _check_outputs(args: argparse.Namespace) -> None:
    """UnwritablePath naming the option when an output cannot be written: a folder where
    the file goes (``-o DIR``), a folder that is not there or not writable, or the page
    and the Markdown at one path."""
    from gpubench.storage import UnwritablePath, check_output_file

    check_output_file(args.output, "-o/--output")
    if args.md is not None:
        check_output_file(args.md, "--md")
        if args.md.absolute() == args.output.absolute():
            raise UnwritablePath(f"--md {args.md}: the HTML page's path too (-o); give two paths")


def add_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="render a run's report (HTML, Markdown, recommended.json) from its results",
        description="Render the report a pytest run writes at its end, offline, from one or "
        "more run directories or results files (merged: the shards of a matrix, or two GPUs "
        "side by side). Exit 0: written, whatever the verdicts (`gpubench compare` gates); 2: "
        "bad input (a path that is not a run or results file, an output path that is a "
        "folder or cannot be written); 3: an internal error.",
    )
    parser.add_argument("results", type=Path, nargs="+", help="run directories or results.jsonl")
    parser.add_argument(
        "--baseline",
        type=Path,
        nargs="+",
        default=None,
        metavar="DIR",
        help="compare with this baseline (baselines/, run directories or results files, "
        "merged) by the gate's rules (--threshold, --any-env); default: the verdicts the "
        "runs' own gates wrote",
    )
    parser.add_argument(
        "-o", "--output", type=Path, default=Path("report.html"), metavar="HTML", help="the page"
    )
    parser.add_argument("--md", type=Path, default=None, metavar="FILE", help="also Markdown")
    shared = (*PROJECTION, SAFETY_MARGIN, THRESHOLD, ANY_ENV, TENSORBOARD, ROOTDIR)
    add_cli_options(parser.add_argument, shared, argparse.ArgumentTypeError)
    parser.set_defaults(run=run)
