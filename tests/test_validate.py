"""The GPU validation kit: its smoke scale runs green on CPU, and each check can fail.

The checks are judged on real Results: ``tests/data/validation/smoke-results.jsonl``
is what ``python -m gpubench.validation --smoke`` wrote on this project's CPU VM
(see its README); the failing variants change one field of those Results,
the way a broken CUDA path would.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gpubench.contracts.profiles import resolve_profile
from gpubench.contracts.result import Result, Stats
from gpubench.storage import read_results
from gpubench.validation import checks as C
from gpubench.validation import diagnostic_checks as D
from gpubench.validation import plan as P
from gpubench.validation import training_checks as T
from gpubench.validation.plan import plan_for

DATA = Path(__file__).parent / "data" / "validation"
H100 = "NVIDIA H100 80GB HBM3"


@pytest.fixture
def smoke() -> dict[str, Result]:
    return {r.case.id: r for r in read_results(DATA / "smoke-results.jsonl")}


def on_cuda(result: Result, profile: str = "h100-sxm", **metrics: object) -> Result:
    """``result`` as if it had run on a CUDA profile, with ``metrics`` replaced."""
    return dataclasses.replace(
        result,
        profile=resolve_profile(profile),
        metrics=dataclasses.replace(result.metrics, **metrics),  # type: ignore[arg-type]
    )


def by_name(checks: list[C.Check]) -> dict[str, C.Check]:
    return {c.name: c for c in checks}


def test_the_smoke_results_pass_every_check_that_applies(smoke: dict[str, Result]) -> None:
    got = by_name(C.case_checks(smoke, plan_for("smoke").skipped, None))
    assert {n: c.status for n, c in got.items()} == {
        "cuda-event-timing": "skip",
        "memory-figures": "skip",
        "capacity-emulation": "pass",
        "bf16": "pass",
        "fp16-gradscaler": "skip",
        "tf32": "skip",
        "compile": "skip",
        "fused-adamw": "pass",
        "deepspeed-zero2": "pass",
        "deepspeed-zero2-offload": "pass",
        "gpu-profile-auto": "skip",
        "reference-mfu": "skip",
        "estimate-vs-measured": "skip",
        "estimate-verdicts": "skip",
    }
    assert "RLIMIT_DATA" in got["capacity-emulation"].detail
    assert got["reference-mfu"].figure["tokens_per_s"] > 0


def test_a_case_that_did_not_train_fails_its_check(smoke: dict[str, Result]) -> None:
    broken = dict(smoke)
    broken[P.BF16] = dataclasses.replace(smoke[P.BF16], status="crashed")
    broken[P.ZERO2] = dataclasses.replace(
        smoke[P.ZERO2],
        metrics=dataclasses.replace(smoke[P.ZERO2].metrics, loss_end=99.0),
    )
    del broken[P.FUSED_ADAMW]
    got = by_name(C.case_checks(broken, {}, None))
    assert got["bf16"].status == "fail" and "crashed" in got["bf16"].detail
    assert (
        got["deepspeed-zero2"].status == "fail" and "did not fall" in got["deepspeed-zero2"].detail
    )
    assert got["fused-adamw"].status == "fail" and "no Result" in got["fused-adamw"].detail


def test_capacity_emulation_fails_when_the_big_case_fits(smoke: dict[str, Result]) -> None:
    broken = dict(smoke)
    broken[P.TOO_BIG] = dataclasses.replace(smoke[P.FITS], case=smoke[P.TOO_BIG].case)
    check = C.capacity_emulation(broken)
    assert check.status == "fail" and "expected oom" in check.detail


def test_cuda_cases_need_cuda_events_and_ordered_memory_figures(
    smoke: dict[str, Result],
) -> None:
    gib = 2**30
    good = on_cuda(
        smoke[P.BF16],
        timing="cuda-events",
        peak_allocated_bytes=3 * gib,
        peak_reserved_bytes=4 * gib,
        nvml_peak_used_bytes=5 * gib,
    )
    assert C.timing({P.BF16: good}).status == "pass"
    assert C.memory_figures({P.BF16: good}).status == "pass"

    perf = dataclasses.replace(
        good, metrics=dataclasses.replace(good.metrics, timing="perf_counter")
    )
    assert C.timing({P.BF16: perf}).status == "fail"
    swapped = on_cuda(good, peak_reserved_bytes=6 * gib)  # reserved above NVML's figure
    check = C.memory_figures({P.BF16: swapped})
    assert check.status == "fail" and "out of order" in check.detail
    missing = on_cuda(good, nvml_peak_used_bytes=None)
    assert C.memory_figures({P.BF16: missing}).status == "fail"


def test_gpu_profile_auto_must_name_the_card(smoke: dict[str, Result]) -> None:
    right = on_cuda(smoke[P.BF16], "h100-sxm")
    assert C.profile_auto({P.BF16: right}, H100).status == "pass"
    wrong = on_cuda(smoke[P.BF16], "h100-pcie")
    check = C.profile_auto({P.BF16: wrong}, H100)
    assert check.status == "fail" and "expected 'h100-sxm'" in check.detail
    assert C.profile_auto({P.BF16: smoke[P.BF16]}, None).status == "skip"


def test_reference_mfu_against_the_target(smoke: dict[str, Result]) -> None:
    reference = smoke[P.REFERENCE]
    gpt2 = dataclasses.replace(
        reference.case,
        model="gpt2-small",
        seq_len=1024,
        vocab_size=P.PADDED_GPT2_VOCAB,
        flags=dataclasses.replace(reference.case.flags, precision="bf16"),
    )
    h100 = resolve_profile("h100-sxm")
    per_token = 6 * (124_439_808 + (50_304 - 50_257) * 768 - 1024 * 768) + 12 * 12 * 768 * 1024

    def at(tokens_per_s: float) -> C.Check:
        stats = dataclasses.replace(reference.metrics.tokens_per_s, median=tokens_per_s)
        result = dataclasses.replace(
            on_cuda(reference, tokens_per_s=stats), case=gpt2, profile=h100
        )
        return C.reference_mfu({P.REFERENCE: result})

    needed = 0.45 * h100.bf16_flops / per_token  # tokens/s at exactly the target
    assert at(needed * 1.01).status == "pass"
    low = at(needed * 0.9)
    assert low.status == "fail" and low.figure["mfu"] == pytest.approx(0.405, rel=1e-3)
    assert low.figure["flops_per_token"] == per_token


def test_the_estimate_checks_read_the_error_and_the_verdict_each_case_carries(
    smoke: dict[str, Result],
) -> None:
    from gpubench.contracts.result import Estimate

    fits = smoke[P.FITS]
    estimate = Estimate(
        peak_bytes=110 * 2**20,
        capacity_bytes=2**29,
        verdict="fits",
        headroom_bytes=2**29 - 110 * 2**20,
        method="test",
        measured_bytes=100 * 2**20,
        measured_source="host-rss-above-runtime",
        error_pct=10.0,
    )
    close = C.estimate_vs_measured({P.FITS: dataclasses.replace(fits, estimate=estimate)})
    assert close.status == "pass" and close.figure[P.FITS] == pytest.approx(0.1)
    assert "host-rss-above-runtime" in close.detail
    far = dataclasses.replace(estimate, error_pct=-25.0)
    assert (
        C.estimate_vs_measured({P.FITS: dataclasses.replace(fits, estimate=far)}).status == "fail"
    )
    assert C.estimate_vs_measured(smoke).status == "skip"
    # the verdict: a case predicted to run out of memory that trained is a disagreement
    agree = C.estimate_verdicts({P.FITS: dataclasses.replace(fits, estimate=estimate)})
    assert agree.status == "pass"
    oom = dataclasses.replace(estimate, verdict="oom", headroom_bytes=-1)
    wrong = C.estimate_verdicts({P.FITS: dataclasses.replace(fits, estimate=oom)})
    assert wrong.status == "fail" and "estimated oom, ended ok" in wrong.detail
    assert C.estimate_verdicts(smoke).status == "skip"


# -- the diagnostics' GPU checks (issue 19), on planted CUDA Results -----------------------------

SPLIT = {
    "data": 0.1,
    "forward": 0.3,
    "backward": 0.5,
    "clip": 0.02,
    "optimizer": 0.07,
    "rest": 0.01,
}


def diagnosed(result: Result, **metrics: object) -> Result:
    """``result`` on a CUDA profile with what a healthy GPU run records: every step split
    into phases that add up to it, NVML's readings, energy per token; ``metrics`` over it."""
    phase_s = {p: [t * share for t in result.series.step_time_s] for p, share in SPLIT.items()}
    healthy: dict[str, object] = dict(
        phases={p: Stats.of(v[result.metrics.warmup_steps :]) for p, v in phase_s.items()},
        phase_timing="cuda-events",
        gpu_util=Stats.of([97.0, 99.0, 98.0]),
        power_w=Stats.of([350.0, 420.0, 400.0]),
        temperature_c=Stats.of([58.0, 63.0, 66.0]),
        sm_clock_mhz=Stats.of([1980.0, 1755.0]),
        throttle_reasons={"sw_power_cap": 0.5, "gpu_idle": 0.0},
        energy_j=120.0,
        energy_method="nvml-energy-counter",
        energy_per_token_j=2.4e-4,
    )
    planted = on_cuda(result)
    fields = {**healthy, **metrics}
    planted = dataclasses.replace(
        planted,
        metrics=dataclasses.replace(planted.metrics, **fields),  # type: ignore[arg-type]
    )
    series = dataclasses.replace(
        planted.series,
        phase_s=phase_s,
        telemetry={"t_s": [0.0, 0.5, 1.0], "gpu_util": [97.0, 99.0, 98.0]},
    )
    return dataclasses.replace(planted, series=series)


def test_the_diagnostic_checks_skip_on_cpu_and_pass_a_healthy_gpu_run(
    smoke: dict[str, Result],
) -> None:
    on_cpu = by_name(D.diagnostic_checks(smoke))
    assert {n: c.status for n, c in on_cpu.items()} == {
        "phase-sums": "skip",
        "nvml-telemetry": "skip",
        "energy-per-token": "skip",
    }
    healthy = {P.BF16: diagnosed(smoke[P.BF16]), P.FUSED_ADAMW: diagnosed(smoke[P.FUSED_ADAMW])}
    got = by_name(D.diagnostic_checks(healthy))
    assert {c.status for c in got.values()} == {"pass"}, got
    assert got["nvml-telemetry"].figure[P.BF16]["power_w"] == 400.0
    assert got["nvml-telemetry"].figure[P.BF16]["throttled"] == {"sw_power_cap": 0.5}
    assert got["energy-per-token"].figure[P.BF16]["method"] == "nvml-energy-counter"
    assert got["phase-sums"].figure[P.BF16] < 1e-9


def test_phases_that_do_not_add_up_fail(smoke: dict[str, Result]) -> None:
    good = diagnosed(smoke[P.BF16])
    steps = good.series.step_time_s
    last = len(steps) - 1
    slow = dict(good.series.phase_s)
    slow["data"] = [*slow["data"][:last], slow["data"][last] + 0.1 * steps[last]]  # 10 % more
    off = dataclasses.replace(good, series=dataclasses.replace(good.series, phase_s=slow))
    check = D.phase_sums({P.BF16: off})
    assert check.status == "fail" and f"step {last}" in check.detail and "10.0% off" in check.detail
    # within the phase clock's tolerance: 0.5 % of a step is not a failure
    slow["data"][last] = good.series.phase_s["data"][last] + 0.005 * steps[last]
    assert D.phase_sums({P.BF16: off}).status == "pass"

    perf = diagnosed(smoke[P.BF16], phase_timing="perf_counter")
    assert "not CUDA events" in D.phase_sums({P.BF16: perf}).detail
    unsplit = diagnosed(smoke[P.BF16], phases={})
    check = D.phase_sums({P.BF16: unsplit})
    assert check.status == "fail" and "no time per phase" in check.detail
    cut = dataclasses.replace(
        good, series=dataclasses.replace(good.series, phase_s={"data": [0.1], "rest": [0.1]})
    )
    assert "not aligned" in D.phase_sums({P.BF16: cut}).detail


@pytest.mark.parametrize(
    ("reading", "stats", "said"),
    [
        ("gpu_util", [90.0, 120.0], "outside 0..100"),
        ("gpu_util", [0.0, 0.0, 3.0], "gpu_util is 0"),
        ("power_w", [0.0, 300.0], "power_w 0..300 W"),
        ("power_w", [400.0, 2000.0], "outside 0..1500"),
        ("temperature_c", [5.0, 60.0], "outside 10..110"),
        ("temperature_c", [60.0, 140.0], "outside 10..110"),
        ("sm_clock_mhz", [0.0, 1980.0], "sm_clock_mhz reads 0"),
        ("sm_clock_mhz", None, "no sm_clock_mhz"),
    ],
)
def test_implausible_or_missing_telemetry_fails(
    smoke: dict[str, Result], reading: str, stats: list[float] | None, said: str
) -> None:
    planted = diagnosed(smoke[P.BF16], **{reading: Stats.of(stats) if stats else None})
    check = D.nvml_telemetry({P.BF16: planted})
    assert check.status == "fail" and said in check.detail, check.detail


def test_telemetry_needs_its_series(smoke: dict[str, Result]) -> None:
    good = diagnosed(smoke[P.BF16])
    bare = dataclasses.replace(good, series=dataclasses.replace(good.series, telemetry={}))
    assert "Series.telemetry" in D.nvml_telemetry({P.BF16: bare}).detail


@pytest.mark.parametrize(
    ("per_token", "method", "status"),
    [
        (2.4e-4, "nvml-energy-counter", "pass"),
        (2.4e-4, "power-integral", "pass"),
        (0.0, "nvml-energy-counter", "fail"),
        (None, "", "fail"),
        (2.4e-4, "", "fail"),
    ],
)
def test_energy_per_token_must_be_above_zero(
    smoke: dict[str, Result], per_token: float | None, method: str, status: str
) -> None:
    planted = diagnosed(smoke[P.BF16], energy_per_token_j=per_token, energy_method=method)
    assert D.energy_per_token({P.BF16: planted}).status == status


def run_kit(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpubench.validation", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_bad_usage_exits_2_and_says_why(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    done = run_kit("--out", str(a_file), "--smoke", timeout=60)
    assert done.returncode == 2 and "is not a directory" in done.stderr
    done = run_kit("--out", str(tmp_path / "gpu"), timeout=60)  # the gpu scale, no GPU here
    assert done.returncode == 2 and "--smoke" in done.stderr
    done = run_kit("--out", str(tmp_path / "x"), "--smoke", "--budget-s", "0", timeout=60)
    assert done.returncode == 2 and "--budget-s 0.0" in done.stderr


def test_the_smoke_kit_runs_green_on_cpu_and_writes_at_most_8_files(tmp_path: Path) -> None:
    out = tmp_path / "evidence"
    done = run_kit("--out", str(out), "--smoke")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8
    assert {"validation.json", "validation.md", "results.jsonl", "pytest.log"} <= set(files)
    assert "kernel-profile.txt" in files  # a cpu profile has no peak FLOP/s: MFU is unknown
    assert {"report.html", "report.md"} <= set(files)  # both parts in one page
    assert P.TOO_BIG in (out / "report.md").read_text()
    evidence = json.loads((out / "validation.json").read_text())
    assert evidence["complete"] and evidence["scale"] == "smoke"
    statuses = {c["name"]: c["status"] for c in evidence["checks"]}
    assert statuses["capacity-emulation"] == "pass" and statuses["bf16"] == "pass"
    assert statuses["bf16-pure"] == "pass" and statuses["resume-check"] == "pass"
    assert statuses["fp16-loss-scale"] == "skip"
    assert statuses["harness-ratio"] == "skip" and evidence["figures"]["harness"]["ratio"] > 0
    assert evidence["summary"]["fail"] == 0
    names = {r.case.id for r in read_results(out / "results.jsonl")}
    assert names == set(plan_for("smoke").cases())
    assert "matmul" in (out / "kernel-profile.txt").read_text()
    assert "| capacity-emulation | pass |" in (out / "validation.md").read_text()


# -- training correctness's GPU checks (issue 20), on planted Results ------------------------------


def test_the_fp16_loss_scale_check_reads_the_scale_of_every_step(smoke: dict[str, Result]) -> None:
    from gpubench.contracts.result import Metrics

    base = smoke[P.BF16]
    n = len(base.series.loss)
    scales = [65536.0, 32768.0] + [32768.0] * (n - 2)
    fp16 = dataclasses.replace(
        base,
        metrics=dataclasses.replace(
            base.metrics, loss_scale_min=32768.0, loss_scale_final=32768.0, skipped_steps=1
        ),
        series=dataclasses.replace(base.series, loss_scale=scales),
    )
    check = T.fp16_loss_scale({P.FP16: fp16})
    assert check.status == "pass" and "1 skipped" in check.detail
    unrecorded = dataclasses.replace(fp16, metrics=Metrics(), series=base.series)
    failed = T.fp16_loss_scale({P.FP16: unrecorded})
    assert failed.status == "fail" and f"0 loss scales for {n} steps" in failed.detail
    assert T.fp16_loss_scale({}).status == "fail"


def test_the_bf16_pure_check_states_both_held_out_losses(smoke: dict[str, Result]) -> None:
    base = smoke[P.BF16]

    def evaluated(loss: float | None) -> Result:
        return dataclasses.replace(base, metrics=dataclasses.replace(base.metrics, eval_loss=loss))

    check = T.bf16_pure({P.BF16: evaluated(4.0), P.BF16_PURE: evaluated(4.12)})
    assert check.status == "pass" and "(+3.00 %)" in check.detail
    assert T.bf16_pure({P.BF16: evaluated(4.0), P.BF16_PURE: evaluated(None)}).status == "fail"
    assert T.bf16_pure({P.BF16: evaluated(4.0)}).status == "fail"


def test_the_resume_check_passes_only_a_passed_check(smoke: dict[str, Result]) -> None:
    from gpubench.contracts.result import ResumeCheck

    base = smoke[P.ZERO2]
    passed = ResumeCheck(
        "passed",
        save_step=6,
        comparison="relative",
        tolerance=1e-2,
        reference_loss=[4.0, 3.9],
        resumed_loss=[4.0, 3.9001],
        max_relative_diff=2.6e-5,
        save_s=4.2,
        load_s=3.1,
        checkpoint_bytes=7_100_000_000,
        checkpoint_format="deepspeed",
    )
    ok = T.resume_check({P.RESUME: dataclasses.replace(base, resume=passed)})
    assert ok.status == "pass" and "7.10 GB" in ok.detail and "relative" in ok.detail
    failed = dataclasses.replace(passed, verdict="failed", differences=["data position differs"])
    bad = T.resume_check({P.RESUME: dataclasses.replace(base, resume=failed)})
    assert bad.status == "fail" and "data position differs" in bad.detail
    assert T.resume_check({P.RESUME: base}).status == "fail"  # no check recorded
    on_cpu = by_name(T.training_checks({}, plan_for("smoke").skipped))
    assert on_cpu["fp16-loss-scale"].status == "skip"
