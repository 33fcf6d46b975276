"""Sharding and ``gpubench merge``: the slices of a collection are stable, balanced and
whole; shards run separately and merged equal the unsharded run; duplicates, shards of
different collections and missing shards or cases are named and nothing is written.

Unit tests work on saved results of the smoke suite (tests/data/gate); the end-to-end
test runs the smoke suite itself, three shards and the whole, each case answered by the
estimator (``--gpubench-estimate-only``: the same collection, results.jsonl and
invocation.json as a measured run, in seconds)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from gpubench.cli import EXIT_OK, EXIT_USAGE, main
from gpubench.contracts.result import Result
from gpubench.session.shard import Shard, parse_shard, select
from gpubench.storage import (
    INVOCATION_FILE,
    Invocation,
    ShardRecord,
    read_invocation,
    read_results,
    write_json_lines,
)

ROOT = Path(__file__).resolve().parent.parent
SMOKE = read_results(ROOT / "tests" / "data" / "gate" / "quiet-1.jsonl")
IDS = [str(r.nodeid) for r in SMOKE]


# -- the slice -----------------------------------------------------------------------------
def test_the_slices_are_whole_disjoint_balanced_and_order_free() -> None:
    slices = [select(Shard(i, 3), IDS).kept for i in (1, 2, 3)]
    assert sorted(id for s in slices for id in s) == sorted(IDS)  # none twice, none missing
    assert sorted(len(s) for s in slices) == [3, 3, 4]
    shuffled = IDS[:]
    random.Random(7).shuffle(shuffled)  # pytest-randomly's order
    assert [select(Shard(i, 3), shuffled).kept for i in (1, 2, 3)] == slices
    records = [select(Shard(i, 3), shuffled).record for i in (1, 2, 3)]
    assert len({(r.collection_digest, r.collection_size) for r in records}) == 1
    assert records[0].collection_size == 10


def test_other_tests_are_dealt_apart_and_go_no_go_runs_on_no_shard() -> None:
    others = ["t.py::test_a", "t.py::test_b"]
    gng = ["t.py::test_go_no_go[cpu]"]
    kept = [select(Shard(i, 2), IDS, others + gng, whole_matrix=gng).kept for i in (1, 2)]
    assert [len(set(others) & k) for k in kept] == [1, 1]
    assert not any(set(gng) & k for k in kept)
    # the record counts gpubench cases only; a case skipped at collection is not awaited
    record = select(Shard(1, 2), IDS, others, skipped=[sorted(IDS)[0]]).record
    assert record.collection_size == 10 and sorted(IDS)[0] not in record.cases


@pytest.mark.parametrize("text", ["1/3", "3/3", " 2/3 "])
def test_shard_values(text: str) -> None:
    assert str(parse_shard(text)) == text.strip()


@pytest.mark.parametrize("text", ["0/3", "4/3", "3", "1/0", "a/3", "-1/3", "1/3/4"])
def test_a_bad_shard_says_the_index_is_1_based(text: str) -> None:
    with pytest.raises(ValueError, match=r"INDEX from 1 to COUNT.*SLURM_ARRAY_TASK_ID"):
        parse_shard(text, "--gpubench-shard")


def test_an_invocation_without_a_shard_still_reads(tmp_path: Path) -> None:
    old = {"args": ["suites/", "--gpu-profile", "cpu"], "cwd": "/repo"}  # before issue 21
    (tmp_path / INVOCATION_FILE).write_text(json.dumps(old))
    invocation = read_invocation(tmp_path)
    assert invocation == Invocation(("suites/", "--gpu-profile", "cpu"), "/repo")
    record = select(Shard(2, 3), IDS).record
    sharded = Invocation(
        ("suites/", "--gpubench-shard", "2/3", "--gpubench-shard=2/3"), "/r", record
    )
    assert Invocation.from_dict(json.loads(json.dumps(sharded.to_dict()))) == sharded
    assert sharded.unsharded_args() == ("suites/",)


# -- merge, on saved results ---------------------------------------------------------------
def write_run(path: Path, results: list[Result], record: ShardRecord | None) -> Path:
    path.mkdir(parents=True)
    write_json_lines(path / "results.jsonl", [r.to_dict() for r in results])
    args = ("suites/test_cpu_smoke.py", "--gpu-profile", "cpu")
    if record is not None:
        args += ("--gpubench-shard", str(record))
    invocation = Invocation(args, str(ROOT), record)
    (path / INVOCATION_FILE).write_text(json.dumps(invocation.to_dict()))
    return path


def shards(tmp_path: Path, results: list[Result] = SMOKE, count: int = 3) -> list[Path]:
    runs = []
    for index in range(1, count + 1):
        selection = select(Shard(index, count), IDS)
        mine = [r for r in results if r.nodeid in selection.kept]
        runs.append(write_run(tmp_path / f"shard-{index}", mine, selection.record))
    return runs


def merge(*args: object) -> int:
    return main(["merge", *(str(a) for a in args)])


def test_three_shards_merge_into_the_whole_run_which_report_and_compare_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = shards(tmp_path)
    out = tmp_path / "merged"
    assert merge(*runs, "-o", out) == EXIT_OK
    assert "10 result(s) from shards 1/3, 2/3, 3/3 of a collection of 10 case(s)" in (
        capsys.readouterr().out
    )
    merged = read_results(out / "results.jsonl")
    assert sorted(str(r.nodeid) for r in merged) == sorted(IDS)
    invocation = read_invocation(out)
    assert invocation is not None
    assert invocation.args == ("suites/test_cpu_smoke.py", "--gpu-profile", "cpu")
    assert [str(m.shard) for m in invocation.merged] == ["1/3", "2/3", "3/3"]
    assert [m.path for m in invocation.merged] == [str(r) for r in runs]
    assert main(["report", str(out), "-o", str(tmp_path / "r.html")]) == EXIT_OK
    assert main(["compare", str(runs[0]), str(out)]) in (0, 1)  # judged, not refused
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def refused(capsys: pytest.CaptureFixture[str], tmp_path: Path, *runs: Path) -> str:
    before = sorted(p.name for p in tmp_path.iterdir())
    assert merge(*runs, "-o", tmp_path / "merged") == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gpubench merge: error: "), err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
    return err


def test_a_case_in_two_shards_is_a_duplicate_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = shards(tmp_path)
    stray = next(r for r in SMOKE if r.nodeid in select(Shard(1, 3), IDS).kept)
    with open(runs[1] / "results.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(stray.to_dict()) + "\n")
    err = refused(capsys, tmp_path, *runs)
    assert f"1 case(s) in two runs: {stray.nodeid} on cpu in {runs[0]} and {runs[1]}" in err
    # a rerun confirming a regression is another run of the case, not a duplicate
    with open(runs[0] / "results.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({**stray.to_dict(), "repeat": 1}) + "\n")
    assert "1 case(s) in two runs" in refused(capsys, tmp_path, *runs)


def test_shards_of_different_collections_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = shards(tmp_path / "a")
    fewer = [r for r in SMOKE if "learns" not in str(r.nodeid)]  # the suite lost a test
    index = 3
    selection = select(Shard(index, 3), [str(r.nodeid) for r in fewer])
    other = write_run(
        tmp_path / "b-3", [r for r in fewer if r.nodeid in selection.kept], selection.record
    )
    err = refused(capsys, tmp_path, runs[0], runs[1], other)
    assert "shards of different collections" in err
    assert "(10 cases, 3 shards)" in err and "(9 cases, 3 shards)" in err


def test_a_shard_given_twice_missing_or_mixed_with_a_whole_run_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = shards(tmp_path)
    assert "shard 2/3 given 2 times" in refused(capsys, tmp_path, runs[1], runs[1], runs[2])
    assert "shard(s) 2 of 3 missing" in refused(capsys, tmp_path, runs[0], runs[2])
    whole = write_run(tmp_path / "whole", SMOKE[:1], None)
    assert f"{whole}: not a shard" in refused(capsys, tmp_path, *runs, whole)


def test_a_shard_cut_short_is_named_and_merged_only_when_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = shards(tmp_path)
    lines = (runs[2] / "results.jsonl").read_text().splitlines()
    (runs[2] / "results.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    lost = json.loads(lines[-1])["nodeid"]
    err = refused(capsys, tmp_path, *runs)
    assert f"{runs[2]} (shard 3/3): no Result for 1 of its {len(lines)} case(s): {lost}" in err
    assert merge(*runs, "-o", tmp_path / "merged", "--allow-missing") == EXIT_OK
    assert "warning: " in capsys.readouterr().err
    assert len(read_results(tmp_path / "merged" / "results.jsonl")) == 9


def test_an_output_that_exists_or_an_input_that_is_no_run_is_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = shards(tmp_path)
    assert merge(*runs, "-o", runs[0]) == EXIT_USAGE
    assert "already exists and is not an empty folder" in capsys.readouterr().err
    assert merge(tmp_path / "nothing", "-o", tmp_path / "m") == EXIT_USAGE
    assert "not a run directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert merge(*runs, "-o", tmp_path / "empty") == EXIT_OK  # an empty folder is filled


# -- end to end: the smoke suite, sharded and whole ------------------------------------------
def run_smoke(workdir: Path, *args: str) -> Path:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(ROOT / "suites" / "test_cpu_smoke.py"),
         "--rootdir", str(ROOT), "--gpu-profile", "cpu", "--gpubench-estimate-only",
         "--gpubench-dir", str(workdir), "--gpubench-report", "none", "-p", "no:cacheprovider",
         "-q", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    return (workdir / "latest").resolve()


def test_three_shards_of_the_smoke_suite_merged_equal_the_unsharded_collection(
    tmp_path: Path,
) -> None:
    whole = run_smoke(tmp_path / "whole")
    runs = [run_smoke(tmp_path / f"shard-{i}", "--gpubench-shard", f"{i}/3") for i in (1, 2, 3)]
    assert main(["merge", *map(str, runs), "-o", str(tmp_path / "merged")]) == EXIT_OK
    merged = [r.nodeid for r in read_results(tmp_path / "merged" / "results.jsonl")]
    expected = [r.nodeid for r in read_results(whole / "results.jsonl")]
    assert len(merged) == len(set(merged)) == 10  # no case twice
    assert sorted(merged) == sorted(expected)  # none missing, none extra
    records = [read_invocation(run) for run in runs]
    assert all(r is not None and r.shard is not None for r in records)
    assert sum(len(r.shard.cases) for r in records if r and r.shard) == 10
