"""The batch-size probe: the search against fakes with a known threshold (no subprocess),
how statuses are read, the plugin's ``gpubench_probe`` fixture, and one real probe under a
``cpu:MEM`` cap (real workers: a few seconds each on 2 cores)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import pytest

import gpubench.session.summary  # noqa: F401  (pytester restores sys.modules; pandas loads once)
from gpubench.contracts.case import Case, make_case
from gpubench.contracts.profiles import HardwareProfile, resolve_profile
from gpubench.contracts.result import Metrics, Result, Stats
from gpubench.probe import BATCH_LIMIT, BatchProbe, ProbeError, probe_batch_size
from gpubench.probe.curve import curve_batches
from gpubench.probe.search import largest_fitting
from gpubench.runner import run_case

pytest_plugins = ("pytester",)

CPU_1GIB = resolve_profile("cpu:1GiB")
CASE = make_case(model="gpt-mini", seq_len=128, steps=6, warmup=2)


def _search_bound(distance: int) -> int:
    """Probes the search may take from a start ``distance`` batches off the answer."""
    return 2 * math.ceil(math.log2(distance + 1)) + 2


# -- the search, on a bare oracle --------------------------------------------------------------
@pytest.mark.parametrize("limit", [1, 2, 7, 40])
def test_the_search_finds_every_threshold_from_every_start(limit: int) -> None:
    for threshold in range(0, limit + 1):
        for start in range(1, limit + 1):
            asked: list[int] = []

            def fits(batch: int, threshold: int = threshold, asked: list[int] = asked) -> bool:
                asked.append(batch)
                return batch <= threshold

            bracket = largest_fitting(fits, start, limit)
            assert bracket.largest_fitting == (threshold or None), (threshold, start)
            expected_failing = threshold + 1 if threshold < limit else None
            assert bracket.smallest_failing == expected_failing, (threshold, start)
            assert len(asked) == len(set(asked)), f"asked twice: {asked}"
            assert len(asked) <= _search_bound(abs(start - max(threshold, 1))), asked


def test_the_search_refuses_a_start_outside_the_range() -> None:
    with pytest.raises(ValueError, match=r"start=0 must be within \[1, limit=4\]"):
        largest_fitting(lambda batch: True, 0, 4)


def test_the_curve_ladder_is_powers_of_two_and_the_largest() -> None:
    assert curve_batches(1) == [1]
    assert curve_batches(8) == [1, 2, 4, 8]
    assert curve_batches(23) == [1, 2, 4, 8, 16, 23]
    with pytest.raises(ValueError):
        curve_batches(0)


# -- probe_batch_size with a fake worker -------------------------------------------------------
@dataclass
class FakeWorker:
    """Fits up to ``threshold`` sequences; ``status_at`` overrides the status of a batch."""

    threshold: int
    status_at: dict[int, str] = field(default_factory=dict)
    ran: list[Case] = field(default_factory=list)

    def __call__(self, case: Case, profile: HardwareProfile) -> Result:
        self.ran.append(case)
        status = self.status_at.get(case.batch_size)
        if status is None:
            status = "ok" if case.batch_size <= self.threshold else "oom"
        metrics = Metrics()
        if status == "ok":  # throughput grows with the batch, as it does until compute-bound
            metrics = Metrics(tokens_per_s=Stats.of([100.0 * case.batch_size]))
        return Result(case=case, profile=profile, status=status, metrics=metrics)


PER_SEQUENCE = 10 * 2**20  # the linear memory model the predictors below assume


def exact_predictor(threshold: int):  # noqa: ANN201
    """Predicts exactly: a batch fits ``CPU_1GIB`` when it is at most ``threshold``."""
    base = CPU_1GIB.memory_bytes - threshold * PER_SEQUENCE

    def predict(case: Case, profile: HardwareProfile) -> int:
        return base + case.batch_size * PER_SEQUENCE

    return predict


def test_a_good_prediction_costs_two_probes() -> None:
    worker = FakeWorker(threshold=23)
    probe = probe_batch_size(
        CASE, CPU_1GIB, max_batch=1000, predict=exact_predictor(23), run=worker, curve=False
    )
    assert probe.largest_batch == 23 and probe.predicted_batch == 23
    assert [r.case.batch_size for r in probe.probes] == [23, 24]
    assert [r.status for r in probe.probes] == ["ok", "oom"]
    assert not probe.limited_by_cap and probe.curve == ()


@pytest.mark.parametrize(
    ("wrong", "predicted"),
    [
        (lambda case, profile: 0, 1000),  # everything fits: starts at max_batch
        (lambda case, profile: 2**60, 1),  # nothing fits: starts at 1
        (exact_predictor(500), 500),  # 20x too optimistic
    ],
    ids=["everything-fits", "nothing-fits", "20x-optimistic"],
)
def test_a_wildly_wrong_prediction_still_converges(wrong, predicted: int) -> None:  # noqa: ANN001
    worker = FakeWorker(threshold=23)
    probe = probe_batch_size(CASE, CPU_1GIB, max_batch=1000, predict=wrong, run=worker, curve=False)
    assert probe.largest_batch == 23 and probe.predicted_batch == predicted
    assert probe.probe_at(23).fits and not probe.probe_at(24).fits  # type: ignore[union-attr]
    assert len(probe.probes) <= _search_bound(abs(predicted - 23))
    assert len(probe.probes) == len(worker.ran)  # every probe is a worker run, none repeated


@dataclass
class LongerRunsNeedMore(FakeWorker):
    """Short probes fit up to ``threshold``; a run of the declared length (CASE's steps)
    only up to ``full_threshold``: near a hard cap more steps can need more memory."""

    full_threshold: int = 0

    def __call__(self, case: Case, profile: HardwareProfile) -> Result:
        if case.steps == CASE.steps and case.batch_size > self.full_threshold:
            self.ran.append(case)
            return Result(case=case, profile=profile, status="oom")
        return super().__call__(case, profile)


def test_a_largest_batch_whose_full_run_does_not_fit_steps_down() -> None:
    worker = LongerRunsNeedMore(threshold=9, full_threshold=7)
    probe = probe_batch_size(CASE, CPU_1GIB, max_batch=64, predict=exact_predictor(9), run=worker)
    assert [r.case.batch_size for r in probe.probes] == [9, 10]  # the short probes: 9 fits
    assert probe.largest_batch == 7  # 9's and 8's full runs did not fit
    assert [(r.case.batch_size, r.status) for r in probe.curve] == [
        (1, "ok"),
        (2, "ok"),
        (4, "ok"),
        (7, "ok"),
        (8, "oom"),
        (9, "oom"),
    ]
    assert probe.probe_at(9).fits  # type: ignore[union-attr]  (kept, as measured)


def test_the_probe_stops_at_max_batch_and_says_so() -> None:
    probe = probe_batch_size(
        CASE, CPU_1GIB, max_batch=16, predict=exact_predictor(100), run=FakeWorker(100)
    )
    assert probe.largest_batch == 16 and probe.limited_by_cap
    assert [r.case.batch_size for r in probe.probes] == [16]
    assert "the limit searched" in probe.describe()


def test_without_max_batch_the_search_is_bounded() -> None:
    probe = probe_batch_size(
        CASE, CPU_1GIB, predict=lambda case, profile: 0, run=FakeWorker(10**9), curve=False
    )
    assert probe.largest_batch == BATCH_LIMIT and probe.limited_by_cap


def test_when_not_even_one_sequence_fits_the_answer_is_none() -> None:
    worker = FakeWorker(threshold=0)
    probe = probe_batch_size(CASE, CPU_1GIB, max_batch=64, predict=exact_predictor(40), run=worker)
    assert probe.largest_batch is None and not probe.any_batch_fits
    assert probe.curve == () and probe.probes[-1].case.batch_size == 1
    assert len(probe.probes) <= _search_bound(40)
    assert "no batch fits" in probe.describe()


def test_over_capacity_does_not_fit() -> None:
    worker = FakeWorker(threshold=100, status_at={b: "over_capacity" for b in range(13, 101)})
    probe = probe_batch_size(
        CASE, CPU_1GIB, max_batch=64, predict=exact_predictor(20), run=worker, curve=False
    )
    assert probe.largest_batch == 12


@pytest.mark.parametrize("status", ["crashed", "timeout", "diverged"])
def test_a_run_that_says_nothing_about_memory_stops_the_probe(status: str) -> None:
    worker = FakeWorker(threshold=23, status_at={24: status})
    with pytest.raises(ProbeError, match=f"b24.*: {status}.*neither as a fit nor as an OOM") as err:
        probe_batch_size(CASE, CPU_1GIB, max_batch=64, predict=exact_predictor(23), run=worker)
    assert [r.case.batch_size for r in err.value.results] == [23, 24]
    assert err.value.results[-1].status == status


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_batch": 0}, "max_batch=0 must be a whole number >= 1"),
        ({"max_batch": -3}, "max_batch=-3 must be"),
        ({"max_batch": 2.5}, "max_batch=2.5 must be"),
        ({"max_batch": True}, "max_batch=True must be"),
        ({"probe_steps": 1}, "probe_steps=1 must be a whole number >= 2"),
        ({"probe_warmup": -1}, "probe_warmup=-1 must be"),
    ],
)
def test_bad_input_is_refused_before_any_run(settings: dict, message: str) -> None:
    worker = FakeWorker(threshold=4)
    with pytest.raises(ValueError, match=message):
        probe_batch_size(CASE, CPU_1GIB, predict=exact_predictor(4), run=worker, **settings)
    assert worker.ran == []


def test_probes_are_short_and_the_curve_runs_the_case_as_declared() -> None:
    worker = FakeWorker(threshold=23)
    probe = probe_batch_size(CASE, CPU_1GIB, max_batch=64, predict=exact_predictor(23), run=worker)
    assert all((r.case.steps, r.case.warmup) == (2, 1) for r in probe.probes)
    assert [r.case.batch_size for r in probe.curve] == [1, 2, 4, 8, 16, 23]
    assert all((r.case.steps, r.case.warmup) == (6, 2) for r in probe.curve)
    assert probe.tokens_per_s_curve == [(b, 100.0 * b) for b in (1, 2, 4, 8, 16, 23)]
    assert probe.worker_runs == len(worker.ran) == 2 + 6


def test_with_full_length_probes_the_curve_reuses_them() -> None:
    worker = FakeWorker(threshold=16)
    probe = probe_batch_size(
        CASE, CPU_1GIB, max_batch=64, predict=exact_predictor(16), run=worker, probe_steps=None
    )
    assert [r.case.batch_size for r in probe.probes] == [16, 17]
    assert probe.curve[-1] is probe.probes[0]  # batch 16 ran once
    assert probe.worker_runs == len(worker.ran) == 2 + 4  # curve 1, 2, 4 and 8 were new


@pytest.mark.parametrize("name", [None, "my-case"])
def test_every_run_names_its_batch_in_its_id(name: str | None) -> None:
    worker = FakeWorker(threshold=8)
    probe = probe_batch_size(
        CASE.replace(name=name), CPU_1GIB, max_batch=64, predict=exact_predictor(12), run=worker
    )
    for result in (*probe.probes, *probe.curve):
        assert f"b{result.case.batch_size}" in result.case.id.split("-"), result.case.id
    ids = [r.case.id for r in (*probe.probes, *probe.curve)]
    assert len(ids) == len(set(ids)), ids  # a probe and a curve run of one batch differ


# -- in pytest: the gpubench_probe fixture ------------------------------------------------------
FAKE_WORKER_CONFTEST = """
import pytest
from gpubench.contracts.result import Metrics, Result, Stats

@pytest.fixture(autouse=True)
def fake_worker(monkeypatch):
    def run_case(case, profile, *, timeout_s, nodeid=None, run_id=None, **ignored):
        fits = case.batch_size <= 5
        metrics = Metrics(tokens_per_s=Stats.of([10.0 * case.batch_size])) if fits else Metrics()
        return Result(case=case, profile=profile, status="ok" if fits else "oom",
                      metrics=metrics, nodeid=nodeid, run_id=run_id)
    monkeypatch.setattr("gpubench.session.bench.run_case", run_case)
"""


def test_the_fixture_records_every_run_in_the_sessions_results(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(FAKE_WORKER_CONFTEST)
    pytester.makepyfile(
        test_probe_suite="""
        import gpubench

        def linear(case, profile):
            return case.batch_size * profile.memory_bytes // 3  # says 3 fits; 5 does

        @gpubench.single_case(model="gpt-tiny", seq_len=32, steps=3, warmup=1)
        def test_probe(gpubench_probe):
            probe = gpubench_probe(max_batch=32, predict=linear)
            assert probe.largest_batch == 5, probe.describe()
        """
    )
    result = pytester.runpytest("--gpu-profile", "cpu:1GiB", "--gpubench-report", "none")
    result.assert_outcomes(passed=1)
    results_file = pytester.path / "reports" / "latest" / "results.jsonl"
    records = [json.loads(line) for line in results_file.read_text().splitlines()]
    batches = [record["case"]["batch_size"] for record in records]
    assert batches == [3, 4, 6, 5, 1, 2, 4, 5]  # probes (3 4 6 5), then the curve
    assert {record["nodeid"] for record in records} == {
        "test_probe_suite.py::test_probe[gpt-tiny-fp32-s32-n3-warm1-cpu]"
    }
    result.stdout.fnmatch_lines(["*gpubench summary*", "*gpt-tiny-fp32-b6-s32-n2-warm1*"])


# -- end to end: real workers under a cpu:MEM cap ----------------------------------------------
REAL_CAP = resolve_profile("cpu:64MiB")  # gpt-tiny at s128: the threshold is near 20
REAL_CASE = make_case(model="gpt-tiny", seq_len=128, steps=2, warmup=1)  # a probe's length


def fitted_predictor(first: Result, second: Result):  # noqa: ANN201
    """Model state at 16 bytes a parameter (fp32 weights and gradients, AdamW's two
    states), plus a per-sequence slope measured between two real runs' peak RSS."""

    def peak(result: Result) -> int:
        assert result.fits and result.peak_memory_bytes, result.describe()
        return result.peak_memory_bytes

    per_sequence = (peak(second) - peak(first)) / (second.case.batch_size - first.case.batch_size)
    model_state = 16 * first.metrics.n_params

    def predict(case: Case, profile: HardwareProfile) -> int:
        return int(model_state + per_sequence * case.batch_size)

    return predict


def _run(case: Case, profile: HardwareProfile) -> Result:
    return run_case(case, profile, timeout_s=120)


def test_a_real_probe_finds_the_oom_threshold_under_a_cpu_cap() -> None:
    fit = [_run(REAL_CASE.replace(batch_size=b), REAL_CAP) for b in (1, 8)]
    probe: BatchProbe = probe_batch_size(
        REAL_CASE, REAL_CAP, max_batch=32, predict=fitted_predictor(*fit), run=_run, curve=False
    )
    largest = probe.largest_batch
    assert largest is not None and not probe.limited_by_cap, probe.describe()
    assert probe.probe_at(largest).fits, probe.describe()  # type: ignore[union-attr]
    above = probe.probe_at(largest + 1)
    assert above is not None and above.status == "oom", probe.describe()
    assert len(probe.probes) <= _search_bound(abs(probe.predicted_batch - largest))
    assert all(r.case.seq_len == 128 and r.profile == REAL_CAP for r in probe.probes)
