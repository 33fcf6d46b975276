"""The learning-rate schedule: warm-up then constant, cosine or linear decay, checked by hand
at its corners, and the rate each step used as the engines record it (Series.lr)."""

from __future__ import annotations

import importlib.util
import math

import pytest

from gpubench.contracts.case import CaseError, make_case
from gpubench.runner import run_case
from gpubench.worker.engines.schedule import LR_MIN_RATIO, LRSchedule, decay_steps
from tests.in_process import CPU_TEST, train


def test_warmup_ramps_linearly_to_the_full_rate() -> None:
    schedule = LRSchedule("constant", warmup_steps=4, decay_steps=10)
    assert [schedule(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_cosine_decays_to_the_floor_at_the_decay_step_and_stays() -> None:
    schedule = LRSchedule("cosine", warmup_steps=2, decay_steps=12)
    assert schedule(2) == pytest.approx(1.0)
    assert schedule(7) == pytest.approx(LR_MIN_RATIO + (1 - LR_MIN_RATIO) * 0.5)  # halfway
    assert schedule(12) == pytest.approx(LR_MIN_RATIO)
    assert schedule(50) == pytest.approx(LR_MIN_RATIO)
    values = [schedule(s) for s in range(2, 13)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))  # strictly falling


def test_linear_decays_in_equal_steps() -> None:
    schedule = LRSchedule("linear", warmup_steps=0, decay_steps=10)
    drops = [schedule(s) - schedule(s + 1) for s in range(10)]
    assert drops == pytest.approx([(1 - LR_MIN_RATIO) / 10] * 10)


def test_the_decay_ends_at_the_cases_last_step_unless_told() -> None:
    assert decay_steps(make_case(model="gpt-tiny", warmup=3, steps=20)) == 23
    assert decay_steps(make_case(model="gpt-tiny", steps="auto", max_steps=100)) == 150
    assert decay_steps(make_case(model="gpt-tiny", lr_decay_steps=40)) == 40


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"lr_schedule": "step"}, "lr_schedule='step' is not valid; valid values: constant, "),
        ({"lr_warmup_steps": -1}, "lr_warmup_steps=-1 must be an integer >= 0"),
        ({"lr_warmup_steps": 10, "lr_decay_steps": 10}, "must be above lr_warmup_steps=10"),
    ],
)
def test_a_bad_schedule_is_refused_naming_the_value(settings: dict, message: str) -> None:
    with pytest.raises(CaseError, match=message.replace("(", r"\(")):
        make_case(model="gpt-tiny", **settings)


def test_the_schedule_is_in_the_case_id() -> None:
    case = make_case(model="gpt-tiny", lr_schedule="cosine", lr_warmup_steps=5)
    assert case.id == "gpt-tiny-fp32-lrwarm5-cosine"


def test_the_torch_engine_records_the_rate_each_step_used() -> None:
    case = make_case(
        model="gpt-tiny",
        batch_size=2,
        seq_len=16,
        steps=6,
        warmup=2,
        lr=1e-3,
        lr_schedule="cosine",
        lr_warmup_steps=2,
    )
    result = train(case)
    assert result.status == "ok", result.describe()
    schedule = LRSchedule.of(case)
    assert result.series.lr == pytest.approx([1e-3 * schedule(s) for s in range(8)])
    assert result.series.lr[0] == pytest.approx(5e-4) and result.series.lr[2] == pytest.approx(1e-3)
    assert result.series.lr[-1] < result.series.lr[2]


def test_a_constant_rate_is_recorded_as_constant() -> None:
    result = train(make_case(model="gpt-tiny", batch_size=2, seq_len=16, steps=3, warmup=1))
    assert result.series.lr == [3e-4] * 4


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="needs deepspeed")
def test_deepspeed_steps_the_same_schedule() -> None:
    case = make_case(
        model="gpt-tiny",
        engine="deepspeed",
        precision="bf16",
        zero_stage=1,
        batch_size=2,
        seq_len=16,
        steps=4,
        warmup=1,
        lr=1e-3,
        lr_schedule="linear",
        lr_warmup_steps=2,
    )
    result = run_case(case, CPU_TEST, timeout_s=600)
    assert result.status == "ok", result.describe()
    schedule = LRSchedule.of(case)
    assert result.series.lr == pytest.approx([1e-3 * schedule(s) for s in range(5)])
    assert all(math.isfinite(v) for v in result.series.lr)
