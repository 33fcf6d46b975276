"""A suite is red for a defect or a regression, never for its answer: a case that does not
fit is an expected failure with the reason, a go/no-go test decides the suite's question
once every case has run (under pytest-xdist too), and pytest's outcome of each test is
recorded beside the Result so the report says what pytest said."""

from __future__ import annotations

import json

import pytest

# numpy (under pandas) cannot be imported twice in one process: load the tables first
import gpubench.baseline.table  # noqa: F401
import gpubench.session.summary  # noqa: F401
from gpubench import make_case
from gpubench.contracts.profiles import resolve_profile
from gpubench.contracts.result import ErrorInfo, Metrics, Result, Stats
from gpubench.contracts.units import GiB
from gpubench.outcomes import assert_healthy, fit_finding

pytest_plugins = ("pytester",)

PROFILE = resolve_profile("rtx3060")  # 12 GiB


def planted(status: str, peak: int | None = None, **changes: object) -> Result:
    metrics = Metrics(
        loss_start=5.0,
        loss_end=4.0,
        peak_allocated_bytes=peak,
        peak_reserved_bytes=peak,
        step_time_s=Stats.of([0.1, 0.1, 0.1]),
    )
    fields = {"case": make_case(model="gpt-mini"), "profile": PROFILE, "status": status}
    return Result(**{**fields, "metrics": metrics, **changes})  # type: ignore[arg-type]


def test_a_defect_is_an_assertion_and_a_finding_is_not() -> None:
    assert_healthy(planted("ok", 4 * GiB))
    assert_healthy(planted("oom"))  # not fitting is an answer, not a defect
    for status in ("crashed", "timeout", "diverged"):
        with pytest.raises(AssertionError, match=status):
            assert_healthy(planted(status, error=ErrorInfo(type="X", message="m")))
    with pytest.raises(AssertionError, match="MFU"):
        assert_healthy(planted("ok", 4 * GiB, implausible=["MFU 130 % is above the peak"]))
    rising = Metrics(loss_start=4.0, loss_end=5.0, step_time_s=Stats.of([0.1, 0.1]))
    with pytest.raises(AssertionError, match="loss did not fall"):
        assert_healthy(planted("ok", metrics=rising))
    random_data = make_case(model="gpt-mini", data="random")
    assert_healthy(planted("ok", case=random_data, metrics=rising))  # nothing to learn


def test_the_fit_findings() -> None:
    assert fit_finding(planted("ok", 4 * GiB), PROFILE, 2 * GiB) is None
    assert "does not fit" in str(fit_finding(planted("oom"), PROFILE))
    assert "above the capacity" in str(fit_finding(planted("over_capacity", 13 * GiB), PROFILE))
    under = fit_finding(planted("ok", 11 * GiB), PROFILE, 2 * GiB)
    assert under is not None and "1.0 GiB free of 12.0 GiB, under the 2.0 GiB margin" in under
    assert fit_finding(planted("crashed"), PROFILE) is None  # a defect, not a finding


MODELS = """
import os

import torch
from torch import nn


class TinyLM(nn.Module):
    vocab_size = 128

    def __init__(self, width):
        super().__init__()
        self.emb = nn.Embedding(128, width)
        self.head = nn.Linear(width, 128)

    def forward(self, idx):
        return self.head(self.emb(idx))


def small():
    return TinyLM(32)


def grows():
    # GROW=1 makes the same case a model far past the cap: fitted before, not now
    return TinyLM(32 if not os.environ.get("GROW") else 200_000)
"""

SUITE = """
import pytest

import gpubench

CASES = gpubench.matrix(
    model=["models:small", "models:grows"], batch_size=4, seq_len=16, steps=3, warmup=1,
    data="random",
)


@CASES
def test_case(gpubench_result, gpubench_profile):
    gpubench.assert_healthy(gpubench_result)
    gpubench.xfail_unless_fits(gpubench_result, gpubench_profile)


@gpubench.go_no_go(CASES)
def test_go_no_go(gpubench_results, gpubench_profile):
    assert len(gpubench_results) == 2
    if not all(r.fits for r in gpubench_results):
        pytest.xfail("NO-GO: " + ", ".join(r.case.id for r in gpubench_results if not r.fits))
"""


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    pytester.makepyfile(models=MODELS, test_suite=SUITE)
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        "--gpu-profile", "cpu:512MiB", "-p", "no:cacheprovider", "-rxs", *args, timeout=600
    )


def outcomes(pytester: pytest.Pytester) -> dict[str, dict[str, object]]:
    """The latest run's recorded test outcomes, by test name."""
    lines = (pytester.path / "reports" / "latest" / "outcomes.jsonl").read_text().splitlines()
    return {json.loads(line)["nodeid"].split("::")[-1]: json.loads(line) for line in lines}


@pytest.mark.parametrize("xdist", [False, True], ids=["one-process", "xdist"])
def test_a_case_that_does_not_fit_is_a_finding_and_the_go_no_go_sees_every_case(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, xdist: bool
) -> None:
    if xdist:
        pytest.importorskip("xdist")
    monkeypatch.setenv("GROW", "1")
    result = run(suite, *(("-n", "2") if xdist else ()))
    assert result.ret == 0, result.stdout.str()
    result.assert_outcomes(passed=1, xfailed=2)
    # one pattern at a time: pytest lists the two xfails in the order they ended, which under
    # xdist is either
    result.stdout.fnmatch_lines(["*XFAIL*test_case*does not fit*"])
    result.stdout.fnmatch_lines(["*XFAIL*NO-GO: models.grows*"])
    recorded = outcomes(suite)
    grows = next(v for k, v in recorded.items() if "grows" in k)
    assert grows["outcome"] == "xfailed" and str(grows["reason"]).startswith("does not fit")
    assert grows["case_id"] and grows["profile"] == "cpu"
    go = recorded["test_go_no_go[cpu]"]
    assert go["outcome"] == "xfailed" and go["case_id"] is None
    assert str(go["reason"]).startswith("NO-GO: models.grows")


def test_a_finding_does_not_hide_a_regression(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = run(suite, "--gpubench-save-baseline", "-k", "test_case")
    saved.assert_outcomes(passed=2)
    monkeypatch.setenv("GROW", "1")  # the same case, now past the cap: fitted, now oom
    regressed = run(suite, "-k", "test_case", "--gpubench-confirm", "0")
    regressed.assert_outcomes(passed=1, failed=1)
    regressed.stdout.fnmatch_lines(["*grows*regressed against its baseline", "*status: ok -> oom"])
    grows = next(v for k, v in outcomes(suite).items() if "grows" in k)
    assert grows["outcome"] == "failed"
    report = (suite.path / "reports" / "latest" / "report.md").read_text()
    assert "OOM, test FAILED" in report  # the report says what pytest said


def test_the_go_no_go_skips_when_none_of_its_cases_runs(suite: pytest.Pytester) -> None:
    result = run(suite, "-k", "go_no_go")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*no case of this go/no-go runs on cpu in this session*"])
