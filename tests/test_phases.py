"""Time per phase: the clock on its own, and each engine's steps split into phases that add
up to the step time (gpubench.worker.measure.phases)."""

from __future__ import annotations

import importlib.util
import math
import time
from typing import Any

import pytest
import torch
from in_process import train

from gpubench.contracts.case import Case, make_case
from gpubench.contracts.errors import CaseError
from gpubench.contracts.profiles import resolve_profile
from gpubench.contracts.result import Metrics, Result, Stats
from gpubench.report.advice import advise
from gpubench.runner import run_case
from gpubench.worker.data.synthetic import TokenStream
from gpubench.worker.measure.phases import (
    PHASES,
    SUM_TOLERANCE_S,
    SUM_TOLERANCE_SHARE,
    NoPhases,
    PhaseClock,
    append_step,
    with_phases,
)
from gpubench.worker.trackers.timing import StepTimer

CPU = resolve_profile("cpu")
TINY = dict(model="gpt-tiny", batch_size=2, seq_len=16, steps=6, warmup=2)
TORCH_PHASES = {"data", "forward", "backward", "clip", "optimizer", "rest"}
# the planted data source's wait per micro-batch: long beside a tiny step even on a loaded machine
# (CI saw a 0.8 s step with two test runs on its 2 cores: 2 x 20 ms was 5 % of it, under the
# input-bound advice's 10 %)
SLEEP_S = 0.2


def run_in_process(case: Case) -> Result:
    result = train(case, CPU)
    assert result.status == "ok", result.error
    return result


def check_phases_add_up(result: Result, phases: set[str]) -> None:
    """Every step (warm-up included) split into ``phases`` that sum to its step time within
    the stated tolerance; the measured steps' Stats in Metrics."""
    metrics, series = result.metrics, result.series
    assert metrics.phase_timing == "perf_counter"
    assert set(series.phase_s) == phases
    n = len(series.step_time_s)
    assert n == metrics.warmup_steps + metrics.measured_steps
    for phase, seconds in series.phase_s.items():
        assert len(seconds) == n, phase
        assert all(s >= 0 for s in seconds), (phase, seconds)
    for i, step_s in enumerate(series.step_time_s):
        total = sum(series.phase_s[phase][i] for phase in phases)
        tolerance = SUM_TOLERANCE_S + SUM_TOLERANCE_SHARE * step_s
        assert total == pytest.approx(step_s, abs=tolerance), (i, total, step_s)
    assert set(metrics.phases) == phases
    for phase, stats in metrics.phases.items():
        assert stats.n == metrics.measured_steps
        assert stats.median == pytest.approx(
            Stats.of(series.phase_s[phase][metrics.warmup_steps :]).median
        )
    # the model's work is where the time goes, not the bookkeeping
    assert metrics.phases["forward"].median > metrics.phases["rest"].median
    assert metrics.phases["backward"].median > metrics.phases["rest"].median


# -- the clock ------------------------------------------------------------------------------------


def test_cpu_marks_sum_each_phase_over_its_stretches() -> None:
    clock = PhaseClock("cpu")
    clock.begin()
    for _ in range(2):  # two micro-batches
        clock.mark("data")
        time.sleep(0.01)
        clock.mark("forward")
        time.sleep(0.002)
    clock.mark("optimizer")
    clock.end()
    seconds = clock.read()
    assert set(seconds) == {"rest", "data", "forward", "optimizer"}
    assert 0.02 <= seconds["data"] < 0.2
    assert 0.004 <= seconds["forward"] < seconds["data"]
    assert clock.timing == "perf_counter"


def test_the_phases_begin_and_end_at_the_step_timers_marks() -> None:
    clock = PhaseClock("cpu")
    timer = StepTimer("cpu", phases=clock)
    with timer:
        clock.mark("data")
        time.sleep(0.003)
        clock.mark("forward")
        time.sleep(0.001)
    assert sum(clock.read().values()) == pytest.approx(timer.last_s, abs=1e-9)


def test_marks_outside_a_step_are_ignored_and_a_read_before_the_end_is_empty() -> None:
    clock = PhaseClock("cpu")
    clock.mark("data")  # a step called without the loop (benchmarks/inprocess_step.py)
    assert clock.read() == {}
    clock.begin()
    clock.mark("data")
    assert clock.read() == {}  # still open
    clock.end()
    assert set(clock.read()) == {"rest", "data"}


def test_an_unknown_phase_is_refused_by_name() -> None:
    clock = PhaseClock("cpu")
    clock.begin()
    clock.mark("fwd")
    clock.end()
    with pytest.raises(ValueError, match=r"\['fwd'\] unknown; valid: data, forward"):
        clock.read()


class FakeCudaEvent:
    """A timing event on a fake device clock: ``record`` stamps the clock's time, and only a
    ``synchronize`` (which the step timer has made before a read) makes it readable."""

    device_ms = 0.0
    created = 0

    def __init__(self) -> None:
        FakeCudaEvent.created += 1
        self.stamp: float | None = None
        self.done = False

    def record(self, stream: Any = None) -> None:
        self.stamp = FakeCudaEvent.device_ms
        self.done = False

    def synchronize(self) -> None:
        self.done = True

    def elapsed_time(self, other: FakeCudaEvent) -> float:
        assert self.stamp is not None and other.stamp is not None
        return other.stamp - self.stamp


def test_cuda_path_reads_events_after_the_end_event_and_reuses_its_pool() -> None:
    FakeCudaEvent.created = 0
    clock = PhaseClock("cuda", event_factory=FakeCudaEvent)
    assert clock.timing == "cuda-events"
    start, stop = FakeCudaEvent(), FakeCudaEvent()  # the step timer's own pair
    for _ in range(3):
        FakeCudaEvent.device_ms = 0.0
        start.record()
        clock.begin(start)
        for phase, ms in (("data", 1.0), ("forward", 4.0), ("backward", 8.0), ("rest", 0.5)):
            clock.mark(phase)
            FakeCudaEvent.device_ms += ms
        stop.record()
        clock.end(stop)
        seconds = clock.read()
        assert stop.done  # read() waited on the end event before any elapsed_time
        assert seconds == pytest.approx(
            {"data": 0.001, "forward": 0.004, "backward": 0.008, "rest": 0.0005}
        )
    assert FakeCudaEvent.created == 2 + 4  # the timer's pair and one pool, reused each step


def test_no_phases_does_nothing() -> None:
    clock = NoPhases()
    clock.begin(1.0)
    clock.mark("data")
    clock.end(2.0)
    assert clock.read() == {} and clock.timing == ""


def test_append_step_keeps_every_phase_aligned_with_the_steps() -> None:
    phase_s: dict[str, list[float]] = {}
    append_step(phase_s, {}, 0)  # not split: nothing
    assert phase_s == {}
    append_step(phase_s, {"data": 1.0, "rest": 0.5}, 0)
    append_step(phase_s, {"data": 2.0, "clip": 0.1}, 1)  # clip first seen, rest not entered
    assert phase_s == {"data": [1.0, 2.0], "rest": [0.5, 0.0], "clip": [0.0, 0.1]}


def test_with_phases_summarises_the_measured_steps_only() -> None:
    phase_s = {"data": [9.0, 1.0, 2.0, 3.0], "rest": [9.0, 0.1, 0.1, 0.1]}
    trained = Metrics(tokens_per_s=Stats.of([1.0]))
    metrics = with_phases(trained, phase_s, 1, "perf_counter")
    assert metrics.phases["data"] == Stats.of([1.0, 2.0, 3.0])
    assert list(metrics.phases) == [p for p in PHASES if p in phase_s]
    assert metrics.phase_timing == "perf_counter"
    # a case that stopped early keeps its per-step series, but no summary (as its speed)
    stopped = with_phases(Metrics(), phase_s, 1, "perf_counter")
    assert stopped.phases == {}
    assert with_phases(trained, {}, 1, "") == trained


def test_time_phases_is_a_validated_case_setting_outside_the_id() -> None:
    assert make_case(model="gpt-tiny").time_phases is True
    off = make_case(model="gpt-tiny", time_phases=False)
    assert off.id == make_case(model="gpt-tiny").id == "gpt-tiny-fp32"
    assert Case.from_dict(off.to_dict()) == off
    with pytest.raises(CaseError, match="time_phases='no' must be True or False"):
        make_case(model="gpt-tiny", time_phases="no")


# -- the torch engine, in process -----------------------------------------------------------------


@pytest.mark.parametrize(
    "flags",
    [{}, {"precision": "bf16"}, {"grad_accum": 2}],
    ids=["fp32", "bf16", "accum2"],
)
def test_torch_phases_add_up_to_the_step_time(flags: dict[str, Any]) -> None:
    check_phases_add_up(run_in_process(make_case(**TINY, **flags)), TORCH_PHASES)


def test_a_case_without_the_split_records_no_phases() -> None:
    result = run_in_process(make_case(**TINY, time_phases=False))
    assert result.metrics.phases == {} and result.metrics.phase_timing == ""
    assert result.series.phase_s == {}
    assert result.metrics.tokens_per_s is not None


def test_a_slow_data_source_shows_up_as_the_data_phase(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream that waits SLEEP_S per batch: the data phase holds the wait of every
    micro-batch, and no other phase does."""
    next_batch = TokenStream.next_batch

    def slow_next_batch(self: TokenStream) -> tuple[torch.Tensor, torch.Tensor]:
        time.sleep(SLEEP_S)
        return next_batch(self)

    monkeypatch.setattr(TokenStream, "next_batch", slow_next_batch)
    case = make_case(**TINY, grad_accum=2)
    result = run_in_process(case)
    check_phases_add_up(result, TORCH_PHASES)
    phases = result.metrics.phases
    assert phases["data"].min >= SLEEP_S * case.flags.grad_accum
    # and nowhere else: the step's bookkeeping phases stay far below one wait (the model's
    # forward and backward are not compared: on a loaded machine they take any time)
    for phase in ("clip", "rest"):
        assert phases[phase].median < SLEEP_S / 2, {p: s.median for p, s in phases.items()}
    # and the report reads it: the input-bound advice names this case with its data share
    advice = {a.title.split(":")[0]: a for a in advise([result])}
    assert "Input-bound" in advice, [a.title for a in advise([result])]
    (finding,) = advice["Input-bound"].findings
    assert finding.result is result and finding.figures.startswith("data ")


# -- DeepSpeed, through the worker ----------------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="needs deepspeed")
def test_deepspeed_zero2_bf16_phases_add_up_and_clipping_is_the_optimizers() -> None:
    case = make_case(**TINY, engine="deepspeed", precision="bf16", zero_stage=2, grad_accum=2)
    result = run_case(case, CPU, timeout_s=600, nodeid="t::phases")
    assert result.status == "ok", result.describe()
    # ZeRO clips inside engine.step(): no clip phase of the step's own
    check_phases_add_up(result, TORCH_PHASES - {"clip"})
    assert all(math.isfinite(v) for v in result.series.phase_s["optimizer"])


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="needs deepspeed")
def test_deepspeed_fp32_without_zero_times_its_own_clip() -> None:
    case = make_case(**TINY, engine="deepspeed")  # DeepSpeed clips nothing: the step does
    result = run_case(case, CPU, timeout_s=600, nodeid="t::phases")
    assert result.status == "ok", result.describe()
    check_phases_add_up(result, TORCH_PHASES)
