"""Baseline files: ``<dir>/<profile>/<suite file stem>.json``, one entry per case id.

An entry keeps the last few runs of its case (``history``, oldest first), each
a whole Result (schema-versioned, read by :meth:`Result.from_dict`, so a
baseline keeps loading when the Result schema moves on): its per-step series,
summary metrics, environment fingerprint (git commit included) and date. The
comparison reads the spread between those runs (:mod:`gpubench.baseline.compare`).

Files are human-diffable (sorted keys, indented) and written atomically
(:func:`~gpubench.contracts.protocol.write_json_atomic`) under an exclusive lock on a sibling
``.lock`` file, re-read inside the lock, so several pytest-xdist workers saving
at once lose nothing. A file that cannot be read is a :class:`BaselineError`
naming it and the problem, and is never overwritten.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpubench.contracts.protocol import write_json_atomic
from gpubench.contracts.result import Result
from gpubench.contracts.schema import (
    READ_ERRORS,
    SchemaError,
    located_lines,
    parse_json,
)
from gpubench.contracts.text import safe_text
from gpubench.locking import lock_exclusive

BASELINE_FORMAT = "gpubench-baseline"
BASELINE_VERSION = 1
DEFAULT_HISTORY = 5  # runs an entry keeps
DEFAULT_BASELINE_DIR = "baselines"


class BaselineError(ValueError):
    """A baseline file gpubench cannot read (its path and the problem are in the message)."""


def suite_name(nodeid: str | None) -> str:
    """The suite a test belongs to: the stem of its file (``test_cpu_smoke``)."""
    path = (nodeid or "").split("::", 1)[0]
    return Path(path).stem or "unknown"


def baseline_path(root: Path, profile: str, suite: str) -> Path:
    return Path(root) / profile / f"{suite}.json"


@dataclass(frozen=True)
class Baseline:
    """One baseline file: the history of each case id (oldest run first)."""

    path: Path
    histories: Mapping[str, tuple[Result, ...]]
    # the runs of the file that could not be read, each "<file>:<line>: why": left out of
    # the histories; a file with any is never saved over (save_runs)
    skipped: tuple[str, ...] = ()

    def history(self, case_id: str) -> tuple[Result, ...]:
        return self.histories.get(case_id, ())


def read_baseline(path: Path) -> Baseline:
    """The baseline at ``path``; an empty one when the file does not exist.

    A file that is not a baseline (not JSON, nested too deeply to parse, another format
    or version) is a BaselineError naming it. A run in it that this gpubench cannot read
    (a value of the wrong type, NaN, a newer schema, bytes that are not UTF-8 in its
    text) costs only itself: it is left out with a warning naming the file, the line it
    starts on and why, and the case is judged by its other runs.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Baseline(path, {})
    except OSError as exc:
        raise BaselineError(f"baseline {path}: cannot read it ({exc})") from None
    text = raw.decode("utf-8", "surrogateescape")  # a bad byte costs the run it is in
    try:
        data = parse_json(text, allow_nan=True)  # a NaN costs the run it is in
    except SchemaError as exc:
        why = str(exc).replace("not a whole JSON record", "not valid JSON, truncated?")
        raise BaselineError(safe_text(f"baseline {path}: {why}")) from None
    histories, skipped = _histories(path, data)
    if skipped:
        lines = located_lines(text, [("cases", case_id, "history", i) for case_id, i, _ in skipped])
        messages = tuple(
            safe_text(f"{path}:{line or '?'}: skipped run {i} of case {case_id!r}: {why}")
            for (case_id, i, why), line in zip(skipped, lines, strict=True)
        )
        for message in messages:
            warnings.warn(message, stacklevel=2)
        return Baseline(path, histories, messages)
    return Baseline(path, histories)


def _histories(
    path: Path, data: Any
) -> tuple[dict[str, tuple[Result, ...]], list[tuple[str, int, str]]]:
    """The histories of a parsed baseline, and (case id, index, why) of each run refused."""
    if not isinstance(data, dict) or data.get("format") != BASELINE_FORMAT:
        raise BaselineError(
            f"baseline {path}: not a gpubench baseline (no format: {BASELINE_FORMAT!r})"
        )
    if data.get("version") != BASELINE_VERSION:
        raise BaselineError(
            safe_text(
                f"baseline {path}: version {data.get('version')!r}; "
                f"this gpubench reads {BASELINE_VERSION}"
            )
        )
    cases = data.get("cases")
    if not isinstance(cases, dict):
        raise BaselineError(f"baseline {path}: 'cases' must map case ids to entries")
    histories = {}
    skipped = []
    for case_id, entry in cases.items():
        runs = entry.get("history") if isinstance(entry, dict) else None
        if not isinstance(runs, list):
            raise BaselineError(
                safe_text(f"baseline {path}: case {case_id!r} has no 'history' list")
            )
        read = []
        for i, run in enumerate(runs):
            try:
                read.append(Result.from_dict(run))
            except READ_ERRORS as exc:
                skipped.append((case_id, i, f"{type(exc).__name__}: {exc}"))
        histories[case_id] = tuple(read)
        wrong = [r.case.id for r in read if r.case.id != case_id]
        if wrong:
            raise BaselineError(
                safe_text(f"baseline {path}: entry {case_id!r} holds a run of {wrong[0]!r}")
            )
    return histories, skipped


def unsaved_reason(baseline: Baseline) -> str:
    """Why a run is not saved into ``baseline``: it holds runs this gpubench cannot read,
    which saving over it would lose."""
    return (
        f"baseline {baseline.path}: not saved over, it holds {len(baseline.skipped)} run(s) "
        f"this gpubench cannot read (fix or remove them): {'; '.join(baseline.skipped)}"
    )


def save_runs(path: Path, results: Iterable[Result], history: int = DEFAULT_HISTORY) -> None:
    """Add each result to its case's history in the file at ``path`` (created if missing),
    keeping the last ``history`` runs; a run already there (same run id) is replaced."""
    if history < 1:
        raise ValueError(f"history={history!r} must be at least 1")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        baseline = read_baseline(path)
        if baseline.skipped:  # saving over it would lose the runs this gpubench cannot read
            raise BaselineError(unsaved_reason(baseline))
        histories = {k: list(v) for k, v in baseline.histories.items()}
        for result in results:
            runs = [r for r in histories.get(result.case.id, []) if not _same_run(r, result)]
            histories[result.case.id] = [*runs, result][-history:]
        _write_atomic(path, _document(histories))


def _same_run(a: Result, b: Result) -> bool:
    return a.run_id is not None and a.run_id == b.run_id


def _document(histories: Mapping[str, list[Result]]) -> dict[str, Any]:
    return {
        "format": BASELINE_FORMAT,
        "version": BASELINE_VERSION,
        "cases": {
            case_id: {"history": [r.to_dict() for r in runs]}
            for case_id, runs in sorted(histories.items())
        },
    }


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``<path>.lock`` (not the file itself: it is replaced, not edited)."""
    lock = path.with_name(path.name + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        lock_exclusive(fd, lock)  # a bounded wait that names the holder
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _write_atomic(path: Path, document: Mapping[str, Any]) -> None:
    """Sorted keys, one level per line: a reviewer reads a baseline's diff."""
    write_json_atomic(path, document, indent=1)
