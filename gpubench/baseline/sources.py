"""What ``gpubench compare OLD NEW`` reads: run directories, results files, baselines.

Any of them becomes histories of runs per (profile, case id), oldest first:

- a run directory (``reports/<run-id>``, ``reports/latest``): its results.jsonl;
- a results file (``results.jsonl``): each Result is a one-run history;
- a baseline directory (``baselines/``, or one profile's folder): every
  ``<profile>/<suite>.json`` in it, merged;
- a baseline file (``baselines/cpu/test_cpu_smoke.json``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from gpubench.baseline.compare import representative
from gpubench.baseline.store import read_baseline
from gpubench.contracts.result import Result
from gpubench.storage import RESULTS_FILE, NotAResultsFile, read_results_file

Histories = dict[tuple[str, str], list[Result]]  # (profile, case id) -> runs, oldest first


class SourceError(ValueError):
    """A path that is no run directory, results file or baseline (the message says which)."""


def load_histories(path: Path) -> Histories:
    """The runs at ``path`` per (profile, case id); SourceError or BaselineError (a broken
    baseline file, named with its problem) when it cannot be read."""
    path = Path(path)
    if path.is_dir():
        if (path / RESULTS_FILE).is_file():
            return group_histories(_read_results(path / RESULTS_FILE))
        baselines = sorted(path.rglob("*.json"))
        if not baselines:
            raise SourceError(
                f"{path}: no {RESULTS_FILE} and no baseline files (<profile>/<suite>.json) in it"
            )
        return group_histories(r for f in baselines for r in _baseline_runs(f))
    if not path.exists():
        raise SourceError(f"{path}: no such file or directory")
    if path.suffix == ".jsonl":
        return group_histories(_read_results(path))
    if path.suffix == ".json":
        return group_histories(_baseline_runs(path))
    raise SourceError(
        f"{path}: not a results file (*.jsonl), a run directory or a gpubench baseline (*.json)"
    )


def merged_histories(paths: Iterable[Path]) -> Histories:
    """The runs at every path (:func:`load_histories`), merged per (profile, case id),
    oldest first: several baselines, or the shards of a run, as one history."""
    return group_histories(
        run for path in paths for runs in load_histories(path).values() for run in runs
    )


def newest_runs(histories: Histories) -> list[tuple[Result, list[Result]]]:
    """The newest run of each history with its confirmation reruns (``repeat`` > 0 of the
    same run id): what a set of runs says now."""
    newest = []
    for runs in histories.values():
        if not runs:
            continue
        run_id = runs[-1].run_id
        same = [r for r in runs if r.run_id == run_id] if run_id else [runs[-1]]
        first = next((r for r in same if r.repeat == 0), same[0])
        newest.append((first, [r for r in same if r is not first]))
    return newest


def one_per_run(runs: list[Result]) -> list[Result]:
    """A history with one run per run id: confirmation reruns of one session are not runs of
    their own (they share its machine's moment); the median one stands for them."""
    sessions: dict[str | None, list[Result]] = {}
    for result in runs:
        key = result.run_id if result.run_id is not None else str(id(result))
        sessions.setdefault(key, []).append(result)
    return [representative(same) for same in sessions.values()]


def _read_results(path: Path) -> list[Result]:
    try:
        return read_results_file(path, stacklevel=3)
    except NotAResultsFile as exc:
        raise SourceError(str(exc)) from None


def _baseline_runs(path: Path) -> list[Result]:
    return [r for runs in read_baseline(path).histories.values() for r in runs]


def group_histories(results: Iterable[Result]) -> Histories:
    """Runs per (profile, case id), oldest first."""
    histories: Histories = {}
    for result in results:
        histories.setdefault((result.profile.name, result.case.id), []).append(result)
    for runs in histories.values():
        runs.sort(key=lambda r: r.started_at)
    return histories
