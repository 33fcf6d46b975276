"""FLOPs per token and MFU: the PaLM count, for built-in, factory and Hugging Face models."""

from __future__ import annotations

import pytest
import torch

from gpubench.contracts.case import make_case
from gpubench.contracts.flops import case_flops_per_token, mfu, peak_flops, training_flops_per_token
from gpubench.contracts.profiles import resolve_profile
from gpubench.contracts.result import Metrics, Stats
from gpubench.worker.engines.context import TrainingContext
from gpubench.worker.engines.distributed import Ranks
from gpubench.worker.engines.run_metrics import with_model_flops
from gpubench.worker.models import build_model


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


# -- a model the worker built: N counted on the module -------------------------------------


class TinyLM(torch.nn.Module):
    """A factory model with untied input and output tables and a learned positional one."""

    def __init__(self, vocab_size: int = 64, d_model: int = 16, n_layer: int = 1) -> None:
        super().__init__()
        self.vocab_size, self.d_model, self.n_layer = vocab_size, d_model, n_layer
        self.tok = torch.nn.Embedding(vocab_size, d_model)  # a lookup: not in N
        self.pos = torch.nn.Embedding(32, d_model)  # a lookup: not in N
        self.blocks = torch.nn.ModuleList(
            torch.nn.Linear(d_model, d_model, bias=False) for _ in range(n_layer)
        )
        self.norm = torch.nn.LayerNorm(d_model)
        self.head = torch.nn.Linear(d_model, vocab_size, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
        for block in self.blocks:
            x = x + block(x)
        return self.head(self.norm(x))


def tiny_lm(n_layer: int = 1) -> torch.nn.Module:
    return TinyLM(n_layer=n_layer)


class Shapeless(TinyLM):
    """The same model without the attributes its depth and width are read from."""

    def __getattribute__(self, name: str) -> object:
        if name in ("n_layer", "d_model"):
            raise AttributeError(name)
        return super().__getattribute__(name)


def shapeless() -> torch.nn.Module:
    return Shapeless()


def test_a_factory_model_counts_its_matmuls_not_its_lookups() -> None:
    case = make_case(model="tests.test_flops:tiny_lm", model_config={"n_layer": 2}, seq_len=8)
    built = build_model(case, "cpu")
    # hand count: 2 blocks of 16 x 16, the untied head 16 x 64, the LayerNorm's 2 x 16;
    # the token table (64 x 16) and the positional one (32 x 16) are lookups
    n = 2 * 16 * 16 + 16 * 64 + 2 * 16
    assert built.matmul_params == n == built.n_params - 64 * 16 - 32 * 16
    assert built.flops_per_token(8) == 6 * n + 12 * 2 * 16 * 8


def test_a_factory_model_without_a_readable_shape_has_no_count() -> None:
    built = build_model(make_case(model="tests.test_flops:shapeless", seq_len=8), "cpu")
    assert built.matmul_params > 0 and built.flops_per_token(8) is None


HF_GPT2 = {"n_layer": 2, "n_embd": 32, "n_head": 2, "vocab_size": 64, "n_positions": 16}
HF_LLAMA = {
    "num_hidden_layers": 2,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "vocab_size": 64,
    "max_position_embeddings": 16,
}


def test_hf_gpt2_counts_its_conv1d_and_the_tied_head() -> None:
    pytest.importorskip("transformers")
    built = build_model(make_case(model="hf:gpt2", model_config=HF_GPT2, seq_len=16), "cpu")
    # per layer (d = 32): two LayerNorms 4d, c_attn d x 3d + 3d, c_proj d x d + d, c_fc
    # d x 4d + 4d, mlp c_proj 4d x d + d = 12 d^2 + 13 d; ln_f 2d; the token table tied to
    # the head V x d; the positional table (16 x 32) out
    d, layers, vocab = 32, 2, 64
    n = layers * (12 * d * d + 13 * d) + 2 * d + vocab * d
    assert built.matmul_params == n == 27_520
    assert built.flops_per_token(16) == 6 * n + 12 * layers * d * 16


def test_hf_llama_leaves_its_untied_input_table_out() -> None:
    pytest.importorskip("transformers")
    built = build_model(make_case(model="hf:llama", model_config=HF_LLAMA, seq_len=16), "cpu")
    # per layer (d = 32, MLP 64): q, k, v, o 4 d^2, gate, up, down 3 x d x 64, two RMSNorms
    # 2d; the final norm d; the untied head V x d; embed_tokens (V x d) a lookup
    d, layers, vocab = 32, 2, 64
    n = layers * (4 * d * d + 3 * d * 64 + 2 * d) + d + vocab * d
    assert built.matmul_params == n == 22_688
    assert built.flops_per_token(16) == 6 * n + 12 * layers * d * 16


def test_a_built_in_counts_the_same_built_or_not() -> None:
    case = make_case(model="gpt-tiny", seq_len=16)
    assert build_model(case, "cpu").flops_per_token(16) == case_flops_per_token(case)


# -- the worker's Metrics: model FLOP/s and MFU -----------------------------------------------


def _metrics(profile: str, tokens_per_s: float, world_size: int = 1, **flags: object) -> Metrics:
    case = make_case(model="gpt2-small", seq_len=1024, nproc=world_size, **flags)
    ctx = TrainingContext(
        case, resolve_profile(profile), torch.device("cpu"), Ranks(world_size=world_size)
    )
    measured = Metrics(tokens_per_s=Stats.of([tokens_per_s]))
    return with_model_flops(measured, ctx, case_flops_per_token(case))


def test_mfu_of_gpt2_small_on_an_a100_by_hand() -> None:
    # GPT-2 124M at T = 1024: 6 x 123,653,376 + 12 x 12 x 768 x 1024 = 855,166,464
    # FLOPs/token. 100,000 tok/s on one A100 in bf16: 8.5517e13 FLOP/s of the datasheet's
    # dense 312e12, MFU 27.41 %; the same tokens/s on two A100s, 13.70 %.
    one = _metrics("a100-80gb", 100_000.0, precision="bf16")
    assert one.model_flops_per_token == 855_166_464
    assert one.model_flops_per_s == pytest.approx(8.55166464e13)
    assert one.mfu == pytest.approx(0.274092, rel=1e-5)
    two = _metrics("a100-80gb", 100_000.0, world_size=2, precision="bf16")
    assert two.mfu == pytest.approx(0.274092 / 2, rel=1e-5)


def test_no_mfu_without_the_profile_s_peak_for_the_precision() -> None:
    on_cpu = _metrics("cpu", 1_000.0)  # the cpu profile states no peak
    assert on_cpu.model_flops_per_s == pytest.approx(855_166_464_000) and on_cpu.mfu is None
    tf32 = _metrics("a100-80gb", 1_000.0, precision="fp32", tf32=True)  # no TF32 figure
    assert tf32.model_flops_per_s is not None and tf32.mfu is None
    fp32 = _metrics("a100-80gb", 1_000.0, precision="fp32")
    assert fp32.mfu == pytest.approx(855_166_464_000 / 19.5e12)


def test_no_model_flops_without_throughput() -> None:
    case = make_case(model="gpt2-small", seq_len=1024)
    ctx = TrainingContext(case, resolve_profile("a100-80gb"), torch.device("cpu"), Ranks())
    stopped = with_model_flops(Metrics(), ctx, 855_166_464.0)  # an oom: no tokens/s
    assert stopped.model_flops_per_token == 855_166_464
    assert stopped.model_flops_per_s is None and stopped.mfu is None
