"""How sure the median tokens/s is (the moving-block bootstrap) and when steps="auto" stops."""

from __future__ import annotations

import itertools
import statistics

import numpy as np
import pytest
from in_process import CPU_TEST, train

from gpubench.contracts.case import MIN_AUTO_STEPS, make_case
from gpubench.contracts.result import Metrics, Result, Stats
from gpubench.options import precision_target
from gpubench.session.bench import with_precision_target
from gpubench.worker.measure.precision import (
    MIN_INTERVAL_STEPS,
    StopRule,
    block_length,
    median_interval,
    with_precision,
)

CPU = CPU_TEST


def ar1(n: int, phi: float, rng: np.random.Generator) -> np.ndarray:
    """A stationary AR(1) series with unit innovations: median 0, lag-k correlation phi^k."""
    noise = rng.normal(size=n)
    x = np.empty(n)
    x[0] = noise[0] / np.sqrt(1 - phi**2)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + noise[i]
    return x


def coverage(phi: float, n: int, repeats: int, block: int | None) -> float:
    """How often the interval of step times 1 + 0.05 x (x AR(1)) holds the true median
    tokens/s, 1 (tokens/s = 1 / step time is monotone, so its median is 1 / 1)."""
    rng = np.random.default_rng(2026)
    hits = 0
    for _ in range(repeats):
        interval = median_interval(1 + 0.05 * ar1(n, phi, rng), block=block)
        assert interval is not None
        hits += interval.low <= 1.0 <= interval.high
    return hits / repeats


def test_correlated_steps_get_near_nominal_coverage_where_an_iid_interval_under_covers() -> None:
    # lag-1 correlation 0.5: an iid bootstrap (blocks of one step) pretends to 3x the
    # information there is; the block bootstrap's interval widens to hold the median
    blocked = coverage(0.5, 300, 150, block=None)
    naive = coverage(0.5, 300, 150, block=1)
    assert blocked >= 0.87, f"block bootstrap covered {blocked:.0%} of 150 series, aiming at 95 %"
    assert naive < 0.85, f"the iid bootstrap covered {naive:.0%}: the test cannot tell them apart"


def test_block_length_follows_the_correlation() -> None:
    rng = np.random.default_rng(7)
    independent = block_length(rng.normal(size=1000))
    correlated = block_length(ar1(1000, 0.8, rng))
    assert independent <= 3 < 10 <= correlated <= 3 * np.sqrt(1000)


def test_the_same_steps_give_the_same_interval_and_it_maps_onto_tokens_per_s() -> None:
    times = list(1 + 0.05 * ar1(200, 0.3, np.random.default_rng(1)))
    first, again = median_interval(times, 512), median_interval(times, 512)
    assert first == again and first is not None
    assert first.low < first.median < first.high
    assert first.median == pytest.approx(float(np.median(512 / np.array(times))))
    assert first.precision == pytest.approx((first.high - first.low) / 2 / first.median)
    assert first.confidence == 0.95 and first.n == 200


def test_too_few_or_impossible_steps_give_no_interval() -> None:
    assert median_interval([1.0] * (MIN_INTERVAL_STEPS - 1)) is None
    assert median_interval([1.0] * 20 + [0.0]) is None
    steady = median_interval([2.0] * 20, 100)
    assert steady is not None and steady.precision == 0 and steady.median == 50


def _feed(rule: StopRule, times: list[float]) -> tuple[str, int]:
    """One rank's loop: observe, vote, stop at the first reason."""
    for t in times:
        rule.observe(t)
        imprecise, capped = rule.vote()
        reason = rule.reason(imprecise, capped)
        if reason:
            return reason, rule.measured
    raise AssertionError("never stopped")


def test_auto_stops_on_precision_once_it_has_its_minimum_steps() -> None:
    times = list(1 + 0.001 * np.random.default_rng(3).normal(size=500))
    rule = StopRule(make_case(model="gpt-tiny", steps="auto"))
    assert rule.target == 0.01 and rule.total is None
    assert _feed(rule, times) == ("precision", MIN_AUTO_STEPS)
    assert rule.last is not None and rule.last.precision <= 0.01


def test_auto_stops_at_max_steps_when_the_target_is_out_of_reach() -> None:
    times = list(1 + 0.3 * np.random.default_rng(4).random(size=500))
    rule = StopRule(make_case(model="gpt-tiny", steps="auto", max_steps=150), target=0.001)
    assert _feed(rule, times) == ("max_steps", 150)
    assert rule.last is not None and rule.last.n == 150 and rule.last.precision > 0.001


def test_auto_stops_when_the_measured_steps_took_max_seconds() -> None:
    # the measured steps' own time is the clock: 0.7 s and 0.5 s steps pass 11.9 s at the 20th
    times = [0.7, 0.5] * 250
    case = make_case(model="gpt-tiny", steps="auto", max_seconds=11.9)
    assert _feed(StopRule(case, target=0.0001), times) == ("max_seconds", 20)
    short = make_case(model="gpt-tiny", steps="auto", max_seconds=3.0)  # before the minimum
    assert _feed(StopRule(short, target=0.0001), times) == ("max_seconds", 5)


def test_checks_follow_a_geometric_schedule() -> None:
    rule = StopRule(make_case(model="gpt-tiny", steps="auto"), target=1e-9)
    checked = []
    for t in 1 + 0.1 * np.random.default_rng(6).random(size=400):
        rule.observe(float(t))
        before = rule.last
        rule.vote()
        if rule.last is not before:
            checked.append(rule.measured)
    assert checked[:4] == [50, 55, 61, 68]
    assert all(10 * later >= 11 * earlier for earlier, later in itertools.pairwise(checked))
    assert len(checked) <= 24  # 50 -> 400 by 10 %: ln(8) / ln(1.1) = 21.8


def test_every_rank_stops_at_the_same_step() -> None:
    rule = StopRule(make_case(model="gpt-tiny", steps="auto", max_steps=60), target=0.5)
    for _ in range(MIN_AUTO_STEPS):
        rule.observe(1.0)
    imprecise, capped = rule.vote()
    assert (imprecise, capped) == (False, False)
    assert rule.reason(anyone_imprecise=True, anyone_capped=False) == ""  # another rank: not yet
    assert rule.reason(anyone_imprecise=True, anyone_capped=True) == "max_seconds"  # its clock
    assert rule.reason(anyone_imprecise=False, anyone_capped=False) == "precision"


def test_fixed_steps_stop_at_exactly_that_many_and_aim_at_nothing() -> None:
    rule = StopRule(make_case(model="gpt-tiny", steps=7, precision_target=0.5))
    assert rule.target is None and rule.total == 7
    assert _feed(rule, [1.0, 100.0] * 50) == ("steps", 7)


def test_with_precision_fills_every_run_with_enough_steps() -> None:
    times = [float(t) for t in 1 + 0.05 * np.random.default_rng(8).random(size=30)]
    base = Metrics(tokens_per_s=Stats.of([100 / t for t in times]))
    fixed = with_precision(base, times, 100, stop_reason="steps", target=None)
    assert fixed.precision_achieved is not None and fixed.precision_reached is None
    assert fixed.tokens_per_s_low is not None and fixed.tokens_per_s_high is not None
    assert fixed.tokens_per_s_low <= statistics.median(100 / t for t in times)
    assert statistics.median(100 / t for t in times) <= fixed.tokens_per_s_high
    auto = with_precision(base, times, 100, stop_reason="max_steps", target=1e-6)
    assert auto.precision_reached is False and auto.precision_target == 1e-6
    none = with_precision(Metrics(), [], 100, stop_reason="", target=None)
    assert none.precision_achieved is None and none.stop_reason == ""


def test_the_session_s_precision_reaches_an_auto_case_without_changing_its_id() -> None:
    auto = make_case(model="gpt-tiny", steps="auto")
    resolved = with_precision_target(auto, 0.02)
    assert resolved.precision_target == 0.02 and resolved.id == auto.id
    own = make_case(model="gpt-tiny", steps="auto", precision_target=0.05)
    assert with_precision_target(own, 0.02) is own
    fixed = make_case(model="gpt-tiny", steps=10)
    assert with_precision_target(fixed, 0.02) is fixed


@pytest.mark.parametrize(("text", "value"), [("0.01", 0.01), ("2%", 0.02), (" 0.5 ", 0.5)])
def test_precision_option_reads_a_fraction_or_a_percentage(text: str, value: float) -> None:
    assert precision_target(text, "--gpubench-precision") == pytest.approx(value)


@pytest.mark.parametrize("text", ["0", "1", "150%", "-0.1", "nan", "one percent", ""])
def test_precision_option_refuses_what_is_not_a_fraction(text: str) -> None:
    with pytest.raises(ValueError, match=r"--gpubench-precision=.*fraction in \(0, 1\)"):
        precision_target(text, "--gpubench-precision")


def _run(**settings: object) -> Result:
    return train(make_case(model="gpt-tiny", batch_size=2, seq_len=16, warmup=1, **settings))


def test_an_auto_case_runs_until_its_target_and_says_why_it_stopped() -> None:
    result = _run(steps="auto", precision_target=0.5, max_steps=60)
    m = result.metrics
    assert result.status == "ok", result.describe()
    assert MIN_AUTO_STEPS <= m.measured_steps <= 60
    assert m.stop_reason in ("precision", "max_steps"), m.stop_reason
    assert m.precision_target == 0.5 and m.precision_confidence == 0.95
    assert m.precision_achieved is not None
    assert m.precision_reached is (m.precision_achieved <= 0.5)
    assert (m.stop_reason == "precision") is m.precision_reached
    assert m.tokens_per_s is not None and m.tokens_per_s_low is not None
    assert m.tokens_per_s_low <= m.tokens_per_s.median <= (m.tokens_per_s_high or 0)
    assert Result.from_json(result.to_json()).metrics == m


def test_an_auto_case_stops_at_max_seconds() -> None:
    result = _run(steps="auto", precision_target=1e-6, max_seconds=1e-3)
    m = result.metrics
    assert (result.status, m.stop_reason, m.measured_steps) == ("ok", "max_seconds", 1)
    assert m.precision_reached is False and m.precision_achieved is None


def test_a_fixed_case_measures_exactly_its_steps_and_still_has_an_interval() -> None:
    m = _run(steps=12).metrics
    assert (m.measured_steps, m.stop_reason) == (12, "steps")
    assert m.precision_achieved is not None and m.precision_target is None
    assert m.precision_reached is None
