"""Finer divergence: gradient-norm spikes, the clip rate, fp16's loss scale and skipped steps,
and the fp16 patience rule (DivergenceWatch).

Planted norms check the rules; planted step functions drive the engine's real loop and
metrics; real CPU runs check the clip rate by hand, and fp16 loss scaling with torch's own
GradScaler on CPU (fp16 autocast and ``torch.amp.GradScaler("cpu")`` work in process on
torch 2.13; the worker refuses fp16 on a cpu profile, so the tests lift that one check).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import pytest
import torch
from in_process import train

from gpubench.contracts.case import Case, make_case
from gpubench.contracts.result import Metrics
from gpubench.worker.engines import base as base_module
from gpubench.worker.engines.device import prepare_device
from gpubench.worker.engines.loop import FP16_PATIENCE, DivergenceWatch
from gpubench.worker.engines.torch_engine import TorchEngine
from gpubench.worker.measure.divergence import (
    SPIKE_FACTOR,
    SPIKE_MIN_HISTORY,
    SPIKE_WINDOW,
    clipped_steps,
    skipped_steps,
    spike_steps,
    with_divergence,
)

NAN, INF = math.nan, math.inf

# -- the rules on planted norms ------------------------------------------------------------------


def test_a_planted_spike_is_counted_at_its_step() -> None:
    norms = [1.0, 1.1, 0.9, 1.0, 1.2, 1.0, 0.95, 20.0, 1.0, 1.1]
    assert spike_steps(norms) == [8]  # 1-based
    # the spike is in the history of the steps after it, but the median is not moved by it
    assert spike_steps([*norms, 1.0, 30.0]) == [8, 12]


def test_the_spike_threshold_is_strictly_above_factor_times_the_median() -> None:
    flat = [2.0] * SPIKE_MIN_HISTORY
    assert spike_steps([*flat, SPIKE_FACTOR * 2.0]) == []
    assert spike_steps([*flat, SPIKE_FACTOR * 2.0 * 1.001]) == [SPIKE_MIN_HISTORY + 1]


def test_no_step_is_judged_before_the_minimum_history() -> None:
    # a fresh model's norm falls fast: the first steps are never spikes
    assert spike_steps([100.0, 1.0, 1.0, 1.0, 1.0, 1000.0]) == [6]
    assert spike_steps([1.0, 1.0, 1.0, 1.0, 1000.0]) == []  # 4 known: not judged yet


def test_non_finite_norms_are_neither_spikes_nor_history() -> None:
    norms = [1.0, NAN, 1.0, INF, 1.0, 1.0, 1.0, 10.0]
    assert spike_steps(norms) == [8]


def test_the_median_is_over_the_last_window_steps_only() -> None:
    # after a long run at 10, a norm of 30 is no spike; after the window moved to 1, it is
    high, low = [10.0] * 30, [1.0] * SPIKE_WINDOW
    assert spike_steps([*high, 30.0]) == []
    assert spike_steps([*high, *low, 30.0]) == [len(high) + len(low) + 1]
    # half a window of 1s after the 10s: the median is still 10
    assert spike_steps([*high, *[1.0] * (SPIKE_WINDOW // 2 - 1), 30.0]) == []


def test_clipped_steps_count_finite_norms_above_the_clip() -> None:
    norms = [0.5, 1.0, 1.5, NAN, 3.0, INF]
    assert clipped_steps(norms, 1.0) == (2, 4)  # 1.5 and 3.0; 1.0 itself is not clipped
    assert clipped_steps(norms, None) is None


def test_skipped_steps_are_the_engines_count_or_the_scalers_non_finite_norms() -> None:
    norms = [INF, NAN, 1.0, 2.0]
    assert skipped_steps(norms, [32768.0, 16384.0, 16384.0, 16384.0], None) == 2
    assert skipped_steps(norms, [], None) is None  # no loss scaler
    assert skipped_steps(norms, [], 5) == 5  # DeepSpeed's own count wins


def test_with_divergence_fills_the_metrics() -> None:
    norms = [1.0] * 6 + [9.0, 1.0, INF]
    metrics = with_divergence(Metrics(), norms, 2.0, [8.0, 4.0, 4.0], None)
    assert metrics.grad_spikes == 1 and metrics.grad_spike_steps == [7]
    assert metrics.clipped_steps == 1 and metrics.clip_rate == pytest.approx(1 / 8)
    assert metrics.skipped_steps == 1  # the one non-finite norm, with a scaler
    assert metrics.loss_scale_min == 4.0 and metrics.loss_scale_final == 4.0
    bare = with_divergence(Metrics(), [1.0, 2.0], None, [], None)
    assert bare.grad_spikes == 0 and bare.grad_spike_steps == []
    assert bare.clip_rate is None and bare.clipped_steps is None
    assert bare.skipped_steps is None and bare.loss_scale_min is None


# -- the fp16 patience rule ----------------------------------------------------------------------


def test_fp16_diverges_after_patience_non_finite_losses_in_a_row() -> None:
    watch = DivergenceWatch("fp16")
    seen = [watch.diverging(v) for v in [1.0, NAN, INF, 2.0, NAN, NAN]]
    assert seen == [False] * 6  # a finite loss resets the run
    assert FP16_PATIENCE == 3
    assert watch.diverging(NAN) is True  # the third in a row


@pytest.mark.parametrize("precision", ["fp32", "bf16", "bf16-pure"])
def test_other_precisions_diverge_at_the_first_non_finite_loss(precision: str) -> None:
    watch = DivergenceWatch(precision)
    assert watch.diverging(3.0) is False
    assert watch.diverging(NAN) is True


# -- the engine's loop and metrics on a planted step ---------------------------------------------


class PlantedStep:
    """A step that returns planted (loss, norm) pairs and a planted loss scale."""

    def __init__(self, losses: list[float], norms: list[float], scales: list[float] | None):
        self.losses, self.norms, self.scales = losses, norms, scales
        self.n = 0

    def __call__(self) -> tuple[float, float]:
        i = min(self.n, len(self.losses) - 1)
        self.n += 1
        return self.losses[i], self.norms[i]

    def lr(self) -> float:
        return 1e-3

    def loss_scale(self) -> float | None:
        return None if self.scales is None else self.scales[self.n - 1]


def lift_the_fp16_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker refuses fp16 on a cpu profile; these tests run it in process on CPU."""

    def prepare(case: Case, profile: Any, local_rank: int = 0) -> torch.device:
        fp32 = dataclasses.replace(case, flags=dataclasses.replace(case.flags, precision="fp32"))
        return prepare_device(fp32, profile, local_rank)

    monkeypatch.setattr(base_module, "prepare_device", prepare)


def plant(monkeypatch: pytest.MonkeyPatch, step: PlantedStep) -> None:
    monkeypatch.setattr(TorchEngine, "build_step", lambda self, ctx, model, stream: step)


SHORT = dict(model="gpt-tiny", batch_size=2, seq_len=16, warmup=2)


def test_the_loop_records_spikes_clips_and_the_loss_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    lift_the_fp16_refusal(monkeypatch)
    norms = [3.0, 1.0, 1.0, 1.1, 0.9, 1.0, 12.0, 1.0, INF, 1.0]
    scales = [65536.0] * 8 + [32768.0, 32768.0]
    plant(monkeypatch, PlantedStep([5.0] * 10, norms, scales))
    result = train(make_case(**SHORT, steps=8, precision="fp16", grad_clip=2.0))
    metrics, series = result.metrics, result.series
    assert result.status == "ok", result.describe()
    assert series.loss_scale == scales and series.lr == [1e-3] * 10
    assert metrics.grad_spikes == 1 and metrics.grad_spike_steps == [7]  # warm-up counted
    assert metrics.clipped_steps == 2 and metrics.clip_rate == pytest.approx(2 / 9)
    assert metrics.skipped_steps == 1
    assert metrics.loss_scale_min == 32768.0 and metrics.loss_scale_final == 32768.0


def test_the_loop_stops_fp16_after_patience_non_finite_losses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lift_the_fp16_refusal(monkeypatch)
    losses = [5.0, 4.0, NAN, NAN, 4.0, NAN, NAN, NAN, 3.0, 3.0]
    plant(monkeypatch, PlantedStep(losses, [1.0] * 10, [1.0] * 10))
    result = train(make_case(**SHORT, steps=8, precision="fp16"))
    assert result.status == "diverged", result.describe()
    assert len(result.series.loss) == 8  # stopped at the third NaN in a row, not the first


def test_fp32_stops_at_the_first_non_finite_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    plant(monkeypatch, PlantedStep([5.0, 4.0, NAN, 3.0], [1.0] * 4, None))
    result = train(make_case(**SHORT, steps=2))
    assert result.status == "diverged" and len(result.series.loss) == 3
    assert result.series.loss_scale == [] and result.metrics.skipped_steps is None


# -- real runs -----------------------------------------------------------------------------------


def test_clip_rate_by_hand_on_a_short_run_with_a_tiny_clip() -> None:
    clip = 1e-3
    result = train(make_case(**SHORT, steps=4, grad_clip=clip, seed=3))
    norms = result.series.grad_norm
    assert result.status == "ok" and len(norms) == 6
    by_hand = sum(1 for norm in norms if math.isfinite(norm) and norm > clip)
    assert by_hand == 6  # the recorded norm is the unclipped one, far above the clip
    assert result.metrics.clipped_steps == by_hand
    assert result.metrics.clip_rate == pytest.approx(by_hand / len(norms))
    unclipped = train(make_case(**SHORT, steps=4, grad_clip=None, seed=3))
    assert unclipped.metrics.clip_rate is None and unclipped.metrics.clipped_steps is None


def test_clip_rate_by_hand_at_the_median_norm() -> None:
    """A clip between the smallest and largest norm of the run: some steps clipped, some not."""
    case = make_case(**SHORT, steps=6, data="learnable", lr=3e-3, seed=2, grad_clip=None)
    norms = train(case).series.grad_norm
    clip = sorted(norms)[len(norms) // 2]
    # AdamW's update ignores a uniform scale of the gradient (but for eps), so clipping
    # barely moves the trajectory; the count is taken from the clipped run's own norms
    result = train(dataclasses.replace(case, grad_clip=clip))
    clipped_norms = result.series.grad_norm
    by_hand = sum(1 for norm in clipped_norms if norm > clip)
    assert 0 < by_hand < len(clipped_norms), (clip, clipped_norms)
    assert result.metrics.clipped_steps == by_hand
    assert result.metrics.clip_rate == pytest.approx(by_hand / len(clipped_norms))


@pytest.mark.parametrize("engine", ["torch", "fsdp"])
def test_fp16_with_torchs_grad_scalers_on_cpu(monkeypatch: pytest.MonkeyPatch, engine: str) -> None:
    """A real GradScaler (FSDP: ShardedGradScaler), planted with a far too high initial
    scale: the first steps overflow fp16's 65504, the scaler skips them and halves the scale
    each time, then training goes on. Every skip is a non-finite unscaled norm and a
    halving of the scale."""
    from torch.distributed.fsdp import sharded_grad_scaler

    lift_the_fp16_refusal(monkeypatch)
    for where, name in ((torch.amp, "GradScaler"), (sharded_grad_scaler, "ShardedGradScaler")):
        scaler = getattr(where, name)
        monkeypatch.setattr(where, name, functools.partial(scaler, init_scale=2.0**24))
    case = make_case(**SHORT, steps=12, precision="fp16", data="learnable", lr=3e-3, engine=engine)
    result = train(case)
    metrics, series = result.metrics, result.series
    assert result.status == "ok", result.describe()
    assert len(series.loss_scale) == len(series.loss) == 14
    halvings = sum(
        1
        for before, after in zip([2.0**24, *series.loss_scale], series.loss_scale, strict=False)
        if after < before
    )
    non_finite = sum(1 for norm in series.grad_norm if not math.isfinite(norm))
    assert metrics.skipped_steps == non_finite == halvings >= 1, series.loss_scale
    assert metrics.loss_scale_min == min(series.loss_scale) < 2.0**24
    assert metrics.loss_scale_final == series.loss_scale[-1]
    assert all(math.isfinite(v) for v in series.loss)  # the loss itself never overflowed


def test_deepspeeds_loss_scale_is_read_where_its_engine_reads_it() -> None:
    """DeepSpeed's fp16 needs CUDA; its step reads the scale as DeepSpeed 0.19.8's own
    ``engine._get_optimizer_loss_scale`` does: FP16_Optimizer's ``loss_scale_config.cur_scale``,
    else the ZeRO optimizer's ``cur_scale``; the skipped steps are ``engine.skipped_steps``."""
    from types import SimpleNamespace

    from gpubench.worker.engines.deepspeed_engine import DeepSpeedTrainStep

    def step_on(optimizer: object, fp16: bool = True) -> DeepSpeedTrainStep:
        step = DeepSpeedTrainStep.__new__(DeepSpeedTrainStep)
        step.engine = SimpleNamespace(
            fp16_enabled=lambda: fp16, optimizer=optimizer, skipped_steps=3
        )
        return step

    fused = SimpleNamespace(loss_scale_config=SimpleNamespace(cur_scale=1024.0))
    assert step_on(fused).loss_scale() == 1024.0
    assert step_on(SimpleNamespace(cur_scale=512.0)).loss_scale() == 512.0
    assert step_on(fused, fp16=False).loss_scale() is None  # bf16, fp32: no loss scale
    assert step_on(fused).skipped_steps() == 3


# -- the report ----------------------------------------------------------------------------------


def test_the_report_shows_spikes_clips_the_loss_scale_and_advises(tmp_path: Any) -> None:
    """A real cpu Result (tests/data/report) with the training-health figures planted."""
    from report_fixtures import statuses

    from gpubench.contracts.result import Result
    from gpubench.report.advice import advise, gradients_unhealthy
    from gpubench.report.document import ReportData
    from gpubench.report.write import write_report

    ok = next(r for r in statuses() if r.ran and r.metrics.grad_norm_median is not None)
    n = len(ok.series.loss)
    planted: Result = dataclasses.replace(
        ok,
        case=ok.case.replace(name="planted-health", grad_clip=1.0),
        metrics=dataclasses.replace(
            ok.metrics,
            grad_spikes=2,
            grad_spike_steps=[7, 11],
            clip_rate=0.75,
            clipped_steps=9,
            skipped_steps=1,
            loss_scale_min=32768.0,
            loss_scale_final=65536.0,
        ),
        series=dataclasses.replace(
            ok.series,
            loss_scale=[65536.0, 32768.0] + [65536.0] * (n - 2),
            lr=[3e-4 * (i + 1) / n for i in range(n)],
        ),
    )
    healthy = dataclasses.replace(
        ok,
        metrics=dataclasses.replace(ok.metrics, grad_spikes=0, clip_rate=0.1, clipped_steps=1),
    )
    advice = gradients_unhealthy([planted, healthy])
    assert advice is not None and [f.result for f in advice.findings] == [planted]
    (finding,) = advice.findings
    assert finding.figures == "2 spike(s) at step(s) 7, 11"
    assert "5x the median of the 20 steps" in advice.rule and "90 %" in advice.rule
    assert gradients_unhealthy([healthy]) is None
    # clipping: judged on a long run's second half only (a fresh model's first steps clip)
    clipped_late = dataclasses.replace(
        healthy,
        case=ok.case.replace(name="clipped-late", grad_clip=1.0),
        series=dataclasses.replace(ok.series, grad_norm=[0.5] * 60 + [1.5] * 59 + [0.5]),
    )
    (late,) = gradients_unhealthy([clipped_late]).findings  # type: ignore[union-attr]
    assert late.figures == "98.3 % of the last 60 steps clipped at 1"
    clipped_early = dataclasses.replace(
        clipped_late, series=dataclasses.replace(ok.series, grad_norm=[1.5] * 60 + [0.5] * 60)
    )
    short = dataclasses.replace(
        clipped_late, series=dataclasses.replace(ok.series, grad_norm=[1.5] * 99)
    )
    assert gradients_unhealthy([clipped_early, short]) is None
    assert any(a.title.startswith("Gradient spikes") for a in advise([planted]))

    write_report(ReportData([planted]), tmp_path / "report.html", tmp_path / "report.md")
    html = (tmp_path / "report.html").read_text()
    markdown = (tmp_path / "report.md").read_text()
    assert "2 gradient-norm spike(s) above the running median, at step(s) 7, 11." in html
    assert "Clipped at 1: 9 step(s), 75.0 %." in html
    assert "fp16 loss scale 3.28e+04 to 6.55e+04, 6.55e+04 at the end; 1 skipped step(s)." in html
    assert f"Learning rate {3e-4 / n:.3g} at step 1, peak 0.0003, 0.0003 at step {n}." in html
    assert "2 spike(s) at step(s) 7, 11; clipped 9 step(s) (75.0 %)" in markdown
    assert "1 skipped step(s)" in markdown and "learning rate " in markdown
