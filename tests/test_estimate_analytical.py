"""The memory formulas (gpubench.estimate.analytical) against hand-computed cases, the model
states against DeepSpeed's own estimators, the verdict bands and estimate_case."""

from __future__ import annotations

import types

import pytest

from gpubench.contracts.case import make_case
from gpubench.contracts.profiles import resolve_profile
from gpubench.estimate import estimate_case, estimate_peak_bytes, parts
from gpubench.estimate.analytical import (
    Precision,
    activation_bytes,
    analyse,
    attention_score_bytes,
    deepspeed_states,
    fragmentation_bytes,
    layer_activation_bytes,
    logits_and_loss_bytes,
    model_states,
    precision_of,
)
from gpubench.estimate.fit import verdict
from gpubench.estimate.shape import ModelShape, model_shape

HALF16 = Precision(2, 2, 2, 2, autocast=False)  # DeepSpeed bf16: every tensor 16-bit
FP32 = Precision(4, 4, 4, 4, autocast=False)
AUTOCAST = Precision(4, 2, 4, 4, autocast=True)  # torch engine, bf16 autocast

TINY_N = 124_672  # gpt-tiny: 2 layers, C=64, 2 heads, V=256, 128 positions (sizes.py)


def tiny(**settings: object) -> ModelShape:
    return model_shape(make_case(model="gpt-tiny", batch_size=1, seq_len=2, **settings))


# -- activations ----------------------------------------------------------------------------------
def test_layer_reproduces_korthikanti_with_16bit_dropout_and_math_attention() -> None:
    # s=2, b=1, h=4, a=2, f=4h=16: sbh = 8; [K22] 34 sbh + 5 a s^2 b = 272 + 40 = 312;
    # plus two LayerNorms' mean and rstd, 2 x 8 bytes x s b = 32, which [K22] leaves out
    got = layer_activation_bytes(1, 2, 4, 2, 16, HALF16, attention="math", dropout=True)
    assert got == 312 + 32


def test_layer_fp32_sdpa_without_dropout() -> None:
    # sbh=8, sbf=32; norms 2 x (4x8 + 8x2) = 96; c_attn in + qkv + c_proj in 4 x 40 = 160;
    # sdpa out 4x8 + logsumexp 4 x a s b = 4x4: 48; mlp 4 x (8 + 32 + 32) = 288; no masks
    got = layer_activation_bytes(1, 2, 4, 2, 16, FP32, attention="sdpa", dropout=False)
    assert got == 96 + 160 + 48 + 288


def test_layer_autocast_math_keeps_fp32_softmax_and_its_bf16_copy() -> None:
    # norms (fp32 residual) 96; attention matmuls 2 x 40 = 80; scores a s^2 b = 8 elements x
    # (4 softmax fp32 + 2 the bf16 cast att @ v saves) = 48; mlp 2 x 72 = 144
    got = layer_activation_bytes(1, 2, 4, 2, 16, AUTOCAST, attention="math", dropout=False)
    assert got == 96 + 80 + 48 + 144


def test_sdpa_keeps_no_scores_that_grow_with_seq_squared() -> None:
    short = attention_score_bytes(1, 64, 8, 2, HALF16, attention="sdpa", dropout=False)
    long = attention_score_bytes(1, 128, 8, 2, HALF16, attention="sdpa", dropout=False)
    assert long == 2 * short  # linear in s
    short_m = attention_score_bytes(1, 64, 8, 2, HALF16, attention="math", dropout=False)
    long_m = attention_score_bytes(1, 128, 8, 2, HALF16, attention="math", dropout=False)
    assert long_m == 4 * short_m  # quadratic in s


def test_gpt_tiny_activations_with_and_without_checkpointing() -> None:
    # B=1, T=2, C=64, f=256, 2 heads, fp32, sdpa: sbh = 128, sbf = 512
    # layer: norms 2 x (512 + 16) = 1056; attn 4 x 5 x 128 = 2560; sdpa 512 + 16 = 528;
    #        mlp 4 x (128 + 512 + 512) = 4608 -> 8752
    # outside: ids 8 x 2 = 16; ln_f 512 + 16 = 528; head input 512 -> 1056
    case = make_case(model="gpt-tiny", batch_size=1, seq_len=2)
    assert activation_bytes(case, tiny(), FP32) == 2 * 8752 + 1056
    # checkpointing: each block's input (4 x 128 per layer), one block live, the outside
    ckpt = case.replace(grad_ckpt=True)
    assert activation_bytes(ckpt, tiny(), FP32) == 2 * 4 * 128 + 8752 + 1056


def test_logits_and_loss_counts_logits_logprobs_and_two_fp32_gradients() -> None:
    # B x T x V = 1 x 2 x 256 = 512; bf16 logits 2 + 3 x 4 fp32 = 14; fp32: 4 + 12 = 16
    bf16 = make_case(model="gpt-tiny", batch_size=1, seq_len=2, precision="bf16")
    assert logits_and_loss_bytes(bf16, tiny(), precision_of(bf16)) == 14 * 512
    fp32 = bf16.replace(precision="fp32")
    assert logits_and_loss_bytes(fp32, tiny(), precision_of(fp32)) == 16 * 512


def test_precision_by_engine() -> None:
    assert precision_of(make_case(model="gpt-tiny", precision="bf16")) == AUTOCAST
    ds = make_case(model="gpt-tiny", precision="bf16", engine="deepspeed")
    assert precision_of(ds) == HALF16


# -- model states: the torch engine ---------------------------------------------------------------
def test_torch_engine_keeps_fp32_weights_grads_and_adamw_states_under_autocast() -> None:
    shape = tiny()
    assert shape.n_params == TINY_N
    case = make_case(model="gpt-tiny", batch_size=1, seq_len=2, precision="bf16")
    states = model_states(case, shape, "cpu")
    assert (states.parameters, states.grads_model, states.optimizer_states) == (
        4 * TINY_N,
        4 * TINY_N,
        8 * TINY_N,
    )
    assert states.master_weights == states.engine_buffers == 0
    # the CPU single-tensor AdamW: sqrt and quotient of the biggest tensor, V x C = 16384
    assert states.optimizer_workspace == 2 * 4 * 16384
    assert model_states(case, shape, "cuda").optimizer_workspace == 4 * TINY_N  # foreach
    fused = case.replace(fused_adamw=True)
    assert model_states(fused, shape, "cuda").optimizer_workspace == 0


def test_autocast_copies_of_the_matmul_weights_count_at_backward_start() -> None:
    # Linear params: 2 x (12 x 64^2 + 9 x 64) + lm_head 256 x 64 = 99456 + 16384
    shape = tiny()
    assert shape.matmul_params == 115_840
    case = make_case(model="gpt-tiny", batch_size=8, seq_len=128, precision="bf16")
    analysis = analyse(case, shape, "cpu")
    assert analysis.phase == "backward start"
    assert analysis.breakdown[parts.PARAMETERS] == 4 * TINY_N + 2 * 115_840


def test_grad_accum_holds_gradients_through_the_forward() -> None:
    case = make_case(model="gpt-tiny", batch_size=8, seq_len=128)
    shape = tiny()
    one = analyse(case, shape, "cpu")
    accum = analyse(case.replace(grad_accum=4), shape, "cpu")
    assert one.phase == accum.phase == "backward start"
    assert one.breakdown[parts.GRADIENTS] == 0
    assert accum.breakdown[parts.GRADIENTS] == 4 * TINY_N
    assert accum.tensor_bytes == one.tensor_bytes + 4 * TINY_N


def test_ddp_buckets_match_the_gradients() -> None:
    case = make_case(model="gpt-tiny", nproc=2)
    assert model_states(case, tiny(), "cuda").engine_buffers == 4 * TINY_N


def test_optimizer_step_wins_when_activations_are_small() -> None:
    case = make_case(model="gpt-tiny", batch_size=1, seq_len=2)
    analysis = analyse(case, tiny(), "cuda")
    assert analysis.phase == "optimizer step"
    assert analysis.breakdown[parts.ACTIVATIONS] == 0
    assert analysis.breakdown[parts.GRADIENTS] == 4 * TINY_N


def test_cuda_constants_and_fragmentation_only_on_cuda() -> None:
    case = make_case(model="gpt-tiny", batch_size=8, seq_len=128, precision="bf16")
    cpu = analyse(case, tiny(), "cpu").breakdown
    cuda = analyse(case, tiny(), "cuda").breakdown
    assert cpu[parts.CUDA_CONTEXT] == cpu[parts.WORKSPACE] == 0  # no cuBLAS on cpu
    assert cuda[parts.CUDA_CONTEXT] == 512 * 2**20 and cuda[parts.WORKSPACE] == 32 * 2**20
    # cuda: 10 % of what the allocator holds (the context is outside it)
    held = sum(cuda.values()) - cuda[parts.FRAGMENTATION] - cuda[parts.CUDA_CONTEXT]
    assert cuda[parts.FRAGMENTATION] == int(0.10 * held)
    # cpu: 15 % of the tensors + 64 MiB (measured, docs/estimate.md)
    tensors = sum(cpu.values()) - cpu[parts.FRAGMENTATION]
    assert cpu[parts.FRAGMENTATION] == int(0.15 * tensors) + 64 * 2**20
    assert tuple(cuda) == parts.DEVICE_PARTS


# -- model states: DeepSpeed, against its own estimators ------------------------------------------
@pytest.fixture(scope="module")
def stage_1_and_2() -> types.ModuleType:
    return pytest.importorskip("deepspeed.runtime.zero.stage_1_and_2")


@pytest.fixture(scope="module")
def stage3() -> types.ModuleType:
    return pytest.importorskip("deepspeed.runtime.zero.stage3")


def _one_b() -> ModelShape:
    return model_shape(make_case(model="gpt-1b"))


def _device_states(zero: int, nproc: int, **flags: object) -> int:
    case = make_case(
        model="gpt-1b", engine="deepspeed", precision="bf16", zero_stage=zero, nproc=nproc, **flags
    )
    s = deepspeed_states(case, _one_b(), "cuda")
    return s.parameters + s.master_weights + s.grads_model + s.grads_fp32 + s.optimizer_states


def _host_states(zero: int, nproc: int, **flags: object) -> int:
    case = make_case(
        model="gpt-1b", engine="deepspeed", precision="bf16", zero_stage=zero, nproc=nproc, **flags
    )
    return analyse(case, _one_b(), "cuda").host_bytes


@pytest.mark.parametrize("nproc", [1, 2, 4])
def test_zero2_matches_deepspeed_estimator(nproc: int, stage_1_and_2: types.ModuleType) -> None:
    n = _one_b().n_params
    cpu, gpu = stage_1_and_2.estimate_zero2_model_states_mem_needs(
        n, num_gpus_per_node=nproc, cpu_offload=False
    )
    # DeepSpeed: 2N + 18N/W; ours pads N to W equal partitions: at most 18 x W bytes more
    assert 0 <= _device_states(2, nproc) - gpu <= 18 * nproc
    # offload: the device keeps the 16-bit weights only (2N), as DeepSpeed says
    cpu, gpu = stage_1_and_2.estimate_zero2_model_states_mem_needs(
        n, num_gpus_per_node=nproc, cpu_offload=True
    )
    assert _device_states(2, nproc, offload_optimizer=True) == gpu == 2 * n
    # host: fp32 master, two states and fp32 gradients = 16N on the node; DeepSpeed's figure
    # is N x max(4W, 16) x additional_buffer_factor (1.5), i.e. 16N x 1.5 for W <= 4
    host = _host_states(2, nproc, offload_optimizer=True)
    assert host * 1.5 == pytest.approx(cpu, abs=16 * nproc * 1.5)


def test_zero1_keeps_whole_16bit_gradients_unlike_the_zero2_estimator(
    stage_1_and_2: types.ModuleType,
) -> None:
    # DeepSpeed ships no stage-1 estimator; its stage-2 one partitions the 16-bit grads,
    # which stage 1 keeps whole: ours = theirs + 2N (1 - 1/W)
    n, w = _one_b().n_params, 4
    _, gpu = stage_1_and_2.estimate_zero2_model_states_mem_needs(
        n, num_gpus_per_node=w, cpu_offload=False
    )
    assert _device_states(1, w) - gpu == pytest.approx(2 * n * (1 - 1 / w), abs=18 * w)


@pytest.mark.parametrize("nproc", [1, 2, 4])
def test_zero3_matches_deepspeed_estimator(nproc: int, stage3: types.ModuleType) -> None:
    shape = _one_b()
    n, largest = shape.n_params, shape.largest_layer_params

    def ours(**flags: object) -> int:
        case = make_case(
            model="gpt-1b", engine="deepspeed", precision="bf16", zero_stage=3, nproc=nproc, **flags
        )
        buffers = deepspeed_states(case, shape, "cuda").engine_buffers
        return _device_states(3, nproc, **flags) + buffers

    estimate = stage3.estimate_zero3_model_states_mem_needs
    # no offload: DeepSpeed's 4 x largest layer + 18N/W leaves out the 16-bit weight
    # partition (2N/W), which ours counts
    _, gpu, _ = estimate(n, largest, nproc, 1, cpu_offload=False, zero_init=False)
    assert ours() - gpu == pytest.approx(2 * n / nproc, abs=20 * nproc)
    # optimizer offload: 4 x largest layer + 2N/W on the device; 16N (x 1.5) on the host
    cpu, gpu, _ = estimate(
        n, largest, nproc, 1, cpu_offload=True, cpu_offload_params=False, zero_init=False
    )
    assert ours(offload_optimizer=True) == pytest.approx(gpu, abs=2 * nproc)
    host = _host_states(3, nproc, offload_optimizer=True)
    assert host * 1.5 == pytest.approx(cpu, abs=16 * nproc * 1.5)
    # and parameter offload: only the gathered layer on the device; 18N (x 1.5) on the host
    cpu, gpu, _ = estimate(
        n, largest, nproc, 1, cpu_offload=True, cpu_offload_params=True, zero_init=False
    )
    assert ours(offload_optimizer=True, offload_params=True) == gpu == 4 * largest
    host = _host_states(3, nproc, offload_optimizer=True, offload_params=True)
    assert host * 1.5 == pytest.approx(cpu, abs=18 * nproc * 1.5)


def test_zero_buckets_are_capped_at_the_model() -> None:
    case = make_case(model="gpt-tiny", engine="deepspeed", precision="bf16", zero_stage=2)
    # min(5e8, N) elements in bf16
    assert deepspeed_states(case, tiny(), "cuda").engine_buffers == 2 * TINY_N


def test_offload_on_a_cpu_profile_counts_in_the_capped_process() -> None:
    case = make_case(
        model="gpt-tiny", engine="deepspeed", zero_stage=2, offload_optimizer=True, nproc=2
    )
    on_cpu = analyse(case, tiny(), "cpu")
    on_cuda = analyse(case, tiny(), "cuda")
    assert on_cpu.host_breakdown == {}
    assert on_cuda.host_bytes > 0
    # each rank's own partition moves back: master 4, states 8, fp32 grads 0 (fp32 model)
    assert on_cpu.breakdown[parts.OPTIMIZER_STATES] == 8 * (TINY_N // 2)


# -- verdict --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("peak", "tensors", "capacity", "expected"),
    [
        (100, 90, 100, "fits"),  # peak at capacity fits
        (101, 90, 100, "over_capacity"),  # tensors fit, the margin does not
        (110, 100, 100, "over_capacity"),
        (120, 101, 100, "oom"),  # even the tensors do not fit
    ],
)
def test_verdict_bands(peak: int, tensors: int, capacity: int, expected: str) -> None:
    assert verdict(peak, tensors, capacity) == expected


def test_verdict_refuses_tensors_above_the_peak() -> None:
    with pytest.raises(ValueError, match="above peak_bytes"):
        verdict(10, 11, 100)


# -- estimate_case --------------------------------------------------------------------------------
def test_estimate_case_formulas_only() -> None:
    case = make_case(model="gpt2-small", batch_size=8, seq_len=1024, precision="bf16")
    profile = resolve_profile("rtx5080")
    estimate = estimate_case(case, profile, trace=False)
    assert estimate.peak_bytes == estimate_peak_bytes(case, profile)
    assert estimate.peak_bytes == sum(estimate.breakdown.values())
    assert estimate.headroom_bytes == profile.memory_bytes - estimate.peak_bytes
    assert estimate.traced_peak_bytes is None and estimate.method.startswith("formulas")
    small = resolve_profile("rtx5080:4GiB")
    assert estimate_case(case, small, trace=False).verdict == "oom"


def _fake_tracer(monkeypatch: pytest.MonkeyPatch, peak: int | None) -> None:
    import gpubench.estimate as estimate_module
    from gpubench.estimate.traced import TracedStep, TraceUnavailable

    def trace_case(case: object, device_kind: str) -> TracedStep:
        if peak is None:
            raise TraceUnavailable("fake: cannot run")
        return TracedStep(peak, {parts.ACTIVATIONS: peak}, seconds=0.0)

    monkeypatch.setattr(estimate_module, "trace_case", trace_case)


def test_traced_figures_sit_beside_the_formulas(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_tracer(monkeypatch, 12345)
    case = make_case(model="gpt-tiny")
    estimate = estimate_case(case, resolve_profile("cpu"))
    assert estimate.traced_peak_bytes == 12345
    assert estimate.traced_breakdown == {parts.ACTIVATIONS: 12345}
    assert estimate.peak_bytes == estimate_peak_bytes(case, resolve_profile("cpu"))


def test_trace_unavailable_becomes_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_tracer(monkeypatch, None)
    estimate = estimate_case(make_case(model="gpt-tiny"), resolve_profile("cpu"))
    assert estimate.traced_peak_bytes is None
    assert "not traced: fake: cannot run" in estimate.notes


def flat_model(vocab_size: int = 32):  # type: ignore[no-untyped-def]
    """A factory with no config: no layers or width to read."""
    import torch

    return torch.nn.Sequential(torch.nn.Embedding(vocab_size, 8), torch.nn.Linear(8, vocab_size))


def test_model_without_shape_uses_the_traced_peak(monkeypatch: pytest.MonkeyPatch) -> None:
    case = make_case(model="test_estimate_analytical:flat_model", vocab_size=32)
    shape = model_shape(case)
    assert not shape.describable and shape.n_params == 32 * 8 + 8 * 32 + 32
    bound = estimate_case(case, resolve_profile("cpu"), trace=False)
    assert "LOWER BOUND" in bound.method
    assert any("activations not computed" in note for note in bound.notes)
    _fake_tracer(monkeypatch, 10**6)
    traced = estimate_case(case, resolve_profile("cpu"))
    # the trace's tensors, and the allocator's margin the formulas add on the cpu
    assert traced.peak_bytes == 10**6 + fragmentation_bytes(10**6, "cpu")
    assert traced.method.startswith("traced step") and traced.verdict == "fits"


def test_hf_shape_from_a_meta_build() -> None:
    pytest.importorskip("transformers")
    config = {"n_layer": 2, "n_embd": 64, "n_head": 2}
    case = make_case(model="hf:gpt2", model_config=config, vocab_size=128, seq_len=32)
    shape = model_shape(case)
    assert (shape.n_layer, shape.d_model, shape.n_head, shape.ffn_dim) == (2, 64, 2, 256)
    assert shape.tied_head and shape.dropout  # GPT-2's config: tied, resid_pdrop 0.1
    # the built-in GPT's count of the same shape: GPT-2 and nanoGPT have the same weights
    # (positions: transformers' default n_positions 1024)
    from gpubench.contracts.catalog.sizes import gpt_param_count

    assert shape.n_params == gpt_param_count(2, 64, 128, 1024)
    assert shape.describable
    assert not any("taken as GPT-2's" in a for a in shape.assumptions)


def test_other_hf_blocks_are_flagged_as_approximated() -> None:
    pytest.importorskip("transformers")
    config = {
        "num_hidden_layers": 2,
        "hidden_size": 64,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
    }
    case = make_case(model="hf:llama", model_config=config, vocab_size=128, seq_len=32)
    shape = model_shape(case)
    assert (shape.n_layer, shape.d_model, shape.ffn_dim) == (2, 64, 128)
    assert any("taken as GPT-2's" in a for a in shape.assumptions)


@pytest.mark.parametrize(
    "settings",
    [
        dict(engine="deepspeed", zero_stage=3, precision="bf16"),
        dict(engine="fsdp", precision="bf16"),
    ],
)
def test_states_shard_over_every_gpu_of_every_node(settings: dict[str, object]) -> None:
    """Two nodes of two GPUs shard ZeRO's and FSDP's states four ways, as four GPUs on one
    node do: the rendezvous joins the nodes into one world."""
    shape = model_shape(make_case(model="gpt-mini"))
    two_nodes = make_case(model="gpt-mini", nproc=2, nnodes=2, **settings)
    one_node = make_case(model="gpt-mini", nproc=4, **settings)
    assert model_states(two_nodes, shape, "cuda") == model_states(one_node, shape, "cuda")
    halves = model_states(make_case(model="gpt-mini", nproc=2, **settings), shape, "cuda")
    assert model_states(two_nodes, shape, "cuda").optimizer_states < halves.optimizer_states
