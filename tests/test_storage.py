from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gpubench import make_case
from gpubench.contracts.profiles import resolve_profile
from gpubench.contracts.result import Result
from gpubench.storage import RunStore, new_run_id, read_results, unwritable_reason

CPU = resolve_profile("cpu")


def _result(status: str = "ok") -> Result:
    return Result(case=make_case(model="gpt-tiny"), profile=CPU, status=status)


def test_results_are_appended_and_latest_points_at_the_run(tmp_path: Path) -> None:
    store = RunStore(tmp_path, new_run_id())
    store.create()
    store.append(_result("ok"))
    store.append(_result("oom"))
    assert [r.status for r in store.read()] == ["ok", "oom"]
    latest = tmp_path / "latest"
    assert latest.is_symlink() and latest.resolve() == store.dir.resolve()
    second = RunStore(tmp_path, new_run_id() + "-b")
    second.create()
    assert latest.resolve() == second.dir.resolve()


def test_a_line_cut_short_by_a_killed_writer_loses_only_itself(tmp_path: Path) -> None:
    store = RunStore(tmp_path, "run")
    store.create()
    store.append(_result("ok"))
    with open(store.results_path, "a") as fh:
        fh.write('{"schema_version": 1, "case": {"mod')
    with pytest.warns(UserWarning, match=r"results.jsonl:2: skipped a line"):
        assert [r.status for r in read_results(store.results_path)] == ["ok"]
    # the next writer starts on a line of its own: its record is not glued to the fragment
    store.append(_result("oom"))
    with pytest.warns(UserWarning, match=r"results.jsonl:2: skipped a line"):
        assert [r.status for r in read_results(store.results_path)] == ["ok", "oom"]


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ('{"hello": 1}', "not a Result"),
        ("[1, 2]", "not a Result"),
        ('{"schema_version": 99}', "schema_version=99"),
    ],
)
def test_a_line_that_is_no_result_loses_only_itself(tmp_path: Path, line: str, why: str) -> None:
    store = RunStore(tmp_path, "run")
    store.create()
    store.append(_result("ok"))
    with open(store.results_path, "a") as fh:
        fh.write(line + "\n")
    record = _result("oom").to_dict()
    record["case"]["flags"]["fp4_magic"] = True  # a flag a newer gpubench knows
    with open(store.results_path, "a") as fh:
        fh.write(json.dumps(record) + "\n")
    store.append(_result("diverged"))
    with pytest.warns(UserWarning) as caught:
        assert [r.status for r in read_results(store.results_path)] == ["ok", "diverged"]
    messages = [str(w.message) for w in caught]
    assert "results.jsonl:2: skipped a line that is" in messages[0] and why in messages[0]
    assert "results.jsonl:3:" in messages[1] and "fp4_magic" in messages[1]


def test_appends_from_several_processes_interleave_whole_lines(tmp_path: Path) -> None:
    store = RunStore(tmp_path, "run")
    store.create()
    pids = []
    for _ in range(4):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            for _ in range(25):
                store.append(_result())
            os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    assert len(store.read()) == 100


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_a_latest_of_the_users_is_left_alone_with_a_warning(tmp_path: Path, kind: str) -> None:
    latest = tmp_path / "latest"
    if kind == "file":
        latest.write_text("my notes")
    else:
        latest.mkdir()
        (latest / "keep.txt").write_text("mine")
    store = RunStore(tmp_path, new_run_id())
    with pytest.warns(
        UserWarning, match=rf"latest is a {kind}, not gpubench's link.*left as it is"
    ):
        store.create()
    assert store.results_path.exists()  # the run itself goes on
    assert not latest.is_symlink()
    if kind == "file":
        assert latest.read_text() == "my notes"
    else:
        assert [p.name for p in latest.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ("file", "is a file, not a folder"),
        ("under-file", "is a file, not a folder"),
        ("dangling-link", "is a symbolic link to nothing"),
    ],
)
def test_a_reports_folder_no_run_could_write_is_named_before_any_is_made(
    tmp_path: Path, setup: str, reason: str
) -> None:
    (tmp_path / "blocker").write_text("")
    (tmp_path / "link").symlink_to(tmp_path / "nowhere" / "deeper")
    root = {
        "file": tmp_path / "blocker",
        "under-file": tmp_path / "blocker" / "reports",
        "dangling-link": tmp_path / "link" / "reports",
    }[setup]
    found = unwritable_reason(root)
    assert found is not None and reason in found
    assert unwritable_reason(tmp_path / "new" / "reports") is None
    assert not (tmp_path / "new").exists()  # checked, not created
