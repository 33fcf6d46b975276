"""FLOPs per token and MFU: the PaLM count, for the built-in GPTs."""

from __future__ import annotations

import pytest

from gpubench.case import make_case
from gpubench.flops import case_flops_per_token, mfu, peak_flops, training_flops_per_token
from gpubench.profiles import resolve_profile


def test_gpt2_small_at_1024_tokens() -> None:
    # nanoGPT's estimate_mfu for GPT-2 124M: N without the positional table (124,439,808 -
    # 1024 x 768), plus 12 L H Q T = 12 x 12 x 768 x 1024
    expected = 6 * (124_439_808 - 1024 * 768) + 12 * 12 * 768 * 1024
    case = make_case(model="gpt2-small", seq_len=1024)
    assert case_flops_per_token(case) == expected
    assert expected == pytest.approx(855.1e6, rel=1e-3)


def test_a_factory_model_has_no_count() -> None:
    case = make_case(model="tests.fake_worker:no_such_factory", vocab_size=256)
    assert case_flops_per_token(case) is None


def test_mfu_and_the_peak_by_precision() -> None:
    h100 = resolve_profile("h100-sxm")
    assert peak_flops(h100, "bf16") == h100.bf16_flops
    assert peak_flops(h100, "fp32") == h100.fp32_flops
    assert mfu(1000.0, 1e9, 4e12) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="peak"):
        mfu(1.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="seq_len=0"):
        training_flops_per_token(10, 1, 8, 0)
