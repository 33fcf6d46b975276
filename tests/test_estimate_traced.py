"""The traced memory model: a training step on fake tensors under torch's MemTracker."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import torch

from gpubench.contracts.case import Case, make_case
from gpubench.estimate import parts
from gpubench.estimate import traced as traced_module
from gpubench.estimate.traced import (
    TracedStep,
    TraceUnavailable,
    clear_trace_cache,
    cuda_kernels,
    cuda_sdpa_backend,
    step_case,
    trace_case,
    trace_training_steps,
)
from gpubench.worker.models import BUILTIN_MODELS, build_model

MiB = 2**20
TINY_PARAMS = BUILTIN_MODELS["gpt-tiny"].param_count  # 124,672
MINI_PARAMS = BUILTIN_MODELS["gpt-mini"].param_count  # 4,273,664
STEP_SCALAR = 4  # AdamW's fp32 "step" count, one per parameter tensor


def _tensors(model: str) -> int:
    """Parameter tensors of a built-in model (tied weights once), without building it."""
    return sum(1 for _ in build_model(Case(model=model), "meta").module.parameters())


def _trace(model: str = "gpt-tiny", kind: str = "cpu", **settings: object) -> TracedStep:
    settings.setdefault("batch_size", 2)
    settings.setdefault("seq_len", 32)
    return trace_case(make_case(model=model, **settings), kind)


def _part(traced: TracedStep, name: str) -> int:
    return traced.breakdown.get(name, 0)


# -- hand-computable parts ---------------------------------------------------------------------


def test_gpt_tiny_parts_are_the_hand_counts() -> None:
    """On "cuda" AdamW is torch's foreach implementation, whose sqrt(exp_avg_sq) list is a
    temporary as large as the parameters: gpt-tiny's activations are small enough that the
    peak is in the optimizer step, with 4 + 4 + 8 + 4 bytes per parameter live."""
    traced = _trace(kind="cuda")
    n, k = TINY_PARAMS, _tensors("gpt-tiny")
    assert _part(traced, parts.PARAMETERS) == 4 * n
    assert _part(traced, parts.GRADIENTS) == 4 * n
    assert _part(traced, parts.OPTIMIZER_STATES) == 8 * n + STEP_SCALAR * k
    assert 4 * n <= _part(traced, parts.WORKSPACE) <= 4 * n + 1024  # + the clip's scalars
    assert traced.peak_bytes == sum(traced.breakdown.values())
    assert traced.peak_bytes == pytest.approx(20 * n, abs=2048)


def test_gpt_mini_model_states_are_the_hand_counts() -> None:
    traced = _trace("gpt-mini", batch_size=2, seq_len=64)
    n, k = MINI_PARAMS, _tensors("gpt-mini")
    assert _part(traced, parts.PARAMETERS) == 4 * n
    assert _part(traced, parts.OPTIMIZER_STATES) == 8 * n + STEP_SCALAR * k  # step 2: resident
    assert 0 <= _part(traced, parts.GRADIENTS) <= 4 * n  # made during the backward
    assert traced.peak_bytes == sum(traced.breakdown.values())


def test_the_head_is_its_own_part() -> None:
    """gpt-mini's 4096-token vocabulary at batch 4 x 128: the fp32 logits alone are 8 MiB,
    and the logits, their log-softmax and its gradient are live together in the loss."""
    traced = _trace("gpt-mini", batch_size=4, seq_len=128)
    logits_fp32 = 4 * 128 * 4096 * 4
    assert _part(traced, parts.LOGITS_AND_LOSS) >= 2 * logits_fp32


# -- the fake trace against a real step --------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "settings"),
    [("cpu", {}), ("cpu", {"precision": "bf16"}), ("cpu", {"precision": "bf16-pure"}),
     ("cpu", {"attention": "math"}),
     ("cpu", {"grad_ckpt": True, "grad_accum": 2}),
     ("cuda", {"precision": "bf16", "attention": "math", "grad_ckpt": True})],
)  # fmt: skip
def test_fake_trace_matches_the_real_cpu_step(kind: str, settings: dict[str, object]) -> None:
    """The same step on real CPU tensors under the same tracker. MemTracker counts each
    storage's bytes (elements x element size), which depend on shapes and dtypes only, and
    the fake and real steps run the same ops on the same device kind: the figures are equal,
    byte for byte, not merely close."""
    case = make_case(model="gpt-tiny", batch_size=2, seq_len=32, **settings)
    torch.manual_seed(0)
    built = build_model(case, "cpu")
    real = trace_training_steps(step_case(case), built, "cpu", as_cuda=kind == "cuda")
    fake = trace_case(case, kind)
    assert fake.peak_bytes == real.peak_bytes
    assert fake.breakdown == real.breakdown


@pytest.mark.parametrize(
    ("kind", "settings"),
    [("cpu", {}), ("cuda", {}), ("cuda", {"fused_adamw": True}),
     ("cuda", {"precision": "bf16", "grad_ckpt": True, "grad_accum": 2}),
     ("cpu", {"batch_size": 16, "seq_len": 128})],
)  # fmt: skip
def test_the_first_step_peaks_no_higher_than_the_steady_one(
    kind: str, settings: dict[str, object]
) -> None:
    """Why one primed step is traced: the cold first step, which makes AdamW's states, never
    holds more than a step that starts with them."""
    case = step_case(make_case(model="gpt-tiny", **{"batch_size": 2, "seq_len": 32, **settings}))
    as_cuda = kind == "cuda"
    cold = trace_training_steps(case, build_model(case, "cpu"), "cpu", as_cuda, primed=False)
    steady = trace_training_steps(case, build_model(case, "cpu"), "cpu", as_cuda)
    assert cold.peak_bytes <= steady.peak_bytes


# -- flags move the activations ----------------------------------------------------------------


def test_grad_ckpt_lowers_the_activations() -> None:
    plain = _trace("gpt-mini", batch_size=8, seq_len=256)
    ckpt = _trace("gpt-mini", batch_size=8, seq_len=256, grad_ckpt=True)
    assert _part(ckpt, parts.ACTIVATIONS) < _part(plain, parts.ACTIVATIONS) / 2
    assert ckpt.peak_bytes < plain.peak_bytes


def test_math_attention_keeps_the_scores() -> None:
    """The explicit softmax saves [B, nh, T, T] fp32 probabilities per layer; SDPA's kernel
    saves an O(T) log-sum-exp. At T=256 the difference is at least one score tensor per
    layer (gpt-mini: 4 layers, 4 heads)."""
    sdpa = _trace("gpt-mini", batch_size=8, seq_len=256)
    math = _trace("gpt-mini", batch_size=8, seq_len=256, attention="math")
    scores = 8 * 4 * 256 * 256 * 4
    assert _part(math, parts.ACTIVATIONS) - _part(sdpa, parts.ACTIVATIONS) >= 4 * scores


def test_cuda_autocast_keeps_the_softmax_in_fp32() -> None:
    """CUDA autocast runs softmax in fp32 and the next matmul casts it back to bf16, both
    saved for the backward (4 + 2 bytes a score); CPU autocast saves one bf16 copy (2): 4
    bytes more per score, B x nh x T^2 scores per layer."""
    settings = {"batch_size": 8, "seq_len": 256, "precision": "bf16", "attention": "math"}
    on_cpu = _trace("gpt-mini", "cpu", **settings)
    on_cuda = _trace("gpt-mini", "cuda", **settings)
    scores = 8 * 4 * 256 * 256
    extra = _part(on_cuda, parts.ACTIVATIONS) - _part(on_cpu, parts.ACTIVATIONS)
    assert extra >= 4 * scores * 4  # gpt-mini: 4 layers


def test_bf16_activations_are_smaller_than_fp32() -> None:
    fp32 = _trace("gpt-mini", batch_size=8, seq_len=256)
    bf16 = _trace("gpt-mini", batch_size=8, seq_len=256, precision="bf16")
    assert _part(bf16, parts.ACTIVATIONS) < 0.8 * _part(fp32, parts.ACTIVATIONS)
    assert _part(bf16, parts.PARAMETERS) == _part(fp32, parts.PARAMETERS)  # fp32 weights


# -- CUDA's kernels where CPU's hold other memory ---------------------------------------------


def _saved(fn: object, *inputs: torch.Tensor) -> list[tuple[tuple[int, ...], torch.dtype]]:
    """(shape, dtype) of every tensor autograd saves while ``fn(*inputs)`` runs."""
    saved: list[tuple[tuple[int, ...], torch.dtype]] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append((tuple(t.shape), t.dtype))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*inputs)  # type: ignore[operator]
    return saved


def test_cpu_dropout_saves_its_mask_in_the_input_dtype_and_cuda_kernels_a_bool() -> None:
    """The difference itself, on fake tensors as the trace runs: CPU's ``dropout`` saves its
    scaled noise in the input's dtype, CUDA's ``native_dropout`` (and the trace's) a bool."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    def drop(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.dropout(x, 0.1, training=True)

    with FakeTensorMode():
        x = torch.empty(4, 8, requires_grad=True)
        assert _saved(drop, x) == [((4, 8), torch.float32)]
        with cuda_kernels():
            assert _saved(drop, x) == [((4, 8), torch.bool)]
            assert _saved(lambda t: torch.nn.functional.dropout(t, 0.1, False), x) == []


def test_sdpa_with_dropout_saves_what_a_fused_cuda_kernel_saves() -> None:
    """CPU has no fused SDPA kernel with dropout: it takes the math path, [T, T] tensors.
    Under :func:`cuda_kernels` the fused kernel's set: q, k, v, the output and an O(T) fp32
    log-sum-exp (the RNG seed and offset CUDA adds are 16 bytes, not traced)."""
    q = torch.randn(2, 2, 16, 8, requires_grad=True)

    def attend(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.scaled_dot_product_attention(
            t, t, t, dropout_p=0.1, is_causal=True
        )

    assert ((2, 2, 16, 16), torch.float32) in _saved(attend, q)  # the math path's scores
    with cuda_kernels():
        saved = _saved(attend, q)
    assert sorted(saved, key=str) == sorted(
        [((2, 2, 16, 8), torch.float32)] * 4 + [((2, 2, 16), torch.float32)], key=str
    )


@pytest.mark.parametrize(
    ("dtype", "head_dim", "mask", "backend"),
    [(torch.bfloat16, 64, False, "flash"), (torch.float16, 256, False, "flash"),
     (torch.bfloat16, 64, True, "efficient"), (torch.float32, 64, False, "efficient"),
     (torch.bfloat16, 512, False, "efficient"), (torch.float32, 6, False, "math"),
     (torch.bfloat16, 12, False, "math")],
)  # fmt: skip
def test_the_cuda_sdpa_backend_rule(
    dtype: torch.dtype, head_dim: int, mask: bool, backend: str
) -> None:
    assert cuda_sdpa_backend(dtype, head_dim, head_dim, mask) == backend


def test_every_builtin_head_size_gets_a_fused_cuda_kernel() -> None:
    """Why the trace's CPU SDPA kernel (an O(T) log-sum-exp) stands for CUDA's on every
    built-in model, in fp32 and bf16 (see the module docstring on CUDA's math fallback)."""
    for size in BUILTIN_MODELS.values():
        for dtype in (torch.float32, torch.bfloat16):
            head = size.n_embd // size.n_head
            assert cuda_sdpa_backend(dtype, head, head, False) != "math", size


B, T, C, NH, L = 8, 256, 256, 4, 4  # gpt-mini at batch 8 x 256
SCORES = B * NH * T * T  # attention scores per layer
SBH = B * T * C  # one [B, T, C] activation's elements


@pytest.mark.parametrize(
    ("attention", "precision", "per_score"),
    [("sdpa", "fp32", 0), ("sdpa", "bf16", 0), ("math", "fp32", 1 + 4), ("math", "bf16", 1)],
)  # fmt: skip
def test_dropout_costs_bool_masks_on_cuda(attention: str, precision: str, per_score: int) -> None:
    """gpt-mini with dropout 0.1 against 0, traced for CUDA, by hand: a bool mask per dropout
    on [B, T, C] (after each block's attention and MLP, and the embedding's: 2L + 1); with
    ``math`` attention a bool mask per score and, in fp32, the dropped probabilities that
    ``att @ v`` saves (4 bytes; without dropout it saves the softmax output itself, and
    under autocast its bf16 copy either way). SDPA's fused kernel keeps no mask."""
    settings = {"batch_size": B, "seq_len": T, "attention": attention, "precision": precision}
    plain = _trace("gpt-mini", "cuda", **settings)
    dropped = _trace("gpt-mini", "cuda", model_config={"dropout": 0.1}, **settings)
    masks = (2 * L + 1) * SBH
    extra = _part(dropped, parts.ACTIVATIONS) - _part(plain, parts.ACTIVATIONS)
    assert extra == masks + L * SCORES * per_score


def test_dropout_on_the_cpu_keeps_the_cpus_masks() -> None:
    """A ``cpu`` trace is what the CPU holds: masks in fp32 (4 bytes) and SDPA's math path
    under dropout, 12 bytes a score (fp32 probabilities, mask and dropped probabilities) less
    the log-sum-exp the flash kernel saved: the figure the CUDA trace no longer counts."""
    settings = {"batch_size": B, "seq_len": T}
    plain = _trace("gpt-mini", "cpu", **settings)
    dropped = _trace("gpt-mini", "cpu", model_config={"dropout": 0.1}, **settings)
    extra = _part(dropped, parts.ACTIVATIONS) - _part(plain, parts.ACTIVATIONS)
    assert extra == 4 * (2 * L + 1) * SBH + L * (12 * SCORES - 4 * B * NH * T)


def test_the_formulas_count_dropout_as_the_cuda_trace_does() -> None:
    """The formulas assume bool masks ([K22]); the CUDA trace now holds them too: the
    activations of gpt-mini with dropout agree within the compare tests' 15 %."""
    from gpubench.contracts.profiles.builtin import builtin_profiles
    from gpubench.estimate import estimate_case

    for attention in ("sdpa", "math"):
        case = make_case(
            model="gpt-mini", batch_size=B, seq_len=T, attention=attention,
            precision="bf16", model_config={"dropout": 0.1},
        )  # fmt: skip
        formulas = estimate_case(case, builtin_profiles()["h100-sxm"], trace=False)
        traced = trace_case(case, "cuda")
        assert _part(traced, parts.ACTIVATIONS) == pytest.approx(
            formulas.breakdown[parts.ACTIVATIONS], rel=0.15
        )


# -- one step: the engine's ----------------------------------------------------------------------


def test_the_trace_runs_the_engines_own_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """The traced step is ``TorchTrainStep`` itself, not a copy of it: every micro-batch
    goes through the engine's own ``_micro_batch``, so a change to the engine's step
    reaches the trace."""
    from gpubench.worker.engines import torch_engine

    calls: list[bool] = []
    real = torch_engine.TorchTrainStep._micro_batch

    def counted(self: torch_engine.TorchTrainStep, loss_sum: torch.Tensor, last: bool) -> None:
        calls.append(last)
        real(self, loss_sum, last)

    monkeypatch.setattr(torch_engine.TorchTrainStep, "_micro_batch", counted)
    clear_trace_cache()
    _trace(grad_accum=3)
    assert calls == [False, False, True]
    clear_trace_cache()


# -- models beyond the built-in GPT ------------------------------------------------------------


def test_a_shrunk_hf_model_traces_without_a_download() -> None:
    pytest.importorskip("transformers")
    config = {"n_layer": 2, "n_embd": 64, "n_head": 2, "vocab_size": 1000}
    case = Case(model="hf:gpt2", batch_size=2, seq_len=32, model_config=config)
    n = build_model(case, "meta").n_params
    traced = trace_case(case, "cpu")
    assert _part(traced, parts.PARAMETERS) == 4 * n
    assert 8 * n <= _part(traced, parts.OPTIMIZER_STATES) <= 8 * n + 1024
    assert traced.peak_bytes == sum(traced.breakdown.values())


_FACTORIES = """
import torch
from torch import nn


class Bigram(nn.Module):
    def __init__(self, vocab_size: int, width: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.emb = nn.Embedding(vocab_size, width)
        self.head = nn.Linear(width, vocab_size)

    def forward(self, idx):
        return (self.head(torch.tanh(self.emb(idx))),)


class Branchy(Bigram):
    def forward(self, idx):
        h = self.emb(idx)
        if h.sum() > 0:  # control flow on a value: a fake tensor has none
            h = h * 2
        return self.head(h)


def make(vocab_size: int = 64, width: int = 32) -> Bigram:
    return Bigram(vocab_size, width)


def branchy() -> Branchy:
    return Branchy(64, 32)


def broken() -> nn.Module:
    raise RuntimeError("weights file missing")
"""


@pytest.fixture
def factories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A user's model module on sys.path; returns its name."""
    name = f"traced_models_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(_FACTORIES))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_a_factory_model_traces(factories: str) -> None:
    traced = trace_case(Case(model=f"{factories}:make", batch_size=2, seq_len=16), "cpu")
    n = 64 * 32 + 32 * 64 + 64
    assert _part(traced, parts.PARAMETERS) == 4 * n
    assert _part(traced, parts.OPTIMIZER_STATES) == 8 * n + STEP_SCALAR * 3


@pytest.mark.parametrize(
    ("factory", "reason"),
    [("branchy", "tracing its training step.*DataDependent"),
     ("broken", "building the model.*weights file missing")],
)  # fmt: skip
def test_a_model_that_cannot_be_traced_says_why(factories: str, factory: str, reason: str) -> None:
    case = Case(model=f"{factories}:{factory}", batch_size=2, seq_len=16, vocab_size=64)
    with pytest.raises(TraceUnavailable, match=reason):
        trace_case(case, "cpu")
    with pytest.raises(TraceUnavailable, match=reason):  # the failure is cached, not retried
        trace_case(case, "cpu")


# -- what the trace stands for, and its cache --------------------------------------------------


def test_other_engines_and_launches_are_traced_as_the_torch_step_with_notes() -> None:
    plain = _trace()
    ds = _trace(engine="deepspeed", zero_stage=2, nproc=2, compile=False)
    assert not plain.engine_equivalent and plain.notes == ()
    assert ds.engine_equivalent
    assert ds.peak_bytes == plain.peak_bytes  # one rank's torch step, batch per rank
    assert any("deepspeed" in note for note in ds.notes)
    assert any("one rank of 2" in note for note in ds.notes)
    assert any("eager" in note for note in _trace(compile=True).notes)
    assert any("fake CPU device" in note for note in _trace(kind="cuda").notes)
    assert any("GradScaler" in note for note in _trace(precision="fp16").notes)


def test_traces_are_cached_on_what_the_step_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    traces: list[Case] = []
    real_trace = traced_module._trace_fake

    def counted(case: Case, device_kind: str) -> TracedStep:
        traces.append(case)
        return real_trace(case, device_kind)

    monkeypatch.setattr(traced_module, "_trace_fake", counted)
    clear_trace_cache()
    first = _trace("gpt-mini", batch_size=2, seq_len=64)
    again = _trace("gpt-mini", batch_size=2, seq_len=64, steps=100, seed=7, name="other")
    assert again == first and len(traces) == 1  # steps, seed and name hold no memory
    assert _trace("gpt-mini", batch_size=4, seq_len=64).peak_bytes > first.peak_bytes
    _trace("gpt-mini", "cuda", batch_size=2, seq_len=64)
    assert len(traces) == 3  # another batch, another device kind: traced anew


def test_an_unknown_device_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="valid: cuda, cpu"):
        _trace(kind="tpu")


def test_a_1b_model_costs_no_real_memory() -> None:
    """Real, gpt-1b's fp32 weights alone are 4 GiB (16 GiB with gradients and AdamW). The
    bound leaves room for what the first trace imports and the tracker's bookkeeping of a
    few thousand ops, which is ~100 MiB here; the gpt-tiny trace warms the imports up."""
    _trace()
    process = psutil.Process()
    before = process.memory_info().rss
    traced = _trace("gpt-1b", batch_size=1, seq_len=256)
    grown = process.memory_info().rss - before
    assert traced.peak_bytes > 16 * 1000 * MiB  # the fake step did hold a 1B model's states
    assert grown < 400 * MiB, f"RSS grew {grown / MiB:.0f} MiB"
