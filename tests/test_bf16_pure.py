"""precision="bf16-pure": weights, gradients and AdamW's states in bf16, no autocast.

Each engine trains a bf16-pure gpt-tiny on CPU with falling loss; the torch and FSDP cases
are run in process so the test can read the step's parameters and optimizer states, and
assert their dtype. The estimator's formulas differ from autocast bf16 where pure bf16
keeps less (weights, gradients, AdamW states).
"""

from __future__ import annotations

import importlib.util
import socket
from typing import Any

import pytest
import torch
from in_process import train

from gpubench.contracts.case import Case, CaseError, make_case
from gpubench.contracts.flops import peak_flops
from gpubench.contracts.profiles import resolve_profile
from gpubench.estimate import parts
from gpubench.estimate.analytical import analyse
from gpubench.estimate.shape import model_shape
from gpubench.estimate.traced import trace_case
from gpubench.runner import run_case
from gpubench.worker.engines.deepspeed_config import deepspeed_config
from gpubench.worker.engines.fsdp_engine import FSDPEngine
from gpubench.worker.engines.torch_engine import TorchEngine

# gpt-tiny learns the learnable stream within a few tens of steps at this learning rate
TRAINING = dict(model="gpt-tiny", batch_size=8, seq_len=32, steps=16, warmup=2, lr=3e-3, seed=1)


def captured_step(monkeypatch: pytest.MonkeyPatch, engine: type) -> list[Any]:
    """The step objects ``engine.build_step`` returns, kept for the test to inspect."""
    steps: list[Any] = []
    build = engine.build_step

    def keep(self: Any, *args: Any) -> Any:
        steps.append(build(self, *args))
        return steps[-1]

    monkeypatch.setattr(engine, "build_step", keep)
    return steps


def check_falls(case: Case, result: Any) -> None:
    assert result.status == "ok", result.describe()
    metrics = result.metrics
    assert metrics.nonfinite_steps == 0
    assert metrics.loss_decreased, result.series.loss
    assert metrics.loss_end < 0.95 * metrics.loss_start, result.series.loss


def check_bf16_states(optimizer: torch.optim.Optimizer) -> None:
    """Every parameter AdamW steps on, and its exp_avg and exp_avg_sq, are bf16."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    assert params and {p.dtype for p in params} == {torch.bfloat16}
    states = [optimizer.state[p] for p in params]
    assert all(s for s in states)  # it stepped: every parameter has its states
    assert {s["exp_avg"].dtype for s in states} == {torch.bfloat16}
    assert {s["exp_avg_sq"].dtype for s in states} == {torch.bfloat16}


def test_torch_bf16_pure_trains_with_bf16_weights_and_states(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    steps = captured_step(monkeypatch, TorchEngine)
    case = make_case(**TRAINING, data="learnable", precision="bf16-pure")
    result = train(case)
    check_falls(case, result)
    (step,) = steps
    assert step.autocast_dtype is None and step.scaler is None  # no autocast, no scaler
    assert {p.dtype for p in step.model.module.parameters()} == {torch.bfloat16}
    check_bf16_states(step.optimizer)
    assert result.series.loss_scale == [] and result.metrics.skipped_steps is None


def test_bf16_autocast_keeps_fp32_weights_and_states(monkeypatch: pytest.MonkeyPatch) -> None:
    """The contrast that makes the test above mean something: autocast bf16 steps fp32."""
    steps = captured_step(monkeypatch, TorchEngine)
    train(make_case(**{**TRAINING, "steps": 2, "warmup": 0}, precision="bf16"))
    (step,) = steps
    assert {p.dtype for p in step.params} == {torch.float32}
    assert {s["exp_avg"].dtype for s in step.optimizer.state.values()} == {torch.float32}


def test_fsdp_bf16_pure_trains_with_bf16_shards_and_states(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    steps = captured_step(monkeypatch, FSDPEngine)
    case = make_case(**TRAINING, data="learnable", engine="fsdp", precision="bf16-pure")
    result = train(case)
    check_falls(case, result)
    (step,) = steps
    assert {p.dtype for p in step.params} == {torch.bfloat16}  # the DTensor shards
    check_bf16_states(step.optimizer)


# -- DeepSpeed -----------------------------------------------------------------------------------

needs_deepspeed = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed"
)


def test_deepspeed_bf16_pure_config_keeps_bf16_master_weights_and_states() -> None:
    case = make_case(**TRAINING, engine="deepspeed", precision="bf16-pure", zero_stage=2)
    config = deepspeed_config(case, resolve_profile("cpu"))
    assert config["bf16"] == {
        "enabled": True,
        "bf16_master_weights_and_grads": True,
        "bf16_optimizer_states": True,
    }
    assert "fp16" not in config


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (dict(zero_stage=0), "needs zero_stage 1, 2 or 3"),
        (dict(zero_stage=2, offload_optimizer=True), "cannot offload the optimizer"),
    ],
)
def test_deepspeed_refuses_bf16_pure_where_it_keeps_fp32_states(
    flags: dict[str, object], says: str
) -> None:
    with pytest.raises(CaseError, match=f"precision='bf16-pure' with engine='deepspeed' {says}"):
        make_case(**TRAINING, engine="deepspeed", precision="bf16-pure", **flags)
    # the same case in autocast-style bf16 is not refused
    deepspeed_config(make_case(**TRAINING, engine="deepspeed", **flags), resolve_profile("cpu"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@needs_deepspeed
def test_deepspeed_zero1_bf16_pure_trains_with_bf16_states(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gpubench.worker.engines.deepspeed_engine import DeepSpeedEngine

    for name, value in dict(
        RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1"
    ).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    steps = captured_step(monkeypatch, DeepSpeedEngine)
    case = make_case(
        **TRAINING, data="learnable", engine="deepspeed", precision="bf16-pure", zero_stage=1
    )
    result = train(case)
    check_falls(case, result)
    (step,) = steps
    zero = step.engine.optimizer  # DeepSpeedZeroOptimizer over the torch AdamW
    assert zero.master_weights_and_grads_dtype == torch.bfloat16
    check_bf16_states(zero.optimizer)  # the AdamW steps on bf16 partitions, bf16 states
    assert result.metrics.skipped_steps == 0  # DeepSpeed's own count (its overflow check)


@needs_deepspeed
def test_deepspeed_bf16_pure_through_the_worker() -> None:
    case = make_case(**TRAINING, engine="deepspeed", precision="bf16-pure", zero_stage=2)
    result = run_case(case, resolve_profile("cpu"), timeout_s=600, nodeid="t::bf16-pure")
    assert result.status == "ok", result.describe()
    assert result.metrics.nonfinite_steps == 0


# -- the estimate and the peak -------------------------------------------------------------------


def test_estimate_bf16_pure_keeps_half_the_model_states_of_autocast() -> None:
    """Per parameter: bf16-pure 2 (weights) + 2 (gradients) + 2 x 2 (AdamW) = 8 bytes and no
    master copy; autocast bf16 4 + 4 + 2 x 4 = 16."""
    pure = make_case(model="gpt-tiny", batch_size=4, seq_len=32, precision="bf16-pure")
    mixed = make_case(model="gpt-tiny", batch_size=4, seq_len=32, precision="bf16")
    shape = model_shape(pure)
    n = shape.n_params
    at_step = {case.flags.precision: analyse(case, shape, "cuda") for case in (pure, mixed)}
    from gpubench.estimate.analytical import model_states

    p, m = model_states(pure, shape, "cuda"), model_states(mixed, shape, "cuda")
    assert (p.parameters, p.grads_model, p.optimizer_states, p.master_weights) == (
        2 * n,
        2 * n,
        4 * n,
        0,
    )
    assert (m.parameters, m.grads_model, m.optimizer_states, m.master_weights) == (
        4 * n,
        4 * n,
        8 * n,
        0,
    )
    # no autocast copies of the weights, and activations no larger than autocast's
    pure_peak, mixed_peak = at_step["bf16-pure"], at_step["bf16"]
    assert (
        pure_peak.breakdown[parts.OPTIMIZER_STATES]
        <= mixed_peak.breakdown[parts.OPTIMIZER_STATES] // 2
        or pure_peak.phase != mixed_peak.phase
    )
    assert pure_peak.peak_bytes < mixed_peak.peak_bytes


def test_bf16_pure_mfu_uses_the_bf16_peak() -> None:
    profile = resolve_profile("h100-sxm")
    assert peak_flops(profile, "bf16-pure") == profile.bf16_flops == peak_flops(profile, "bf16")


def test_the_trace_steps_a_bf16_model() -> None:
    """The traced estimate runs the engine's step on a model cast as the engine casts it:
    2 bytes a parameter and 2 x 2 bytes of AdamW states (and AdamW's step counters)."""
    case = make_case(model="gpt-tiny", batch_size=2, seq_len=32, precision="bf16-pure")
    n = model_shape(case).n_params
    traced = trace_case(case, "cpu").breakdown
    assert traced[parts.PARAMETERS] == 2 * n
    assert 4 * n <= traced[parts.OPTIMIZER_STATES] < 4 * n + 4096
