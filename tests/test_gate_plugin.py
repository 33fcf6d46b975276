"""The regression gate end to end: pytester runs a throw-away suite through pytest, saves a
baseline, reruns it unchanged (green), and again with the case made slower for real (red).

The case is a small model whose forward sleeps ``SLOWMODELS_DELAY_S`` seconds (20 ms unless
set): raising it is a code change that adds latency, measured as any other (the step's
wall-clock time), not a figure edited after the fact. The sleep dominates the step, so a
neighbouring xdist worker's load (which makes a bare millisecond step several times
slower) moves the unchanged runs by little; thresholds are wide all the same, and the
slowdown (300 ms) far wider. The workers run one torch thread (``OMP_NUM_THREADS=1``):
with a neighbour on the cores, several intra-op threads wait on each other at every
barrier and a millisecond of work takes tens.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

# numpy (under pandas) cannot be imported twice in one process: load the tables first
import gpubench.baseline.table  # noqa: F401
import gpubench.session.summary  # noqa: F401

pytest_plugins = ("pytester",)

SLOW_MODELS = """
import os
import time

import torch
from torch import nn


class TinyLM(nn.Module):
    vocab_size = 128

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(128, 64)
        self.mix = nn.Linear(64, 64)
        self.head = nn.Linear(64, 128)
        self.delay_s = float(os.environ.get("SLOWMODELS_DELAY_S", "0.02"))

    def forward(self, idx):
        if self.delay_s:
            time.sleep(self.delay_s)
        return self.head(torch.relu(self.mix(self.emb(idx))))


def make():
    return TinyLM()
"""

SUITE = """
import gpubench

CASE = dict(model="slowmodels:make", batch_size=8, seq_len=32, steps=10, warmup=2)


@gpubench.single_case(**CASE, gate={gate})
def test_speed(gpubench_result):
    assert gpubench_result.fits, gpubench_result.describe()
"""
WIDE = '{"tokens_per_s": 0.4, "host_rss": 0.3, "loss": 0.3}'


@pytest.fixture(autouse=True)
def one_torch_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(slowmodels=SLOW_MODELS, test_gated=SUITE.format(gate=WIDE))
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        "--gpu-profile", "cpu", "-p", "no:cacheprovider", "-q", *args, timeout=300
    )


def baseline_file(pytester: pytest.Pytester) -> Path:
    return pytester.path / "baselines" / "cpu" / "test_gated.json"


def gate_section(run: pytest.RunResult) -> list[str]:
    """The terminal's gate table: the lines after its heading, to the summary's path."""
    lines = run.stdout.lines
    start = next(i for i, line in enumerate(lines) if "gpubench gate (against baselines)" in line)
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("gate summary: "))
    return lines[start + 1 : end]


def compare_offline(pytester: pytest.Pytester, *args: str) -> subprocess.CompletedProcess[str]:
    """``gpubench compare ARGS`` in the suite's folder (a process of its own: scipy, which
    the comparison imports, cannot be imported again after pytester restores sys.modules)."""
    return subprocess.run(
        [sys.executable, "-m", "gpubench.cli", "compare", *args],
        capture_output=True,
        text=True,
        cwd=pytester.path,
        timeout=120,
        check=False,
    )


def test_a_real_slowdown_fails_the_build_and_noise_does_not(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "120")  # the gate's table keeps within it
    saved = run(suite, "--gpubench-save-baseline")
    saved.assert_outcomes(passed=1)
    saved.stdout.fnmatch_lines(
        ["*gpubench gate*", "NEW: slowmodels.make*: no baseline for this case yet"]
    )
    history = json.loads(baseline_file(suite).read_text())["cases"]
    assert [len(entry["history"]) for entry in history.values()] == [1]

    unchanged = run(suite)
    unchanged.assert_outcomes(passed=1)
    unchanged.stdout.fnmatch_lines(["*tokens_per_s*unchanged*"])

    monkeypatch.setenv("SLOWMODELS_DELAY_S", "0.3")  # every forward: 20 -> 300 ms
    slower = run(
        suite,
        "--junitxml=junit.xml",
        "--gpubench-benchmark-json=bench.json",
    )
    assert slower.ret == 1
    slower.assert_outcomes(failed=1)
    # the test's own 40 %, doubled for a one-run history, said as such wherever the verdict is
    applied = "40 % ×2 (one-run history) = 80 %"
    slower.stdout.fnmatch_lines(
        [
            "*regressed against its baseline*",
            f"*tokens_per_s: * -> * (-*%, threshold {applied}, p=*; steps vs the last baseline*",
        ]
    )
    table = gate_section(slower)
    assert table and max(len(line) for line in table) <= 120, table
    assert applied in " ".join(" ".join(table).split())
    summary = (suite.path / "reports" / "latest" / "summary.md").read_text()
    assert "regression" in summary and applied in summary
    verdicts = [
        json.loads(line)
        for line in (suite.path / "reports" / "latest" / "verdicts.jsonl").read_text().splitlines()
    ]
    gated = next(m for m in verdicts[-1]["metrics"] if m["metric"] == "tokens_per_s")
    assert gated["declared_threshold"] == 0.4 and gated["threshold"] == pytest.approx(0.8)
    assert gated["threshold_source"] == "test" and gated["decision"] == "regression"

    # offline, the same two runs get the same verdict by the same threshold (the run
    # recorded its gate's; before, `gpubench compare` applied its default 10 % x2 = 20 %)
    offline = compare_offline(suite, "baselines", "reports/latest")
    assert offline.returncode == 1 and "1 of 1 case(s) regressed." in offline.stdout, offline
    assert applied in " ".join(offline.stdout.split())
    assert max(len(line) for line in offline.stdout.splitlines()) <= 120
    overridden = compare_offline(
        suite, "baselines", "reports/latest", "--threshold", "tokens_per_s=0.45"
    )  # the command line overrides what the run recorded
    assert "45 % ×2 (one-run history) = 90 %" in " ".join(overridden.stdout.split())

    properties = {
        p.get("name"): p.get("value") for p in ET.parse(suite.path / "junit.xml").iter("property")
    }
    assert properties["gpubench_verdict"] == "regression"
    assert properties["gpubench_tokens_per_s_verdict"] == "regression"
    assert float(properties["gpubench_tokens_per_s_threshold"]) == pytest.approx(0.8)
    assert properties["gpubench_tokens_per_s_threshold_rule"] == applied
    assert float(properties["gpubench_tokens_per_s_change"]) < -0.8

    compared = subprocess.run(
        [sys.executable, "-m", "pytest_benchmark", "compare", str(suite.path / "bench.json")],
        capture_output=True,
        text=True,
        cwd=suite.path,
        timeout=120,
    )
    assert compared.returncode == 0, compared.stderr
    assert "test_speed" in compared.stdout

    # the baseline holds the saved run only: comparing never adds to it
    history = json.loads(baseline_file(suite).read_text())["cases"]
    assert [len(entry["history"]) for entry in history.values()] == [1]


def test_no_compare_and_a_baseline_from_elsewhere_fail_nothing(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(suite, "--gpubench-save-baseline").assert_outcomes(passed=1)
    monkeypatch.setenv("SLOWMODELS_DELAY_S", "0.3")
    run(suite, "--gpubench-no-compare").assert_outcomes(passed=1)

    data = json.loads(baseline_file(suite).read_text())
    for entry in data["cases"].values():
        for recorded in entry["history"]:
            recorded["environment"]["device"] = "Some Other CPU"  # recorded on another machine
    baseline_file(suite).write_text(json.dumps(data))
    elsewhere = run(suite)
    elsewhere.assert_outcomes(passed=1)
    elsewhere.stdout.fnmatch_lines(["*baseline from elsewhere (Some Other CPU*"])
    run(suite, "--gpubench-compare-any-env").assert_outcomes(failed=1)


def test_a_broken_baseline_stops_collection_and_stays(suite: pytest.Pytester) -> None:
    path = baseline_file(suite)
    path.parent.mkdir(parents=True)
    path.write_text('{"format": "gpubench-baseline", "version": 1, "cases": {')
    broken = run(suite, "--gpubench-save-baseline")
    assert broken.ret != 0
    broken.stdout.fnmatch_lines([f"*baseline {path}: not valid JSON, truncated?*"])
    assert path.read_text().endswith('"cases": {')


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--gpubench-threshold", "tokens_per_s=2"),
            "*tokens_per_s=2.0 must be a number in (0, 1)*",
        ),
        (("--gpubench-threshold", "speed=0.1"), "*'speed' is not a gated metric*"),
        (("--gpubench-baseline-history", "0"), "*--gpubench-baseline-history='0'*"),
    ],
)
def test_a_bad_gate_option_is_a_usage_error(
    suite: pytest.Pytester, args: tuple[str, ...], message: str
) -> None:
    result = run(suite, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_a_bad_gate_in_the_matrix_or_pyproject_is_refused_at_collection(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(slowmodels=SLOW_MODELS, test_gated=SUITE.format(gate='{"tokens_per_s": 5}'))
    result = run(pytester)
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*matrix(gate=...): tokens_per_s=5 must be a number in (0, 1)*"])

    pytester.makepyfile(test_gated=SUITE.format(gate=WIDE))
    pytester.makepyprojecttoml("[tool.gpubench.gate]\nloss = -1\n")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.INTERRUPTED  # a collection error: no case ran
    result.stdout.fnmatch_lines(["*tool.gpubench.gate?: loss=-1 must be a number in (0, 1)*"])
    assert "During handling" not in result.stdout.str()


def test_xdist_workers_save_into_one_baseline_and_write_one_summary(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(
        slowmodels=SLOW_MODELS,
        test_gated="""
import gpubench

@gpubench.matrix(model="slowmodels:make", batch_size=8, seq_len=32, steps=4, warmup=1,
                 seed=[1, 2, 3, 4])
def test_seeds(gpubench_result):
    assert gpubench_result.fits
""",
    )
    step_summary = pytester.path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step_summary))
    result = run(pytester, "-n", "2", "--gpubench-save-baseline")
    result.assert_outcomes(passed=4)
    cases = json.loads(baseline_file(pytester).read_text())["cases"]
    assert sorted(cases) == [f"slowmodels.make-fp32-s32-n4-seed{s}-warm1" for s in (1, 2, 3, 4)]
    summary = (pytester.path / "reports" / "latest" / "summary.md").read_text()
    rows = [line for line in summary.splitlines() if line.endswith("| new |")]
    assert len(rows) == 4 and summary in step_summary.read_text()
