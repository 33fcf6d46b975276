"""The shipped suites collect, with the ids and skips they declare (no case runs here;
running the CPU smoke suite is README's first command)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from gpubench.contracts.profiles import builtin_profiles
from gpubench.report.configurations import anchor
from gpubench.report.document import ReportData, build_report
from gpubench.report.load import load_runs
from gpubench.report.pytest_outcomes import LABELS

ROOT = Path(__file__).resolve().parent.parent
GPU_SUITES = [
    "suites/test_model_ladder.py",
    "suites/test_readiness.py",
    "suites/test_warmup_probe.py",
]


def _pytest(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_suites_collect_on_cpu_and_gpu_profiles() -> None:
    proc = _pytest("suites", "--collect-only", "-q", "--gpu-profile", "cpu,rtx5080")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ids = [line for line in proc.stdout.splitlines() if "::" in line]
    smoke = "suites/test_cpu_smoke.py::test_precision_and_checkpointing"
    assert f"{smoke}[gpt-mini-bf16-ckpt-b4-s64-n6-lr0.001-maxwarm4-cpu]" in ids
    assert any("test_ladder[gpt-1b-bf16-ckpt-s512-n30-warm10-rtx5080]" in i for i in ids)
    assert any("zero2-offopt" in i and i.endswith("-rtx5080]") for i in ids)
    # 10 smoke + 20 ladder + 24 ladder offload + 6 readiness + 8 warm-up probe + 17 estimator
    # + 6 batch probe + 2 L4 diagnostic + 6 multi-GPU launch, + the ladder's, the launch's and the
    # readiness gate's go/no-go
    assert len(ids) == 2 * 102
    assert all("_go_no_go[" in i for i in ids[-6:])  # after every case they judge


def test_gpu_suites_skip_on_cpu_with_their_reason(tmp_path: Path) -> None:
    # its own run folder: the skips' outcomes are recorded, and the checkout's
    # reports/latest must not move to a run of skips
    proc = _pytest(
        *GPU_SUITES, "--gpu-profile", "cpu", "-rs", "-q", "--gpubench-dir", str(tmp_path)
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "declared for GPU profiles; profile 'cpu' has no GPU" in proc.stdout
    assert " passed" not in proc.stdout and "skipped" in proc.stdout
    assert "gpubench summary" not in proc.stdout  # no case ran: no table


def test_every_suite_answers_every_builtin_profile_green_by_estimate(tmp_path: Path) -> None:
    """`pytest suites/ --gpu-profile P --gpubench-estimate-only` exits 0 for every built-in
    P: a case predicted not to fit, or to fit without a suite's margin, is a finding
    (xfailed), never a failure; every gpubench test's outcome is recorded."""
    profiles = ",".join(builtin_profiles())
    proc = _pytest(
        "suites",
        "--gpu-profile",
        profiles,
        "--gpubench-estimate-only",
        "-q",
        "--gpubench-dir",
        str(tmp_path),
        "--gpubench-progress",
        "off",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "latest" / "outcomes.jsonl").open()]
    assert {r["profile"] for r in records} == set(builtin_profiles())
    assert {r["outcome"] for r in records} <= {"passed", "xfailed", "skipped"}
    assert any(
        r["outcome"] == "xfailed" and "does not fit (predicted)" in r["reason"] for r in records
    )
    # the report says what pytest said, for every case of the run
    runs = load_runs([tmp_path / "latest"])
    report = build_report(ReportData(results=runs.results, outcomes=runs.outcomes))
    # by test: a batch probe's runs share their test's outcome
    by_test = {r["nodeid"]: r for r in records if r["case_id"]}
    rows = {row["anchor"]: row for row in report.matrix}
    for result in runs.results:
        recorded = by_test[result.nodeid]
        row = rows[anchor(result)]
        assert row["pytest"] == LABELS[recorded["outcome"]], (result.case.id, row, recorded)
        if recorded["outcome"] == "xfailed":  # a finding: not fitting, or inside the margin
            assert result.status != "ok" or "margin" in recorded["reason"], recorded
    answers = {(g.test, g.profile): g.answer for g in report.go_no_go}
    # with its offload cells the ladder has a configuration per size on 12 and 16 GB cards
    assert answers[("test_ladder_go_no_go", "rtx3060")] == "GO"
    assert answers[("test_ladder_go_no_go", "rtx5080")] == "GO"
    assert answers[("test_ladder_go_no_go", "h100-sxm")] == "GO"


def test_the_ladder_names_what_fits_and_stays_no_go_below_its_most_offloaded_cells(
    tmp_path: Path,
) -> None:
    """GO on a 16 GB card names gpt-1b's offloaded configurations (and the host RAM they
    need); a 6 GiB card, under every size's most offloaded cell plus the margin from
    gpt2-medium up, is NO-GO naming those sizes."""
    proc = _pytest(
        "suites/test_model_ladder.py",
        "--gpu-profile",
        "rtx5080,rtx3060:6GiB",
        "--gpubench-estimate-only",
        "-q",
        "-rxP",
        "--gpubench-dir",
        str(tmp_path),
        "--gpubench-progress",
        "off",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    go = proc.stdout[proc.stdout.index("test_ladder_go_no_go[rtx5080]") :]
    assert "gpt-1b: gpt-1b-bf16-zero2-offopt-s512-n30-warm10-deepspeed (host RAM 15.1 GiB)" in go
    assert "gpt-1b-bf16-ckpt-offparam-s512-n30-warm10-fsdp (host RAM" in go
    assert (
        "NO-GO on rtx3060: no configuration of gpt2-medium, gpt-500m, gpt-1b fits with "
        "2 GiB free" in proc.stdout
    )


def test_the_l4_diagnostic_runs_on_cpu_and_its_report_explains_the_run(tmp_path: Path) -> None:
    """The L4 seed's suite on ``cpu``: its scaled-down case passes, bounded by its caps, and
    the report has what the seed showed: tokens/s with its interval, the time per phase, the
    CPU's telemetry, the cost projection and advice with its figures."""
    proc = _pytest(
        "suites/test_l4_diagnostic.py",
        "--gpu-profile",
        "cpu",
        "-q",
        "--gpubench-dir",
        str(tmp_path),
        "--gpubench-progress",
        "off",
        "--gpubench-train-tokens",
        "512M",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 passed, 1 skipped" in proc.stdout  # the seed's shape is declared for GPUs
    runs = load_runs([tmp_path / "latest"])
    (result,) = runs.results
    # measured until its interval was known or a cap came first; not a timing assert (the
    # machines here are shared): the caps are what bound the case
    assert result.metrics.stop_reason in ("precision", "max_steps", "max_seconds"), result
    report = build_report(ReportData(results=runs.results))
    (detail,) = report.details
    assert detail.interval.startswith("median ") and " % interval " in detail.interval
    assert {"data", "forward", "backward", "optimizer"} <= {p.phase for p in detail.phases}
    assert any(row.reading.startswith("CPU utilisation") for row in detail.readings)
    assert detail.telemetry_svg is not None and "CPU utilisation" in detail.telemetry_svg
    assert "Time per phase" in report.charts
    titles = [a.title for a in report.advice]
    assert "Memory is under-used: a larger batch fits" in titles, titles
    html = (tmp_path / "latest" / "report.html").read_text()
    assert "How sure: median" in html and 'data-chart="telemetry ' in html
    # the session's report projects the seed's 512M tokens (its 50,000 steps) at the cpu's $/h
    markdown = (tmp_path / "latest" / "report.md").read_text()
    assert "## Projections" in markdown and "512M tokens" in markdown


def test_the_multi_gpu_launch_runs_on_cpu_through_gloo_with_each_rank_in_the_report(
    tmp_path: Path,
) -> None:
    """The multi-GPU launch seed's suite on ``cpu``: DDP, FSDP and ZeRO-2 on two gloo ranks
    each, the model checked, each rank's figures in the Result and side by side in the
    report, and torchrun's command line recorded (the suite cannot rot without GPUs)."""
    proc = _pytest(
        "suites/test_multi_gpu_launch.py",
        "--gpu-profile",
        "cpu",
        "-q",
        "--gpubench-dir",
        str(tmp_path),
        "--gpubench-progress",
        "off",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "4 passed, 3 skipped" in proc.stdout  # the seed's shape is declared for GPUs
    runs = load_runs([tmp_path / "latest"])
    assert sorted(r.case.engine for r in runs.results) == ["deepspeed", "fsdp", "torch"]
    for result in runs.results:
        assert [rank.rank for rank in result.ranks] == [0, 1], result.describe()
        assert "torch.distributed.run" in result.environment.launch_command
    markdown = (tmp_path / "latest" / "report.md").read_text()
    assert markdown.count("Each rank's own figures") == 3
    assert markdown.count("- launched by: ") == 3 and "--nproc-per-node 2" in markdown
