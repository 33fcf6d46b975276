"""The benchmark scripts still run (tiny model, a couple of steps; no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run_script(name: str, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / name), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_harness_overhead_writes_its_figures(tmp_path: Path) -> None:
    out_file = tmp_path / "overhead.json"
    stdout = run_script(
        "harness_overhead.py",
        *("--model", "gpt-tiny", "--repeats", "2", "--steps", "3", "--warmup", "1"),
        *("--env", "MALLOC_TRIM_THRESHOLD_=1073741824", "--out", str(out_file)),
    )
    assert "throughput ratio gpubench/bare" in stdout
    summary = json.loads(out_file.read_text())
    assert len(summary["pair_ratios"]) == 2
    assert summary["throughput_ratio"] > 0 and summary["env"] == {
        "MALLOC_TRIM_THRESHOLD_": "1073741824"
    }
    for side in ("gpubench", "bare"):
        assert len(summary["runs"][side]) == 2
        assert all(run["child_minor_faults"] > 0 for run in summary["runs"][side])
    assert 0 <= summary["parent_cpu_share"] < 1


def test_inprocess_step_compares_the_engines_own_step() -> None:
    stdout = run_script("inprocess_step.py", "--model", "gpt-tiny", "--steps", "4")
    assert "tokens/s engine / bare" in stdout


def test_checkout_ab_compares_two_checkouts(tmp_path: Path) -> None:
    root = str(BENCHMARKS.parent)
    out_file = tmp_path / "ab.json"
    stdout = run_script(
        "checkout_ab.py",
        *("--a", root, "--b", root, "--model", "gpt-tiny", "--steps", "3", "--warmup", "1"),
        *("--repeats", "1", "--out", str(out_file)),
    )
    assert "tokens/s b / a, median of 1 pairs" in stdout
    summary = json.loads(out_file.read_text())
    assert len(summary["pair_ratios"]) == 1 and summary["ratio_b_over_a"] > 0


def test_report_render_benchmark_renders_the_cases_it_names(tmp_path: Path) -> None:
    out_file = tmp_path / "render.json"
    stdout = run_script(
        "report_render.py", "--cases", "3", "--repeats", "1", "--out", str(out_file)
    )
    figures = json.loads(stdout)
    assert figures["cases"] == 3 and len(figures["render_s"]) == 1
    assert json.loads(out_file.read_text()) == figures


def test_guardian_cost_prints_its_figure() -> None:
    assert "guardian CPU per case: median" in run_script("guardian_cost.py", "--repeats", "2")


def test_adaptive_stop_compares_auto_runs_with_a_long_one(tmp_path: Path) -> None:
    out_file = tmp_path / "adaptive.json"
    stdout = run_script(
        "adaptive_stop.py",
        *("--models", "gpt-tiny", "--batches", "2", "--seq-len", "16", "--repeats", "2"),
        *("--max-steps", "50", "--long-factor", "1.2", "--max-warmup-steps", "2"),
        *("--out", str(out_file)),
    )
    assert "overall, 2 repeats: within 1 %" in stdout
    summary = json.loads(out_file.read_text())
    (config,) = summary["configurations"]
    # max_steps is the fewest steps="auto" measures (50): each repeat stops there
    assert [r["steps"] for r in config["repeats"]] == [50, 50]
    assert all(r["stop_reason"] in ("precision", "max_steps") for r in config["repeats"])
    assert config["long"]["steps"] == 60 and config["long"]["stop_reason"] == "steps"
    assert config["between_runs_cv"] is not None and config["between_runs_cv"] >= 0
    assert 0 <= summary["overall"]["coverage"] <= 1


def test_machine_drift_runs_the_stop_rule_on_a_fixed_loop(tmp_path: Path) -> None:
    out_file = tmp_path / "drift.json"
    stdout = run_script(
        "machine_drift.py",
        *("--step-ms", "1", "--repeats", "2", "--max-steps", "50", "--long-factor", "1.2"),
        *("--out", str(out_file)),
    )
    assert "1 ms steps: long 60 steps" in stdout
    (size,) = json.loads(out_file.read_text())["step_sizes"]
    assert [r["steps"] for r in size["repeats"]] == [50, 50]  # the cap is the first check
    assert size["long"]["steps"] == 60 and size["long"]["reached"] is None
    assert len(size["ratios"]) == 2 and 0 <= size["within_1pct"] <= 1
    assert size["products_per_step"] >= 1


def test_estimate_probe_bisects_a_cap_and_compares_ranks_with_the_estimate() -> None:
    tiny = '{"model": "gpt-tiny", "batch_size": 2, "seq_len": 16, "engine": "fsdp"}'
    cap = run_script("estimate_probe.py", "cap", '[{"precision": "fp32"}]', "--with", tiny)
    assert "smallest cap that trains" in cap and " %" in cap
    rss = run_script("estimate_probe.py", "rss", '[{"nproc": 2}]', "--with", tiny)
    assert "gpt-tiny-fp32-b2-s16-n2-x2-warm0-fsdp: estimate" in rss and "measured" in rss


def test_calibration_predicts_each_thread_count_from_the_other(tmp_path: Path) -> None:
    out_file = tmp_path / "calibration.json"
    stdout = run_script(
        "calibration.py", "--models", "gpt-tiny", "--repeats", "1", "--out", str(out_file)
    )
    assert "|error|: median" in stdout
    rows = json.loads(out_file.read_text())
    assert {(r["from_threads"], r["to_threads"]) for r in rows} == {(1, 2), (2, 1)}
    for row in rows:
        assert row["predicted_low"] <= row["predicted_high"] and row["error_pct"] is not None


def test_correctness_figures_reproduce_a_resume_check() -> None:
    stdout = run_script("correctness.py", "resume", "--engines", "torch")
    assert "| passed | bitwise |" in stdout
