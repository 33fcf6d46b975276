"""``pytest -n 2 --gpu-profile cpu``: every worker's cases in one run directory and one
results file, none lost or run twice, counted against pytest's own collection; and a
shard under xdist records its slice (sent back by the workers, which collect) in
invocation.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import gpubench.session.collection
import gpubench.session.summary  # noqa: F401  (numpy cannot be imported twice: see test_plugin)

pytest_plugins = ("pytester",)
pytest.importorskip("xdist")

TINY = 'model="gpt-tiny", batch_size=4, seq_len=32, steps=3, warmup=1'
SUITE = f"""
import gpubench

@gpubench.matrix({TINY}, seed=[1, 2])
def test_seeds(gpubench_result):
    assert gpubench_result.fits

@gpubench.single_case({TINY}, grad_accum=2)
def test_accum(gpubench_result):
    assert gpubench_result.fits

def test_plain():
    pass
"""


def collected(pytester: pytest.Pytester, *args: str) -> list[str]:
    result = pytester.runpytest("--collect-only", "-q", "--gpu-profile", "cpu", *args)
    return [line for line in result.outlines if "::" in line]


def runs(pytester: pytest.Pytester) -> list[Path]:
    return [p for p in (pytester.path / "reports").iterdir() if p.name != "latest"]


def test_two_workers_write_one_run_with_every_case_once(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_scale=SUITE)
    cases = [c for c in collected(pytester) if "plain" not in c]
    assert len(cases) == 3
    result = pytester.runpytest("--gpu-profile", "cpu", "-n", "2", "--gpubench-report", "none")
    result.assert_outcomes(passed=4)
    (run,) = runs(pytester)
    assert [p.name for p in run.iterdir() if p.suffix == ".jsonl"].count("results.jsonl") == 1
    records = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert sorted(r["nodeid"] for r in records) == sorted(cases)  # none lost, none twice
    assert len({r["run_id"] for r in records}) == 1
    # pinning is for GPUs: on cpu no worker's case is given CUDA_VISIBLE_DEVICES
    assert not any("CUDA_VISIBLE_DEVICES" in r["environment"]["launch_env"] for r in records)


def test_a_shard_under_xdist_records_its_slice(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_scale=SUITE)
    cases = [c for c in collected(pytester) if "plain" not in c]
    result = pytester.runpytest(
        "--gpu-profile", "cpu", "-n", "2", "--gpubench-estimate-only", "--gpubench-shard", "2/2",
    )  # fmt: skip
    result.assert_outcomes(passed=1)  # 1 of the 3 cases; test_plain fell to shard 1
    (run,) = runs(pytester)
    invocation = json.loads((run / "invocation.json").read_text())
    shard = invocation["shard"]
    assert (shard["index"], shard["count"], shard["collection_size"]) == (2, 2, 3)
    records = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert sorted(r["nodeid"] for r in records) == shard["cases"]
    assert set(shard["cases"]) < set(cases)
