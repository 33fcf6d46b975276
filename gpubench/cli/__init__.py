"""The ``gpubench`` console script, one module per subcommand.

    gpubench profiles [--json] [--rootdir DIR] [--profiles-file FILE]
    gpubench compare OLD NEW [--threshold METRIC=VALUE,...] [--any-env] [--md FILE]
    gpubench export --format pytest-benchmark RESULTS -o FILE
    gpubench report RESULTS... [--baseline DIR] [-o report.html] [--md report.md]
    gpubench estimate --model M [--batch-size N ...] --profile NAME[:MEM][,...] [--json]

Each subcommand's module has ``add_command(subparsers)``, which adds its parser and
sets ``run`` to a function ``(args) -> exit code``; the options it shares with the
pytest plugin come from :mod:`gpubench.options`. Exit codes: 0 done, 1 a regression
(``compare``), 2 bad input gpubench can explain (a bad profile file, ...: one line
on stderr, like argparse's own usage errors).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from gpubench.cli import compare, estimate, export, profiles, report

COMMANDS = (profiles, compare, export, report, estimate)


def _explained_errors() -> tuple[type[Exception], ...]:
    from gpubench.baseline.rules import GateError
    from gpubench.baseline.sources import SourceError
    from gpubench.baseline.store import BaselineError
    from gpubench.contracts.errors import CaseError
    from gpubench.contracts.profiles import ProfileError
    from gpubench.report.load import ReportInputError
    from gpubench.report.projection import ProjectionError
    from gpubench.worker.models.built import ModelBuildError

    return (
        ProfileError,
        GateError,
        SourceError,
        BaselineError,
        ReportInputError,
        ProjectionError,
        CaseError,
        ModelBuildError,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpubench",
        description="Declarative GPU training benchmarks (run them with pytest; "
        "this command inspects profiles and results).",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_command(subparsers)
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
