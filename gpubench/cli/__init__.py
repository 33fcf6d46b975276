"""The ``gpubench`` console script, one module per subcommand.

    gpubench profiles [--json] [--rootdir DIR] [--profiles-file FILE]
    gpubench compare OLD NEW [--threshold METRIC=VALUE,...] [--any-env] [--md FILE]
    gpubench export --format pytest-benchmark RESULTS -o FILE
    gpubench report RESULTS... [--baseline DIR] [-o report.html] [--md report.md]
    gpubench estimate --model M [--batch-size N ...] --profile NAME[:MEM][,...] [--json]
    gpubench merge RUN_DIR... -o DIR [--allow-missing]

Each subcommand's module has ``add_command(subparsers)``, which adds its parser and
sets ``run`` to a function ``(args) -> exit code``; the options it shares with the
pytest plugin come from :mod:`gpubench.options`.

Exit codes, one per meaning (a CI step reads them):

    0  done (no regression)
    1  a regression: ``compare`` only (``report --baseline`` shows the verdicts and exits
       0: the report renders, ``compare`` gates); nothing else returns 1
    2  usage or bad input gpubench can explain (an unknown option, a bad profile file,
       an output path that is a folder, a file it cannot read or write, runs ``merge``
       refuses to join): one line on stderr,
       like argparse's own usage errors
    3  an internal error, gpubench's defect: one line on stderr asking for a report; the
       traceback too with ``GPUBENCH_DEBUG=1``
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

from gpubench.cli import compare, estimate, export, merge, profiles, report

COMMANDS = (profiles, compare, export, report, estimate, merge)
EXIT_OK = 0
EXIT_REGRESSION = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
DEBUG_ENV = "GPUBENCH_DEBUG"  # set (to anything but "" or "0"): an internal error's traceback


def _explained_errors() -> tuple[type[Exception], ...]:
    from gpubench.baseline.rules import GateError
    from gpubench.baseline.sources import SourceError
    from gpubench.baseline.store import BaselineError
    from gpubench.contracts.errors import CaseError
    from gpubench.contracts.profiles import ProfileError
    from gpubench.merge import MergeError
    from gpubench.report.load import ReportInputError
    from gpubench.report.projection import ProjectionError
    from gpubench.storage import UnwritablePath
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
        UnwritablePath,
        MergeError,
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
    """Run the ``gpubench`` command line; returns the exit code (see the module's table)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) and usage errors (2): argparse already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return int(args.run(args))
    except _explained_errors() as exc:
        print(f"gpubench {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `gpubench profiles | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except OSError as exc:  # a file it cannot read or write: the path and why
        print(f"gpubench {args.command}: error: {_os_error(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # gpubench's defect: never read as a regression (exit 1)
        return _internal_error(args.command, exc)


def _os_error(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename is not None else ""
    return f"{where}{exc.strerror or exc}"


def _internal_error(command: str, exc: Exception) -> int:
    print(
        f"gpubench {command}: internal error ({type(exc).__name__}: {exc}); this is "
        f"gpubench's defect, please report it (with {DEBUG_ENV}=1 set for the traceback)",
        file=sys.stderr,
    )
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        traceback.print_exception(exc, file=sys.stderr)
    return EXIT_INTERNAL
