"""Baseline files: ``<dir>/<profile>/<suite file stem>.json``, one entry per case id.

An entry keeps the last few runs of its case (``history``, oldest first), each
a whole Result (schema-versioned, read by :meth:`Result.from_dict`, so a
baseline keeps loading when the Result schema moves on): its per-step series,
summary metrics, environment fingerprint (git commit included) and date. The
comparison reads the spread between those runs (:mod:`gpubench.baseline.compare`).

Files are human-diffable (sorted keys, indented) and written atomically (a
temporary file, fsync, ``os.replace``) under an exclusive lock on a sibling
``.lock`` file, re-read inside the lock, so several pytest-xdist workers saving
at once lose nothing. A file that cannot be read is a :class:`BaselineError`
naming it and the problem, and is never overwritten.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpubench.contracts.result import Result

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

    def history(self, case_id: str) -> tuple[Result, ...]:
        return self.histories.get(case_id, ())


def read_baseline(path: Path) -> Baseline:
    """The baseline at ``path``; an empty one when the file does not exist."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Baseline(path, {})
    except OSError as exc:
        raise BaselineError(f"baseline {path}: cannot read it ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BaselineError(f"baseline {path}: not valid JSON, truncated? ({exc})") from None
    return Baseline(path, _histories(path, data))


def _histories(path: Path, data: Any) -> dict[str, tuple[Result, ...]]:
    if not isinstance(data, dict) or data.get("format") != BASELINE_FORMAT:
        raise BaselineError(
            f"baseline {path}: not a gpubench baseline (no format: {BASELINE_FORMAT!r})"
        )
    if data.get("version") != BASELINE_VERSION:
        raise BaselineError(
            f"baseline {path}: version {data.get('version')!r}; "
            f"this gpubench reads {BASELINE_VERSION}"
        )
    cases = data.get("cases")
    if not isinstance(cases, dict):
        raise BaselineError(f"baseline {path}: 'cases' must map case ids to entries")
    histories = {}
    for case_id, entry in cases.items():
        runs = entry.get("history") if isinstance(entry, dict) else None
        if not isinstance(runs, list):
            raise BaselineError(f"baseline {path}: case {case_id!r} has no 'history' list")
        try:
            histories[case_id] = tuple(Result.from_dict(run) for run in runs)
        except (ValueError, TypeError, KeyError) as exc:
            raise BaselineError(f"baseline {path}: case {case_id!r}: {exc}") from None
        wrong = [r.case.id for r in histories[case_id] if r.case.id != case_id]
        if wrong:
            raise BaselineError(f"baseline {path}: entry {case_id!r} holds a run of {wrong[0]!r}")
    return histories


def save_runs(path: Path, results: Iterable[Result], history: int = DEFAULT_HISTORY) -> None:
    """Add each result to its case's history in the file at ``path`` (created if missing),
    keeping the last ``history`` runs; a run already there (same run id) is replaced."""
    if history < 1:
        raise ValueError(f"history={history!r} must be at least 1")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        histories = {k: list(v) for k, v in read_baseline(path).histories.items()}
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
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _write_atomic(path: Path, document: Mapping[str, Any]) -> None:
    """Sorted keys, one level per line: a reviewer reads a baseline's diff."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(document, fh, sort_keys=True, indent=1, allow_nan=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
