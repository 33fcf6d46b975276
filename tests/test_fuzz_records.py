"""Any mutation of a valid record either loads or is skipped with a warning naming its file
and line, never a traceback (issue 18, finding 3): hypothesis deletes a key, adds one,
puts a random JSON value of another type in place of one (huge ints, NaN, infinities,
nesting too deep to parse, strings with control characters and unpaired surrogates),
cuts the line short or puts a byte that is not UTF-8 in it; the line is read between two
good ones from a results.jsonl and as the middle run of a baseline's history.
``test_defensive_reading.py`` holds one test per kind of bad value."""

from __future__ import annotations

import copy
import functools
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpubench.baseline.store import BaselineError, read_baseline
from gpubench.contracts.result import Result
from gpubench.storage import read_results

DATA = Path(__file__).parent / "data"
RECORDS = (  # a Result of each kind tests/data holds, as written (an old schema as it was)
    DATA / "result-v1-6ecbd18.json",
    DATA / "result-v2-c5105cf-oom.json",
    DATA / "result-v4-dc9760a-zero2-offopt.json",
)
DEEP = "__deep__"  # stands for an array nested deeper than json's parser recurses
DEPTH = 100_000
FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([10**400, -(10**400), 2**63, 2**64, -(2**63)])
    | st.floats()  # NaN and the infinities included
    | st.text(st.characters(blacklist_categories=()), max_size=8)  # control chars, surrogates
    | st.just(DEEP),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@functools.cache
def _record(index: int) -> dict[str, Any]:
    return json.loads(RECORDS[index].read_text(encoding="utf-8"))


def _places(value: Any, where: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The path of every value in ``value``, itself (``()``) first."""
    yield where
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, item in items:
        yield from _places(item, (*where, key))


@functools.cache
def _paths(index: int) -> tuple[tuple[Any, ...], ...]:
    return tuple(_places(_record(index)))[1:]


def _dumps(value: Any) -> bytes:
    text = json.dumps(value).encode()  # NaN and inf as Python's json writes them
    return text.replace(f'"{DEEP}"'.encode(), b"[" * DEPTH + b"]" * DEPTH)


def mutated(data: st.DataObject, index: int) -> bytes:
    """A record of tests/data changed once, as a line of bytes."""
    record = copy.deepcopy(_record(index))
    how = data.draw(st.sampled_from(["delete", "add", "replace", "cut", "byte"]), label="how")
    if how in ("delete", "add", "replace"):
        path = data.draw(st.sampled_from(_paths(index)), label="path")
        parent = record
        for key in path[:-1]:
            parent = parent[key]
        if how == "delete":
            del parent[path[-1]]
        elif how == "add" and isinstance(parent, dict):
            parent[data.draw(st.text(max_size=8), label="key")] = data.draw(JSON_VALUES)
        else:
            parent[path[-1]] = data.draw(JSON_VALUES, label="value")
        return _dumps(record)
    line = _dumps(record)
    at = data.draw(st.integers(1, len(line) - 1), label="at")
    if how == "cut":
        return line[:at]
    return line[:at] + bytes([data.draw(st.integers(0x80, 0xFF), label="byte")]) + line[at + 1 :]


def _good(index: int, run_id: str) -> bytes:
    return json.dumps({**_record(index), "run_id": run_id}).encode()


def _usable(result: Result) -> None:
    """What every reader of a loaded Result does with it."""
    result.describe()
    result.to_json()


@FUZZ
@given(data=st.data(), index=st.integers(0, len(RECORDS) - 1))
def test_a_mutated_result_line_loads_or_is_skipped_with_a_warning(
    tmp_path: Path, data: st.DataObject, index: int
) -> None:
    path = tmp_path / "results.jsonl"
    path.write_bytes(
        b"\n".join([_good(index, "a"), mutated(data, index), _good(index, "b")]) + b"\n"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = read_results(path)
    for result in results:
        _usable(result)
    if len(results) == 3:
        assert not caught
    else:
        assert [r.run_id for r in results] == ["a", "b"]
        [warning] = caught
        assert str(warning.message).startswith(f"{path}:2: skipped a line that is ")


@FUZZ
@given(data=st.data(), index=st.integers(0, len(RECORDS) - 1))
def test_a_mutated_baseline_run_loads_or_is_skipped_with_a_warning(
    tmp_path: Path, data: st.DataObject, index: int
) -> None:
    """The middle run of a case's three (line 3 of the file); damage that breaks the file's
    JSON (a cut, a byte outside a string) refuses the file by name instead."""
    case_id = Result.from_dict(_record(index)).case.id
    runs = [_good(index, "a"), mutated(data, index), _good(index, "b")]
    head = (
        f'{{"format": "gpubench-baseline", "version": 1, "cases": {{"{case_id}": {{"history": [\n'
    )
    path = tmp_path / "suite.json"
    path.write_bytes(head.encode() + b",\n".join(runs) + b"\n]}}}\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            baseline = read_baseline(path)
        except BaselineError as exc:
            assert str(exc).startswith(f"baseline {path}: ")
            return
    runs_read = [r for history in baseline.histories.values() for r in history]
    for result in runs_read:
        _usable(result)
    if len(runs_read) == 3:
        assert not caught
        return
    assert [r.run_id for r in runs_read] == ["a", "b"]
    [warning] = caught
    assert str(warning.message).startswith(f"{path}:3: skipped run 1 of case ")


@pytest.mark.parametrize("index", range(len(RECORDS)))
def test_the_records_the_fuzz_starts_from_load(tmp_path: Path, index: int) -> None:
    path = tmp_path / "results.jsonl"
    path.write_bytes(_good(index, "a") + b"\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [r.run_id for r in read_results(path)] == ["a"]
