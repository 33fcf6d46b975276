"""Baseline files: one entry per case, a bounded history, atomic and safe under concurrent
savers, and a clear refusal of a file that is not a baseline."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from gpubench.baseline.rules import GateError, check_thresholds, parse_thresholds
from gpubench.baseline.store import (
    BaselineError,
    baseline_path,
    read_baseline,
    save_runs,
    suite_name,
)
from gpubench.contracts.result import Result

V1 = Path(__file__).parent / "data" / "result-v1-6ecbd18.json"


def run(run_id: str, case_name: str | None = None) -> Result:
    """The real gpt-tiny Result of tests/data, as the run ``run_id`` of ``case_name``."""
    result = Result.from_json(V1.read_text())
    case = result.case.replace(name=case_name) if case_name else result.case
    return dataclasses.replace(result, run_id=run_id, case=case)


def test_paths_name_profile_and_suite(tmp_path: Path) -> None:
    assert suite_name("suites/test_cpu_smoke.py::test_x[a-cpu]") == "test_cpu_smoke"
    assert baseline_path(tmp_path, "cpu", "test_cpu_smoke") == tmp_path / "cpu/test_cpu_smoke.json"


def test_a_missing_baseline_is_empty(tmp_path: Path) -> None:
    assert read_baseline(tmp_path / "none.json").history("anything") == ()


def test_history_keeps_the_last_runs_oldest_first(tmp_path: Path) -> None:
    path = tmp_path / "cpu" / "suite.json"
    for i in range(7):
        save_runs(path, [run(f"r{i}")], history=5)
    history = read_baseline(path).history(run("x").case.id)
    assert [r.run_id for r in history] == ["r2", "r3", "r4", "r5", "r6"]
    save_runs(path, [run("r6")], history=5)  # the same run again replaces, never doubles
    assert len(read_baseline(path).history(run("x").case.id)) == 5


def test_the_file_is_sorted_indented_and_one_entry_per_case(tmp_path: Path) -> None:
    path = tmp_path / "suite.json"
    save_runs(path, [run("r1", "b-case"), run("r1", "a-case")])
    text = path.read_text()
    data = json.loads(text)
    assert list(data["cases"]) == ["a-case", "b-case"]
    assert data["format"] == "gpubench-baseline" and data["version"] == 1
    assert text.count("\n") > 100 and text.endswith("\n")  # a reviewer reads its diff
    assert not list(tmp_path.glob(".*.tmp"))


def test_concurrent_savers_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "cpu" / "suite.json"
    pids = []
    for worker in range(4):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            for i in range(5):
                save_runs(path, [run(f"w{worker}-{i}", f"case-{worker}")], history=10)
            os._exit(0)
        pids.append(pid)
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        assert status == 0
    baseline = read_baseline(path)
    assert sorted(baseline.histories) == [f"case-{w}" for w in range(4)]
    assert all(len(runs) == 5 for runs in baseline.histories.values())


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"format": "gpubench-baseline", "version": 1, "cases": {"a": {"hist', "truncated"),
        ("[1, 2]", "not a gpubench baseline"),
        ('{"format": "gpubench-baseline", "version": 9, "cases": {}}', "version 9"),
        ('{"format": "gpubench-baseline", "version": 1, "cases": {"a": {}}}', "no 'history'"),
        # a run that cannot be read costs only itself: tests/test_defensive_reading.py
    ],
)
def test_a_broken_baseline_is_named_and_never_overwritten(
    tmp_path: Path, content: str, problem: str
) -> None:
    path = tmp_path / "cpu" / "suite.json"
    path.parent.mkdir()
    path.write_text(content)
    with pytest.raises(BaselineError, match=problem) as info:
        read_baseline(path)
    assert str(path) in str(info.value)
    with pytest.raises(BaselineError):
        save_runs(path, [run("r1")])
    assert path.read_text() == content


def test_an_entry_must_hold_its_own_case(tmp_path: Path) -> None:
    path = tmp_path / "suite.json"
    save_runs(path, [run("r1", "a-case")])
    data = json.loads(path.read_text())
    data["cases"]["other-case"] = data["cases"].pop("a-case")
    path.write_text(json.dumps(data))
    with pytest.raises(BaselineError, match="'other-case' holds a run of 'a-case'"):
        read_baseline(path)


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"tokens_per_s": 1.5}, r"tokens_per_s=1.5 must be a number in \(0, 1\)"),
        ({"tokens_per_s": 0}, "must be a number in"),
        ({"tokens_per_s": "fast"}, "must be a number in"),
        ({"tokens_per_s": True}, "must be a number in"),
        ({"speed": 0.1}, "'speed' is not a gated metric; valid: tokens_per_s, peak_memory"),
    ],
)
def test_a_bad_threshold_is_refused_by_name(values: dict, problem: str) -> None:
    with pytest.raises(GateError, match=problem):
        check_thresholds(values, "here")


def test_thresholds_parse_from_the_command_line() -> None:
    assert parse_thresholds("tokens_per_s=0.05, peak_memory=0.03") == {
        "tokens_per_s": 0.05,
        "peak_memory": 0.03,
    }
    with pytest.raises(GateError, match="expected METRIC=VALUE"):
        parse_thresholds("tokens_per_s")
    with pytest.raises(GateError, match="loss='x' must be"):
        parse_thresholds("loss=x")
