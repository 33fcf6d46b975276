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
    [("cpu", {}), ("cpu", {"precision": "bf16"}), ("cpu", {"attention": "math"}),
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
