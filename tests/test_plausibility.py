"""gpubench.contracts.plausibility: each rule firing, and not firing, at its edge."""

from __future__ import annotations

import dataclasses

import pytest

from gpubench.contracts.case import make_case
from gpubench.contracts.flops import case_flops_per_token
from gpubench.contracts.plausibility import (
    MFU_BOUND,
    MFU_FLOOR,
    MFU_FLOOR_MIN_PARAMS,
    implausible_reasons,
    result_mfu,
)
from gpubench.contracts.profiles import resolve_profile
from gpubench.contracts.result import Metrics, Result, Stats

GPT2_SMALL_FLOPS = 855_166_464  # per token at T = 1024 (tests/test_flops.py)


def measured(mfu: float | None, profile: str = "a100-80gb", status: str = "ok") -> Result:
    """gpt2-small in bf16, trained to the end, with the given MFU (and the tokens/s it means)."""
    case = make_case(model="gpt2-small", seq_len=1024, precision="bf16")
    peak = resolve_profile(profile).bf16_flops or 1.0
    tokens_per_s = (mfu or 0.01) * peak / GPT2_SMALL_FLOPS
    metrics = Metrics(
        tokens_per_s=Stats.of([tokens_per_s]),
        n_params=124_439_808,
        declared_params=124_000_000,
        model_flops_per_token=GPT2_SMALL_FLOPS,
        model_flops_per_s=tokens_per_s * GPT2_SMALL_FLOPS,
        mfu=mfu,
    )
    return Result(case=case, profile=resolve_profile(profile), status=status, metrics=metrics)


def test_a_sane_mfu_is_plausible() -> None:
    assert implausible_reasons(measured(0.35)) == []


def test_above_the_peak() -> None:
    assert implausible_reasons(measured(1.0)) != []  # at the peak: above the bound already
    (reason,) = implausible_reasons(measured(1.0001))
    assert reason.startswith("MFU 100 % (")
    assert "above the card's peak: the model or the token count is not what was declared" in (
        reason
    )
    assert "MFLOP/token on 1 x a100-80gb, bf16" in reason


def test_above_the_bound() -> None:
    assert implausible_reasons(measured(MFU_BOUND)) == []
    (reason,) = implausible_reasons(measured(MFU_BOUND + 0.001))
    assert "is above 80 %, more than any published dense training reaches" in reason


def test_under_the_floor_on_a_gpu() -> None:
    assert implausible_reasons(measured(MFU_FLOOR)) == []
    (reason,) = implausible_reasons(measured(MFU_FLOOR - 0.0001))
    assert "is under 1 %, far below any sane value on a GPU" in reason
    assert "measured the wrong model, or the pipeline stalled" in reason


def test_the_floor_holds_only_for_a_gpu_case_that_trained_to_the_end() -> None:
    low = measured(0.001)
    on_cpu = dataclasses.replace(low, profile=dataclasses.replace(low.profile, kind="cpu"))
    assert implausible_reasons(on_cpu) == []
    assert implausible_reasons(dataclasses.replace(low, status="diverged")) == []


def test_the_floor_spares_a_small_model_bound_by_kernel_launches() -> None:
    low = measured(0.001)
    below = MFU_FLOOR_MIN_PARAMS - 1
    small = dataclasses.replace(
        low, metrics=dataclasses.replace(low.metrics, n_params=below, declared_params=below)
    )
    assert implausible_reasons(small) == []
    assert implausible_reasons(low) != []  # gpt2-small's 124M: held to the floor


def test_an_emulated_smaller_card_has_no_mfu_against_its_peak() -> None:
    """rtx3060 emulated on an H100 runs at the H100's speed: the 3060's peak means nothing."""
    old = measured(None)  # a record before v4: MFU derived unless the capacity was emulated
    assert result_mfu(old) is not None
    emulated = dataclasses.replace(
        old, metrics=dataclasses.replace(old.metrics, capacity_emulated=True)
    )
    assert result_mfu(emulated) is None and implausible_reasons(emulated) == []


def test_the_seed_report_s_38_tokens_per_s_on_two_a100s() -> None:
    # a record from before schema v4 (no MFU stored): gpt2-small (the seed's "125M"), 38
    # tok/s on 2 x A100 in bf16 is 38 x 855,166,464 / (2 x 312e12) = 0.00521 % MFU
    case = make_case(model="gpt2-small", seq_len=1024, precision="bf16", nproc=2)
    old = Result(
        case=case,
        profile=resolve_profile("a100-40gb"),
        status="ok",
        metrics=Metrics(tokens_per_s=Stats.of([38.0]), n_params=124_439_808),
    )
    assert result_mfu(old) == pytest.approx(38 * GPT2_SMALL_FLOPS / (2 * 312e12))
    assert case_flops_per_token(case) == GPT2_SMALL_FLOPS
    (reason,) = implausible_reasons(old)
    assert reason.startswith("MFU 0.00521 % (38 tok/s x 855.2 MFLOP/token on 2 x a100-40gb")
    assert "far below any sane value on a GPU" in reason


def test_no_peak_no_mfu_rule() -> None:
    cpu = measured(None, profile="cpu")
    assert result_mfu(cpu) is None and implausible_reasons(cpu) == []


def with_counts(n_params: int, declared: int | None, **case: object) -> Result:
    result = measured(0.35)
    return dataclasses.replace(
        result,
        case=result.case.replace(**case),
        metrics=dataclasses.replace(result.metrics, n_params=n_params, declared_params=declared),
    )


def test_a_parameter_count_off_its_declared_size() -> None:
    assert implausible_reasons(with_counts(110, 100)) == []  # 10 %: the edge, within
    assert implausible_reasons(with_counts(90, 100)) == []
    assert implausible_reasons(with_counts(163, None)) == []  # nothing declared
    (reason,) = implausible_reasons(with_counts(111, 100))
    assert "+11 %, beyond ±10 %" in reason
    (reason,) = implausible_reasons(
        with_counts(163_000_000, 124_000_000, expect_params=124_000_000)
    )
    assert reason == (
        "declared 124,000,000 parameters (expect_params=124,000,000), the model built has "
        "163,000,000 (+31 %, beyond ±10 %): the benchmark would measure a different model "
        "than declared."
    )
    (reason,) = implausible_reasons(with_counts(89, 100))
    assert "(the declared size of gpt2-small)" in reason and "-11 %" in reason
