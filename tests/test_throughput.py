"""Predicted throughput (gpubench.estimate.throughput): the roofline bound and the expected
range against published GPT-2 124M runs, calibration from a real measured run, the
projections of an estimate-only run, and the gate that never reads a prediction."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest
import torch

from gpubench.baseline.compare import compare
from gpubench.baseline.gate import not_recorded_reason
from gpubench.baseline.gated import GATED_METRICS
from gpubench.baseline.rules import GateRules
from gpubench.contracts.case import Case, make_case
from gpubench.contracts.flops import case_flops_per_token
from gpubench.contracts.profiles import HardwareProfile, parse_profile_list
from gpubench.contracts.result import Metrics, Result, Stats
from gpubench.contracts.units import GiB
from gpubench.estimate import estimate_case
from gpubench.estimate.predicted import predicted_result
from gpubench.estimate.shape import builtin_shape
from gpubench.estimate.throughput import (
    PUBLISHED_RUNS,
    calibrate,
    compared_throughput,
    predict_throughput,
)
from gpubench.report.document import ReportData, build_report
from gpubench.report.projection import ProjectionInputs
from gpubench.report.render import render_markdown
from gpubench.runner import run_case
from gpubench.session.summary import format_summary

PROFILES = {p.name: p for p in parse_profile_list("a100-40gb,a100-80gb,h100-sxm,rtx3060,l4")}

# (published tokens/s a GPU, its configuration as a one-GPU case, the profile of its card):
# the figures and their sources are PUBLISHED_RUNS' (docs/estimate.md, "Predicted throughput")
PUBLISHED = [
    # nanoGPT: 295B tokens in "about 4 days" (README) or "~5 days" (config) on 8x A100 40GB
    (106_667, dict(batch_size=12, grad_accum=5), "a100-40gb"),
    (85_333, dict(batch_size=12, grad_accum=5), "a100-40gb"),
    # llm.c: 10B tokens in ~90 minutes on 8x A100 80GB SXM, 64 x 1024 tokens a GPU
    (231_481, dict(batch_size=64), "a100-80gb"),
    # llm.c on 8x H100 SXM: a median step of 139 ms for 524,288 tokens
    (524_288 / 0.139 / 8, dict(batch_size=64), "h100-sxm"),
]


def gpt2_small(**fields: Any) -> Case:
    return make_case(model="gpt2-small", seq_len=1024, precision="bf16", **fields)


@pytest.mark.parametrize(("published", "shape", "profile"), PUBLISHED)
def test_published_gpt2_small_falls_inside_the_range_and_below_the_bound(
    published: float, shape: dict[str, int], profile: str
) -> None:
    case = gpt2_small(**shape)
    prediction = predict_throughput(case, PROFILES[profile], builtin_shape(case))
    assert prediction.bound is not None and prediction.low is not None
    assert prediction.high is not None
    assert published < prediction.bound, (published, prediction)
    assert prediction.low <= published <= prediction.high, (published, prediction)
    assert "compute-bound" in (prediction.method or "")
    assert "nanoGPT" in (prediction.source or "") and "llm.c" in (prediction.source or "")


def test_the_published_table_says_the_mfu_its_tokens_per_s_make() -> None:
    """Each run's MFU is its tokens/s times gpubench's FLOPs count over the card's peak."""
    per_token = case_flops_per_token(gpt2_small(batch_size=1))
    assert per_token is not None
    cards = {"A100": PROFILES["a100-40gb"], "H100": PROFILES["h100-sxm"]}
    for run in PUBLISHED_RUNS:
        if run.tokens_per_s_per_gpu is None:
            continue
        peak = next(p.bf16_flops for name, p in cards.items() if name in run.name)
        assert peak is not None
        assert run.tokens_per_s_per_gpu * per_token / peak == pytest.approx(run.mfu, abs=0.005)


def test_the_bound_is_the_memory_bandwidth_where_that_is_lower() -> None:
    """A tiny batch moves a whole model's weights and AdamW states for few tokens."""
    case = gpt2_small(batch_size=1).replace(seq_len=8)
    slow = dataclasses.replace(PROFILES["a100-40gb"], name="slow-memory", memory_bandwidth=1e9)
    prediction = predict_throughput(case, slow, builtin_shape(case))
    n = builtin_shape(case).n_params
    # weights read twice and gradients written (fp32), AdamW's 28 bytes: 40 bytes a parameter
    assert prediction.bound == pytest.approx(1e9 / (40 * n / 8))
    assert "memory-bound" in (prediction.method or "")
    assert prediction.high is not None and prediction.high <= prediction.bound


def test_a_user_profile_without_bandwidth_bounds_compute_only_and_says_so() -> None:
    case = gpt2_small(batch_size=8)
    card = HardwareProfile("mycard", "cuda", 24 * GiB, 100e12, 20e12, None)
    prediction = predict_throughput(case, card, builtin_shape(case))
    assert prediction.bound == pytest.approx(100e12 / (case_flops_per_token(case) or 1))
    assert "states no memory bandwidth" in (prediction.method or "")


def test_grad_ckpt_lowers_the_range_by_the_recomputed_forward() -> None:
    plain, ckpt = gpt2_small(batch_size=8), gpt2_small(batch_size=8, grad_ckpt=True)
    a = predict_throughput(plain, PROFILES["l4"], builtin_shape(plain))
    b = predict_throughput(ckpt, PROFILES["l4"], builtin_shape(ckpt))
    assert a.bound == b.bound and a.high and b.high
    assert b.high == pytest.approx(a.high * 3 / 4)


def _matmul_peak(threads: int) -> float:
    """FLOP/s of a 512 x 512 fp32 matmul on ``threads`` threads, the best of 5 rounds (other
    work on the machine only slows a round): the dense peak of the 'card' a CPU profile of
    that many threads is, measured as a datasheet would state it."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a = torch.randn(512, 512)
        a @ a
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(4):
                a @ a
            best = min(best, time.perf_counter() - start)
        return 2 * 512**3 * 4 / best
    finally:
        torch.set_num_threads(before)


def test_calibration_from_a_run_measured_on_another_profile() -> None:
    """CPU runs of one and two threads stand in for two cards: the one-thread Result's MFU,
    scaled by the ratio of the peaks, predicts the two-thread run; the error is stated."""
    case = make_case(model="gpt-tiny", batch_size=4, seq_len=64, steps=12, warmup=2)
    cards = {
        n: HardwareProfile(f"cpu-{n}t", "cpu", 4 * GiB, None, _matmul_peak(n), None) for n in (1, 2)
    }
    measured = {
        n: run_case(case, cards[n], timeout_s=120, env={"OMP_NUM_THREADS": str(n)}) for n in (1, 2)
    }
    assert all(r.status == "ok" and r.tokens_per_s for r in measured.values()), measured
    predicted = predicted_result(case, cards[2], trace=False, measured=[measured[1]])
    estimate = predicted.estimate
    assert estimate is not None and estimate.tokens_per_s_low and estimate.tokens_per_s_high
    assert "calibrated" in (estimate.throughput_method or "")
    assert "cpu-1t" in (estimate.throughput_source or "")
    one = measured[1].metrics.tokens_per_s
    assert one is not None and one.p10 and one.p90
    ratio = (cards[2].fp32_flops or 0) / (cards[1].fp32_flops or 1)
    bound = estimate.tokens_per_s_bound or float("inf")
    assert estimate.tokens_per_s_low == pytest.approx(min(one.p10 * ratio, bound))
    assert estimate.tokens_per_s_high == pytest.approx(min(one.p90 * ratio, bound))
    error = compared_throughput(estimate, measured[2]).tokens_per_s_error_pct
    assert error is not None
    print(
        f"calibrated 1 -> 2 threads: peaks {cards[1].fp32_flops / 1e9:.1f} -> "
        f"{cards[2].fp32_flops / 1e9:.1f} GFLOP/s; measured {measured[1].tokens_per_s:,.0f} "
        f"-> {measured[2].tokens_per_s:,.0f} tok/s; predicted {estimate.tokens_per_s_low:,.0f}"
        f"-{estimate.tokens_per_s_high:,.0f}; error {error:+.1f} %"
    )


def test_no_published_band_on_a_cpu_profile_only_calibration() -> None:
    case = make_case(model="gpt-tiny", batch_size=4, seq_len=64)
    cpu = HardwareProfile("cpu-peak", "cpu", 4 * GiB, None, 50e9, 20e9)
    prediction = predict_throughput(case, cpu, builtin_shape(case))
    assert prediction.bound is not None and prediction.low is None
    assert "calibrate from a measured Result" in (prediction.method or "")


def _readiness_results() -> list[Result]:
    """What `pytest suites/test_readiness.py --gpubench-estimate-only` answers for two of
    its cases on three cards (the suite itself runs in test_estimate_plugin)."""
    cases = [
        make_case(model="gpt-500m", batch_size=4, seq_len=1024, precision="bf16", grad_ckpt=g)
        for g in (False, True)
    ]
    profiles = parse_profile_list("rtx3060,l4,a100-40gb")
    return [predicted_result(c, p, trace=False) for c in cases for p in profiles]


def test_an_estimate_only_run_projects_hours_and_dollars_from_the_predicted_range() -> None:
    results = _readiness_results()
    projection = ProjectionInputs(epochs=(3, 5, 10), dataset_tokens=1e9)
    report = build_report(ReportData(results=results, projection=projection))
    fitting = [r for r in results if r.status == "ok"]
    assert {r.profile.name for r in fitting} >= {"l4", "a100-40gb"}
    assert len(report.predictions) == len(results)  # every case on every card
    assert len(report.projections) == 3 * len(fitting)
    for row in report.projections:
        assert row["predicted"] and row["hours_low"] < row["hours"]
        assert row["tokens_per_s"] < row["tokens_per_s_high"]
    l4 = next(row for row in report.projections if row["profile"] == "l4")
    assert l4["cost_usd"] == pytest.approx(l4["hours"] * 0.70)
    markdown = render_markdown(report)
    assert "## Predicted throughput" in markdown and "(predicted)" in markdown
    assert "nanoGPT" in markdown  # the band's sources are named
    summary = format_summary(results, width=120)
    assert "pred tok/s" in summary
    assert all(len(line) <= 120 for line in summary.splitlines())


def test_the_gate_never_reads_a_prediction() -> None:
    """A predicted Result is never recorded nor gives a gated figure; an executed Result's
    prediction changes none of the figures the gate compares."""
    predicted = _readiness_results()[-1]
    assert predicted.estimate and predicted.estimate.tokens_per_s_high
    assert not_recorded_reason(predicted) == "a prediction, not a measurement"
    assert all(metric.value(predicted) is None for metric in GATED_METRICS)
    executed = dataclasses.replace(
        predicted,
        predicted=False,
        metrics=Metrics(tokens_per_s=_stats(1000.0), tokens_per_step=4096),
    )
    wild = dataclasses.replace(
        executed,
        estimate=dataclasses.replace(
            predicted.estimate, tokens_per_s_low=1.0, tokens_per_s_high=2.0
        ),
    )
    for metric in GATED_METRICS:
        assert metric.value(executed) == metric.value(wild)
    history = [executed] * 5
    assert (
        compare(wild, history, GateRules()).to_dict()
        == compare(executed, history, GateRules()).to_dict()
    )


def _stats(median: float) -> Stats:
    return Stats.of([median] * 6)


def test_an_executed_case_states_the_error_of_its_prediction() -> None:
    case = gpt2_small(batch_size=12, grad_accum=5)
    estimate = estimate_case(case, PROFILES["a100-40gb"], trace=False)
    assert estimate.tokens_per_s_low and estimate.tokens_per_s_high
    result = Result(
        case, PROFILES["a100-40gb"], "ok", metrics=Metrics(tokens_per_s=_stats(106_667))
    )
    compared = compared_throughput(estimate, result)
    middle = (estimate.tokens_per_s_low + estimate.tokens_per_s_high) / 2
    assert compared.tokens_per_s_error_pct == pytest.approx(
        100 * (middle - 106_667) / 106_667, abs=0.01
    )
    again = Result.from_json(dataclasses.replace(result, estimate=compared).to_json())
    assert again.estimate == compared
    assert again.metrics.tokens_per_s == result.metrics.tokens_per_s  # never a measurement


def test_calibrate_leaves_an_estimate_without_a_matching_result() -> None:
    case = gpt2_small(batch_size=8)
    estimate = estimate_case(case, PROFILES["l4"], trace=False)
    assert calibrate(estimate, case, PROFILES["l4"], []) == estimate
