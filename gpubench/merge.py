"""Joining the run directories of a sharded collection into one run (``gpubench merge``).

Each shard (``pytest --gpubench-shard I/N`` on its own machine) wrote a run directory
whose invocation.json records its slice and the digest of the whole collection
(:class:`~gpubench.storage.ShardRecord`). :func:`plan_merge` reads the runs and lists
what keeps them from being one run: shards of different collections, a shard given twice
or missing, a case run in two of them (the same test, case, profile and rerun), a case
of a slice without a Result (a shard cut short). :func:`write_merge` writes the joined
run: ``results.jsonl``, ``verdicts.jsonl`` and ``outcomes.jsonl`` (when a run has them)
and an invocation.json naming the shards, whose command is theirs without the shard,
into a new folder that appears whole or not at all. ``gpubench report`` and
``gpubench compare`` read it as any run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gpubench.baseline.compare import CaseVerdict
from gpubench.contracts.protocol import write_json_atomic
from gpubench.contracts.result import Result
from gpubench.storage import (
    INVOCATION_FILE,
    OUTCOMES_FILE,
    RESULTS_FILE,
    VERDICTS_FILE,
    Invocation,
    MergedRun,
    NotAResultsFile,
    ShardRecord,
    TestOutcome,
    read_invocation,
    read_json_lines,
    read_results_file,
    unwritable_reason,
    write_json_lines,
)

SHOWN = 5  # cases named per problem; the rest counted


class MergeError(ValueError):
    """Runs that cannot be merged, or an output that cannot be written (the message says
    every problem found)."""


@dataclass(frozen=True)
class RunDir:
    """One run directory as read for a merge."""

    path: Path
    results: tuple[Result, ...]
    invocation: Invocation | None
    verdicts: tuple[CaseVerdict, ...] = ()
    outcomes: tuple[TestOutcome, ...] = ()

    @property
    def shard(self) -> ShardRecord | None:
        return self.invocation.shard if self.invocation is not None else None

    @property
    def name(self) -> str:
        return f"{self.path} (shard {self.shard})" if self.shard else str(self.path)


def read_run(path: Path) -> RunDir:
    """A run directory's records; MergeError for a path that is not one."""
    path = Path(path)
    if not path.is_dir():
        raise MergeError(f"{path}: not a run directory (expected a folder with {RESULTS_FILE})")
    try:
        results = read_results_file(path / RESULTS_FILE, stacklevel=3)
    except NotAResultsFile as exc:
        raise MergeError(str(exc)) from None
    verdicts: list[CaseVerdict] = []
    outcomes: list[TestOutcome] = []
    if (path / VERDICTS_FILE).is_file():
        verdicts = read_json_lines(path / VERDICTS_FILE, CaseVerdict.from_dict, "verdict")
    if (path / OUTCOMES_FILE).is_file():
        outcomes = read_json_lines(path / OUTCOMES_FILE, TestOutcome.from_dict, "outcome")
    return RunDir(path, tuple(results), read_invocation(path), tuple(verdicts), tuple(outcomes))


def result_key(result: Result) -> tuple[str, str, str, int]:
    """What a case's run is, across shards: its test, case, profile and rerun number."""
    return (result.nodeid or "", result.case.id, result.profile.name, result.repeat)


@dataclass
class MergePlan:
    runs: Sequence[RunDir]
    conflicts: list[str] = field(default_factory=list)  # never merged: mismatch, duplicates
    missing: list[str] = field(default_factory=list)  # merged with --allow-missing only

    def problems(self, allow_missing: bool) -> list[str]:
        return self.conflicts + ([] if allow_missing else self.missing)


def plan_merge(runs: Sequence[RunDir]) -> MergePlan:
    """What stands between ``runs`` and one run (:class:`MergePlan`)."""
    plan = MergePlan(runs)
    shards = [run for run in runs if run.shard is not None]
    if shards and len(shards) < len(runs):
        plain = ", ".join(str(run.path) for run in runs if run.shard is None)
        plan.conflicts.append(
            f"{plain}: not a shard (its invocation.json records no --gpubench-shard), merged "
            "with shards"
        )
    if shards:
        _check_collections(shards, plan)
    _check_duplicates(runs, plan)
    for run in shards:
        assert run.shard is not None
        answered = {r.nodeid for r in run.results}
        lost = [case for case in run.shard.cases if case not in answered]
        if lost:
            plan.missing.append(
                f"{run.name}: no Result for {len(lost)} of its {len(run.shard.cases)} case(s): "
                f"{_some(lost)} (the shard was cut short?)"
            )
    return plan


def _check_collections(shards: Sequence[RunDir], plan: MergePlan) -> None:
    collections: dict[tuple[str, int, int], list[RunDir]] = {}
    for run in shards:
        assert run.shard is not None
        shard = run.shard
        collections.setdefault(
            (shard.collection_digest, shard.collection_size, shard.count), []
        ).append(run)
    if len(collections) > 1:
        plan.conflicts.append(
            "shards of different collections (another suite, commit or option): "
            + "; ".join(
                f"{digest[:19]}... ({size} cases, {count} shards): "
                + ", ".join(str(run.path) for run in members)
                for (digest, size, count), members in collections.items()
            )
        )
        return
    by_index: dict[int, list[RunDir]] = {}
    for run in shards:
        assert run.shard is not None
        by_index.setdefault(run.shard.index, []).append(run)
    count = next(iter(collections))[2]
    for index, members in sorted(by_index.items()):
        if len(members) > 1:
            plan.conflicts.append(
                f"shard {index}/{count} given {len(members)} times: "
                + ", ".join(str(run.path) for run in members)
            )
    absent = [str(i) for i in range(1, count + 1) if i not in by_index]
    if absent:
        plan.missing.append(f"shard(s) {', '.join(absent)} of {count} missing")


def _check_duplicates(runs: Sequence[RunDir], plan: MergePlan) -> None:
    seen: dict[tuple[str, str, str, int], RunDir] = {}
    twice: list[str] = []
    for run in runs:
        for key in dict.fromkeys(result_key(r) for r in run.results):
            first = seen.setdefault(key, run)
            if first is not run:
                nodeid, case, profile, repeat = key
                rerun = f" rerun {repeat}" if repeat else ""
                twice.append(f"{nodeid or case} on {profile}{rerun} in {first.path} and {run.path}")
    if twice:
        plan.conflicts.append(f"{len(twice)} case(s) in two runs: {_some(twice)}")


def _some(items: Sequence[str]) -> str:
    shown = ", ".join(items[:SHOWN])
    return shown + (f" and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


def merged_invocation(runs: Sequence[RunDir]) -> Invocation | None:
    """The joined run's invocation.json: the shards' command without the shard (the
    command that runs the whole collection in one session), naming every run joined."""
    merged = tuple(
        MergedRun(
            str(run.path),
            tuple(dict.fromkeys(r.run_id for r in run.results if r.run_id)),
            run.shard,
            len(run.results),
        )
        for run in runs
    )
    first = next((run.invocation for run in runs if run.invocation is not None), None)
    if first is None:
        return Invocation((), os.getcwd(), merged=merged)
    return Invocation(first.unsharded_args(), first.cwd, merged=merged)


def check_output(out: Path) -> None:
    """MergeError unless ``out`` is a new folder (or an empty one) that can be written."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MergeError(f"-o/--output {out}: already exists and is not an empty folder")
    reason = unwritable_reason(out.parent)
    if reason is not None:
        raise MergeError(f"-o/--output {out}: {reason}")


def write_merge(runs: Sequence[RunDir], out: Path) -> None:
    """The joined run into ``out``, which appears whole or not at all: written in a
    temporary folder beside it, then renamed to ``out``."""
    out = Path(out)
    check_output(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        write_json_lines(tmp / RESULTS_FILE, _records(r for run in runs for r in run.results))
        verdicts = [v for run in runs for v in run.verdicts]
        if verdicts:
            write_json_lines(tmp / VERDICTS_FILE, _records(verdicts))
        outcomes = [o for run in runs for o in run.outcomes]
        if outcomes:
            write_json_lines(tmp / OUTCOMES_FILE, _records(outcomes))
        invocation = merged_invocation(runs)
        if invocation is not None:
            write_json_atomic(tmp / INVOCATION_FILE, invocation.to_dict(), indent=1)
        os.chmod(tmp, 0o777 & ~_umask())  # as mkdir makes a folder (mkdtemp: 0700)
        if out.exists():
            out.rmdir()  # empty (checked): rename puts the whole folder in its place
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _records(records: Iterable[Result | CaseVerdict | TestOutcome]) -> list[dict[str, object]]:
    return [record.to_dict() for record in records]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
