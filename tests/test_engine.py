"""The torch engine, in process, on CPU with the built-in gpt-tiny."""

from __future__ import annotations

import json
import math
import statistics
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from in_process import CPU_TEST, train

from gpubench.contracts.case import Case, make_case
from gpubench.contracts.oom import is_oom
from gpubench.contracts.protocol import ProgressWriter
from gpubench.contracts.result import Result, loss_window
from gpubench.worker.engines import get_engine
from gpubench.worker.engines import loop as loop_module
from gpubench.worker.engines.torch_engine import TorchEngine
from gpubench.worker.models import ParameterCountMismatch, check_parameter_count

CPU = CPU_TEST
SMALL = dict(model="gpt-tiny", batch_size=4, seq_len=32, steps=4, warmup=1)


def run(case: Case, progress: ProgressWriter | None = None) -> Result:
    """The engine's Measurement, as a Result (the worker adds its capacity and environment)."""
    return train(case, CPU, progress)


def check_consistent(result: Result) -> None:
    """What every Result the engine returns must satisfy."""
    metrics, series = result.metrics, result.series
    n = len(series.step_time_s)
    assert metrics.warmup_steps + metrics.measured_steps == n
    assert len(series.loss) == len(series.grad_norm) == len(series.allocated_bytes) == n


# -- the happy path ------------------------------------------------------------------------------


def test_fp32_learnable_trains_and_measures(tmp_path: Path) -> None:
    case = make_case(
        model="gpt-tiny", batch_size=8, seq_len=32, steps=12, warmup=2, lr=3e-3, seed=1
    )
    progress = ProgressWriter(tmp_path / "progress.jsonl")
    result = run(case, progress)
    progress.close()
    metrics = result.metrics
    assert result.status == "ok", result.describe()
    assert result.error is None
    check_consistent(result)
    assert metrics.warmup_steps == 2 and metrics.measured_steps == 12
    assert metrics.timing == "perf_counter"
    assert metrics.tokens_per_step == 8 * 32
    assert metrics.n_params == 124_672 == metrics.declared_params
    tps = metrics.tokens_per_s
    assert tps is not None and tps.n == 12 and tps.median > 0
    measured = result.series.step_time_s[2:]
    assert tps.median == pytest.approx(statistics.median(256 / t for t in measured))
    assert metrics.samples_per_s is not None
    assert metrics.samples_per_s.median == pytest.approx(tps.median / 32)
    assert metrics.step_time_s is not None and metrics.step_time_s.n == 12
    assert metrics.loss_start is not None and metrics.loss_end is not None
    assert metrics.loss_start == pytest.approx(sum(result.series.loss[:3]) / 3)
    assert metrics.loss_decreased, result.describe()
    assert metrics.grad_norm_median is not None and metrics.grad_norm_max is not None
    assert metrics.grad_norm_max >= metrics.grad_norm_median > 0
    assert metrics.nonfinite_steps == 0
    assert metrics.peak_rss_bytes is not None and metrics.peak_rss_bytes > 2**20
    assert metrics.peak_allocated_bytes is None and metrics.peak_reserved_bytes is None
    assert metrics.wall_time_s is not None and metrics.wall_time_s >= sum(measured)
    assert all(b > 0 for b in result.series.allocated_bytes)  # RSS on CPU
    phases = [json.loads(line)["phase"] for line in (tmp_path / "progress.jsonl").open()]
    assert phases[0] == "building" and phases[-1] == "done"
    assert phases.index("warmup") < phases.index("measuring")
    Result.from_json(result.to_json())  # round-trips


def test_bf16_autocast_on_cpu() -> None:
    result = run(make_case(precision="bf16", **SMALL))
    assert result.status == "ok", result.describe()
    assert all(math.isfinite(loss) for loss in result.series.loss)


def test_grad_accum_doubles_tokens_per_step() -> None:
    single = run(make_case(**SMALL))
    double = run(make_case(grad_accum=2, **SMALL))
    assert double.status == single.status == "ok"
    assert double.metrics.tokens_per_step == 2 * single.metrics.tokens_per_step == 2 * 4 * 32
    check_consistent(double)
    assert len(double.series.loss) == 1 + 4  # one entry per optimizer step, not micro-batch


@pytest.mark.parametrize("flags", [{"attention": "math"}, {"grad_ckpt": True}])
def test_attention_and_checkpointing_flags(flags: dict[str, Any]) -> None:
    result = run(make_case(data="random", **flags, **SMALL))
    assert result.status == "ok", result.describe()
    # random tokens: nothing to learn, the loss stays near ln(V)
    assert result.metrics.loss_start == pytest.approx(math.log(256), rel=0.1)


def test_same_seed_same_losses() -> None:
    first = run(make_case(**SMALL))
    second = run(make_case(**SMALL))
    assert first.series.loss == second.series.loss


# -- warm-up -------------------------------------------------------------------------------------


def test_auto_warmup_hitting_its_cap_is_not_steady() -> None:
    # the detector needs two windows of 5; a cap of 3 cannot be steady
    result = run(
        make_case(
            model="gpt-tiny", batch_size=2, seq_len=16, steps=3, warmup="auto", max_warmup_steps=3
        )
    )
    assert result.status == "ok"
    assert result.metrics.warmup_steps == 3
    assert result.metrics.steady_state_detected is False
    check_consistent(result)


def test_auto_warmup_stops_when_steady(monkeypatch: pytest.MonkeyPatch) -> None:
    class SteadyAfterTwo:
        def __init__(self) -> None:
            self.n = 0
            self.steady = False

        def add(self, step_time_s: float) -> bool:
            self.n += 1
            self.steady = self.steady or self.n >= 2
            return self.n >= 2

    monkeypatch.setattr(loop_module, "SteadyStateDetector", SteadyAfterTwo)
    result = run(
        make_case(
            model="gpt-tiny", batch_size=2, seq_len=16, steps=3, warmup="auto", max_warmup_steps=40
        )
    )
    assert result.metrics.warmup_steps == 2
    assert result.metrics.steady_state_detected is True
    assert result.metrics.measured_steps == 3
    check_consistent(result)


def test_no_warmup() -> None:
    result = run(make_case(model="gpt-tiny", batch_size=2, seq_len=16, steps=2, warmup=0))
    assert result.metrics.warmup_steps == 0 and result.metrics.measured_steps == 2


# -- refusals ------------------------------------------------------------------------------------


def test_parameter_count_mismatch_raises() -> None:
    case = make_case(expect_params=1_000_000, **SMALL)
    with pytest.raises(ParameterCountMismatch) as info:
        run(case)
    message = str(info.value)
    assert "124,672" in message and "1,000,000" in message and "gpt-tiny" in message
    assert isinstance(info.value, ValueError)


def test_parameter_count_tolerance() -> None:
    check_parameter_count(109, 100, "m")  # 9 % off: fine
    check_parameter_count(100, None, "m")  # nothing declared
    with pytest.raises(ParameterCountMismatch, match="111"):
        check_parameter_count(111, 100, "m")
    with pytest.raises(ParameterCountMismatch):
        check_parameter_count(89, 100, "m")


def test_fp16_on_a_cpu_profile_is_refused() -> None:
    with pytest.raises(ValueError, match="fp16"):
        run(make_case(precision="fp16", **SMALL))


def test_unknown_engine_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="torch"):
        get_engine("jax")
    assert isinstance(get_engine("torch"), TorchEngine)


# -- divergence and OOM, with hand-written models ------------------------------------------------

FAKE_MODELS = """
import torch
from torch import nn

CALLS = {"n": 0}


class TinyLM(nn.Module):
    vocab_size = 64

    def __init__(self, poison_at=None, oom_at=None, message=""):
        super().__init__()
        self.emb = nn.Embedding(64, 8)
        self.head = nn.Linear(8, 64)
        self.poison_at, self.oom_at, self.message = poison_at, oom_at, message
        self.calls = 0

    def forward(self, idx):
        self.calls += 1
        if self.oom_at is not None and self.calls >= self.oom_at:
            raise RuntimeError(self.message)
        logits = self.head(self.emb(idx))
        if self.poison_at is not None and self.calls >= self.poison_at:
            logits = logits * float("nan")
        return logits


def nan_from_3():
    return TinyLM(poison_at=3)


def cpu_oom_at_4():
    return TinyLM(oom_at=4, message=(
        "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
        "memory: you tried to allocate 1073741824 bytes. Error code 12"))


def cuda_oom_at_1():
    return TinyLM(oom_at=1, message="CUDA out of memory. Tried to allocate 2.00 GiB")
"""


@pytest.fixture
def fake_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = "gpubench_test_engine_models"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(FAKE_MODELS))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_nonfinite_loss_is_diverged(fake_models: str) -> None:
    result = run(
        make_case(model=f"{fake_models}:nan_from_3", batch_size=2, seq_len=8, steps=5, warmup=1)
    )
    assert result.status == "diverged"
    check_consistent(result)
    assert len(result.series.loss) == 3  # stopped at the first non-finite loss
    assert result.series.partial and result.tokens_per_s is None
    assert math.isnan(result.series.loss[-1])
    assert result.metrics.nonfinite_steps == 1
    assert result.metrics.loss_start is not None and math.isfinite(result.metrics.loss_end or 0)
    Result.from_json(result.to_json())


def test_allocation_failure_is_oom_with_the_series_so_far(fake_models: str) -> None:
    result = run(
        make_case(model=f"{fake_models}:cpu_oom_at_4", batch_size=2, seq_len=8, steps=5, warmup=1)
    )
    assert result.status == "oom"
    assert result.error is not None and result.error.type == "RuntimeError"
    assert "can't allocate memory" in result.error.message
    assert "forward" in result.error.traceback
    assert len(result.series.loss) == 3
    check_consistent(result)
    # two measured steps made it: kept, marked partial, but no throughput of the case's
    assert result.metrics.measured_steps == 2 and result.series.partial
    assert result.tokens_per_s is None and result.metrics.step_time_s is None
    assert result.metrics.samples_per_s is None
    assert "stopped after 3 steps" in result.describe()


def test_oom_before_any_step(fake_models: str) -> None:
    result = run(
        make_case(model=f"{fake_models}:cuda_oom_at_1", batch_size=2, seq_len=8, steps=2, warmup=0)
    )
    assert result.status == "oom"
    assert result.series.loss == [] and result.metrics.tokens_per_s is None
    assert result.metrics.loss_start is None


def test_is_oom_classification() -> None:
    assert is_oom(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_oom(MemoryError())
    assert is_oom(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to ..."))
    assert is_oom(RuntimeError("CUDA error: out of memory"))
    assert not is_oom(RuntimeError("shape mismatch"))
    assert not is_oom(ValueError("out of memory"))  # only allocator errors
    assert is_oom(OSError(12, "Cannot allocate memory"))


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("can't start new thread"),  # Python's threading
        RuntimeError("rank 1: Resource temporarily unavailable"),  # std::thread, EAGAIN
        OSError(11, "Resource temporarily unavailable"),
        RuntimeError("could not create a primitive"),  # oneDNN, status not in the message
    ],
)
def test_a_failure_for_want_of_room_is_oom_only_under_the_host_cap(exc: Exception) -> None:
    assert is_oom(exc, host_capped=True)  # stacks, JIT code: data under RLIMIT_DATA
    assert not is_oom(exc, host_capped=False)  # elsewhere it is no allocation failure


def test_loss_window() -> None:
    assert [loss_window(n) for n in (1, 3, 4, 8, 19, 20, 100)] == [1, 1, 1, 2, 4, 5, 5]
