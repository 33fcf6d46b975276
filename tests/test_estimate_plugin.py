"""``--gpubench-estimate-only`` end to end: every case answered by the estimator, no worker
started, Results marked predicted; and an executed case carrying its estimate and the
estimate's error against what the worker measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import gpubench.session.collection
import gpubench.session.summary  # noqa: F401  (see test_plugin.py: numpy is imported once)

pytest_plugins = ("pytester",)

ROOT = Path(__file__).resolve().parent.parent


def _results(path: Path) -> list[dict]:
    lines = (path / "reports" / "latest" / "results.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_estimate_only_runs_no_worker_and_marks_every_result_predicted(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gpubench.runner.contained as process

    def no_worker(*args: object, **kwargs: object) -> None:
        raise AssertionError("estimate-only started a worker")

    monkeypatch.setattr(process, "_run_worker", no_worker)
    pytester.makepyfile(
        test_fit="""
        import gpubench

        @gpubench.matrix(model=["gpt2-small", "gpt-1b"], precision="bf16", batch_size=8,
                         seq_len=1024, grad_ckpt=[False, True], requires_gpu=True)
        def test_cell(gpubench_result):
            assert gpubench_result.predicted and not gpubench_result.ran
            assert gpubench_result.status in ("ok", "over_capacity", "oom")
            assert gpubench_result.metrics.tokens_per_s is None
        """
    )
    result = pytester.runpytest("--gpu-profile", "rtx3060,h100-sxm", "--gpubench-estimate-only")
    result.assert_outcomes(passed=8)
    records = _results(pytester.path)
    assert len(records) == 8
    by_key = {(r["case"]["id"], r["profile"]["name"]): r for r in records}
    for record in records:
        estimate = record["estimate"]
        assert record["predicted"] is True and record["series"]["step_time_s"] == []
        assert record["status"] == ("ok" if estimate["verdict"] == "fits" else estimate["verdict"])
        assert estimate["capacity_bytes"] == record["profile"]["memory_bytes"]
        assert estimate["headroom_bytes"] == estimate["capacity_bytes"] - estimate["peak_bytes"]
    # the same case on a 12 GiB card and an 80 GiB one: the same prediction, other verdicts
    small = by_key[("gpt-1b-bf16-s1024", "rtx3060")]["estimate"]
    big = by_key[("gpt-1b-bf16-s1024", "h100-sxm")]["estimate"]
    assert small["peak_bytes"] == big["peak_bytes"]
    assert small["verdict"] == "oom" and big["verdict"] == "fits"
    # checkpointing lowers the prediction
    ckpt = by_key[("gpt-1b-bf16-ckpt-s1024", "h100-sxm")]["estimate"]
    assert ckpt["peak_bytes"] < big["peak_bytes"]
    assert "(predicted)" in result.stdout.str()
    # the report says what is a prediction, and shows the estimated peak
    report = (pytester.path / "reports" / "latest" / "report.md").read_text()
    assert "8 of them predicted by the memory estimator, not run" in report
    assert "PASS (predicted)" in report and "OOM (predicted)" in report
    assert "predicted out of memory, not run: estimated peak" in report
    # a prediction is not a NO-GO for want of a trained case: it says what it supports
    verdict = report.split("## Verdict", 1)[1].split("## Configuration matrix", 1)[0]
    assert "NO-GO" not in verdict.replace("PREDICTED NO-GO", "")
    assert "PREDICTED TO FIT" in verdict and "no case is ranked or recommended" in verdict


def test_estimate_only_refuses_to_save_a_baseline(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x(): pass")
    result = pytester.runpytest("--gpubench-estimate-only", "--gpubench-save-baseline")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--gpubench-estimate-only with --gpubench-save-baseline*"])


def test_an_executed_case_carries_its_estimate_and_the_error_against_the_measured_peak(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_run="""
        import gpubench

        @gpubench.single_case(model="gpt-mini", batch_size=4, seq_len=64, steps=3, warmup=1)
        def test_one(gpubench_result):
            assert gpubench_result.ran
        """
    )
    result = pytester.runpytest("--gpu-profile", "cpu:2GiB")
    result.assert_outcomes(passed=1)
    (record,) = _results(pytester.path)
    estimate = record["estimate"]
    assert estimate["verdict"] == "fits" and not record["predicted"]
    assert estimate["measured_source"] == "host-rss-above-runtime"
    metrics = record["metrics"]
    assert estimate["measured_bytes"] == metrics["peak_rss_bytes"] - metrics["runtime_rss_bytes"]
    error = 100 * (estimate["peak_bytes"] - estimate["measured_bytes"]) / estimate["measured_bytes"]
    assert estimate["error_pct"] == pytest.approx(error, abs=0.01)
    assert "est err%" in result.stdout.str()


def test_estimate_only_answers_every_shipped_suite_on_gpu_profiles(tmp_path: Path) -> None:
    """The whole shipped matrix answered on a machine with no GPU (docs/estimate.md times it)."""
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "suites"]
    command += ["--gpu-profile", "rtx3060,rtx5080,h100-sxm", "--gpubench-estimate-only"]
    command += ["--gpubench-dir", str(tmp_path)]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    # the ladder's answer may be "fits, but with less than its 2 GiB margin" on a small
    # card: a finding, predicted; any other failure is a defect
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]
    failures = [line for line in proc.stdout.splitlines() if line.startswith("FAILED")]
    assert all("test_model_ladder.py" in line for line in failures), failures
    assert "the plan asks for 2 GiB" in proc.stdout or not failures
    assert "(predicted)" in proc.stdout
    records = (tmp_path / "latest" / "results.jsonl").read_text().splitlines()
    assert records and all(json.loads(line)["predicted"] for line in records)
