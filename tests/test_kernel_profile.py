"""The kit's step profile: kernel names sorted into categories, one CPU step profiled."""

from __future__ import annotations

import pytest

from gpubench.contracts.case import make_case
from gpubench.validation.bare_loop import bare_step
from gpubench.validation.kernel_profile import category, format_profile, profile_step


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64", "matmul"),
        ("ampere_bf16_s16816gemm_bf16_128x64_ldg8_f2f_tn", "matmul"),
        ("aten::addmm", "matmul"),
        ("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64>>", "attention"),
        ("aten::_scaled_dot_product_flash_attention", "attention"),
        ("triton_per_fused_add_native_layer_norm_0", "normalization"),
        ("triton_poi_fused_gelu_3", "compiled fused (triton)"),
        (
            "void multi_tensor_apply_kernel<TensorListMetadata<4>, FusedAdamMathFunctor>",
            "optimizer",
        ),
        ("aten::_fused_adamw_", "optimizer"),
        ("Memcpy DtoH (Device -> Pinned)", "copy and fill"),
        (
            "void at::native::vectorized_elementwise_kernel<4, GeluCUDAKernelImpl>",
            "elementwise and reductions",
        ),
        ("ncclDevKernel_AllReduce_Sum_bf16_RING_LL", "communication"),
        ("something_else", "other"),
    ],
)
def test_kernel_names_fall_in_their_category(name: str, expected: str) -> None:
    assert category(name) == expected


def test_one_cpu_step_is_profiled_by_category() -> None:
    case = make_case(model="gpt-tiny", batch_size=4, seq_len=32, steps=2, warmup=1)
    profile = profile_step(case, "cpu")
    assert profile["step_wall_s"] > 0 and profile["kernel_s"] > 0
    assert profile["categories"]["matmul"] > 0
    assert profile["idle_share"] is None  # a CPU has no idle device to report
    text = format_profile(profile)
    assert "matmul" in text and case.id in text


def test_the_bare_loop_refuses_what_it_does_not_do() -> None:
    for settings, named in (
        (dict(precision="fp16"), "fp16"),
        (dict(engine="deepspeed", zero_stage=2), "deepspeed"),
        (dict(grad_accum=2), "grad_accum=2"),
    ):
        case = make_case(model="gpt-tiny", **settings)
        with pytest.raises(ValueError, match=named):
            bare_step(case)
