"""What ``gpubench report`` reads: run directories and results files, merged.

Each path is a run directory (``reports/<run-id>``, ``reports/latest``: its
``results.jsonl``, with the gate's ``verdicts.jsonl``, pytest's ``outcomes.jsonl``
and the recorded command line when they are there) or a results file
(``*.jsonl``). Several paths make one merged view: the shards of a matrix, or two
GPUs side by side. A path that is neither, or a file without one Result in it, is
a :class:`ReportInputError` naming the path and the problem.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from gpubench.baseline.compare import CaseVerdict
from gpubench.contracts.result import Result
from gpubench.storage import (
    OUTCOMES_FILE,
    RESULTS_FILE,
    VERDICTS_FILE,
    Invocation,
    NotAResultsFile,
    TestOutcome,
    read_invocation,
    read_json_lines,
    read_results_file,
)


class ReportInputError(ValueError):
    """A path that is not a run directory or a results file (the message says which)."""


@dataclass(frozen=True)
class LoadedRuns:
    results: tuple[Result, ...]
    verdicts: tuple[CaseVerdict, ...] = ()  # as the runs' gates wrote them
    invocations: tuple[Invocation, ...] = field(default_factory=tuple)
    outcomes: tuple[TestOutcome, ...] = ()  # pytest's outcome of each gpubench test


def load_runs(paths: Iterable[Path]) -> LoadedRuns:
    results: list[Result] = []
    verdicts: list[CaseVerdict] = []
    invocations: list[Invocation] = []
    outcomes: list[TestOutcome] = []
    for path in (Path(p) for p in paths):
        if path.is_dir():
            results_file = path / RESULTS_FILE
            if not results_file.is_file():
                raise ReportInputError(f"{path}: a directory without {RESULTS_FILE}: not a run")
            results += _results(results_file)
            if (path / VERDICTS_FILE).is_file():
                verdicts += read_json_lines(path / VERDICTS_FILE, CaseVerdict.from_dict, "verdict")
            if (path / OUTCOMES_FILE).is_file():
                outcomes += read_json_lines(path / OUTCOMES_FILE, TestOutcome.from_dict, "outcome")
            invocation = read_invocation(path)
            if invocation is not None:
                invocations.append(invocation)
        elif not path.exists():
            raise ReportInputError(f"{path}: no such file or directory")
        else:
            results += _results(path)
    return LoadedRuns(tuple(results), tuple(verdicts), tuple(invocations), tuple(outcomes))


def _results(path: Path) -> list[Result]:
    """The Results of one file; a file with none is refused (:func:`read_results_file`)."""
    try:
        return read_results_file(path, stacklevel=3)
    except NotAResultsFile as exc:
        raise ReportInputError(str(exc)) from None
