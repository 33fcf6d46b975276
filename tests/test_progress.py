from __future__ import annotations

import io
import statistics
from pathlib import Path

import pytest

from gpubench import make_case
from gpubench.contracts.profiles import HardwareProfile
from gpubench.contracts.protocol import ProgressEvent
from gpubench.contracts.result import Result
from gpubench.session.progress import (
    Display,
    LiveProgress,
    SessionClock,
    choose_display,
    describe_event,
    format_duration,
)
from gpubench.storage import read_results

DATA = Path(__file__).parent / "data"
RUN_SUITES = DATA / "report" / "run-suites-cpu" / "results.jsonl"
QUIET = [DATA / "gate" / f"quiet-{i}.jsonl" for i in range(1, 9)]

CPU = HardwareProfile("cpu", "cpu", 2**30, None, None, None)


class FakeWriter:
    """Stands in for pytest's TerminalWriter (write/flush/fullwidth/_current_line)."""

    def __init__(self) -> None:
        self.out = io.StringIO()
        self.fullwidth = 120
        self._current_line = "tests/test_x.py .."

    @property
    def width_of_current_line(self) -> int:
        return len(self._current_line)

    def write(self, text: str, flush: bool = False) -> None:
        self.out.write(text)
        self._current_line = (
            text.rsplit("\n", 1)[-1] if "\n" in text else (self._current_line + text)
        )


def test_clock_estimates_time_left_from_finished_cases() -> None:
    clock = SessionClock(total=4)
    assert clock.eta_s() is None
    clock.finished(10.0)
    clock.finished(20.0)
    assert clock.eta_s() == 30.0
    assert clock.eta_s(current_elapsed_s=5.0) == 25.0
    assert clock.describe() == "2/4 done, ~30s left"
    assert format_duration(3725) == "1h02m"


def test_event_text_shows_phase_step_throughput_and_memory() -> None:
    event = ProgressEvent("measuring", 12, 20, 12345.6, 3 * 2**30)
    assert describe_event(event) == "measuring step 12/20 12,346 tok/s 3.00 GiB"


def test_live_line_is_drawn_below_and_erased_back_to_pytests_line() -> None:
    writer = FakeWriter()
    progress = LiveProgress(writer, live=True, verbose=False)
    progress.clock.total = 2
    case = make_case(model="gpt-tiny")
    progress.case_started(case, CPU)
    progress.update(ProgressEvent("measuring", 3, 10, 1000.0, None))
    text = writer.out.getvalue()
    assert text.startswith("\n\r[gpubench 0/2 done] gpt-tiny-fp32@cpu starting")
    assert "measuring step 3/10 1,000 tok/s" in text
    progress.case_finished(Result(case=case, profile=CPU, status="ok", duration_s=4))
    assert writer.out.getvalue().endswith("\r\x1b[1A\x1b[18C")  # up, then right 18 columns
    assert writer._current_line == "tests/test_x.py .."
    assert progress.clock.done == 1


def test_without_a_terminal_nothing_is_drawn_and_verbose_gets_a_line_per_case() -> None:
    writer = FakeWriter()
    lines: list[str] = []
    progress = LiveProgress(writer, live=False, verbose=True, write_line=lines.append)
    case = make_case(model="gpt-tiny")
    progress.case_started(case, CPU)
    progress.update(ProgressEvent("warmup", 1))
    progress.case_finished(Result(case=case, profile=CPU, status="oom", duration_s=1))
    assert writer.out.getvalue() == ""
    assert lines == ["gpubench: gpt-tiny-fp32 on cpu: oom [1 done]"]


def test_time_left_is_spread_over_the_cases_running_at_once() -> None:
    clock = SessionClock(total=10, parallel=2)
    clock.finished(60.0)
    clock.finished(60.0)
    assert clock.eta_s() == 240.0  # 8 left x 60 s / 2 workers
    assert clock.describe() == "2/10 done, ~4m00s left"


def test_cases_reported_by_xdist_workers_get_a_line_each() -> None:
    lines: list[str] = []
    progress = LiveProgress(FakeWriter(), live=False, verbose=True, write_line=lines.append)
    progress.clock.parallel = 2
    progress.case_reported("a on cpu: ok, 1,000 tok/s", 30.0, total=3)
    progress.case_reported("b on cpu: oom", 10.0, total=3)
    assert lines == [
        "gpubench: a on cpu: ok, 1,000 tok/s [1/3 done, ~30s left]",
        "gpubench: b on cpu: oom [2/3 done, ~10s left]",
    ]


@pytest.mark.parametrize(
    ("mode", "terminal", "verbosity", "controller", "expected"),
    [
        ("auto", True, 0, False, Display(live=True, lines=False)),
        ("auto", False, 0, False, Display(live=False, lines=True)),  # a CI log
        ("auto", False, -1, False, None),  # -q
        ("auto", True, 0, True, Display(live=False, lines=True)),  # xdist's controller
        ("live", False, 0, False, Display(live=True, lines=False)),
        ("lines", True, -1, False, Display(live=False, lines=True)),
        ("off", True, 2, False, None),
    ],
)
def test_the_display_each_mode_chooses(
    mode: str, terminal: bool, verbosity: int, controller: bool, expected: Display | None
) -> None:
    got = choose_display(mode, terminal=terminal, verbosity=verbosity, xdist_controller=controller)
    assert got == expected


def _replay(path: Path, plan: bool) -> list[tuple[float, float]]:
    """(estimated, real) time left at the start of each case after the first, replaying a
    real run: its cases in their order, each run's duration as recorded (a batch probe's
    runs are one case)."""
    runs = [(r.nodeid or "", r.duration_s or 0.0) for r in read_results(path)]
    cases: dict[str, float] = {}
    for nodeid, duration in runs:
        cases[nodeid] = cases.get(nodeid, 0.0) + duration
    order = list(cases)
    clock = SessionClock(total=len(order))
    if plan:
        clock.plan(order)
    points = []
    started: set[str] = set()
    for nodeid, duration in runs:
        if nodeid not in started:
            started.add(nodeid)
            left = sum(cases[n] for n in order[order.index(nodeid) :])
            eta = clock.eta_s()
            if eta is not None:
                points.append((eta, left))
        clock.finished(duration, nodeid)
    return points


def _errors(points: list[tuple[float, float]]) -> list[float]:
    """How far each estimate was from what was really left, as a share of the whole run
    (a share of what was left would make one case's miss at the end look enormous)."""
    run = points[0][1]
    return [abs(eta - left) / run for eta, left in points]


def test_the_time_left_against_what_was_really_left_in_a_mixed_run() -> None:
    """The shipped suites on cpu (tests/data/report/run-suites-cpu: a batch probe of six
    runs, ten smoke cases of 12 to 60 steps, fourteen 2-step estimator checks), replayed.
    Knowing each remaining case's test (the plan), the estimate is off by at most 15 % of
    the run from halfway on (10 % measured; the mean of all cases: 26 %), and halfway
    through by 12 % of what was left (the mean of all: 65 %)."""
    planned = _replay(RUN_SUITES, plan=True)
    unplanned = _replay(RUN_SUITES, plan=False)
    assert len(planned) == len(unplanned) == 24
    half = len(planned) // 2
    (eta, left), (plain, _) = planned[half], unplanned[half]
    assert abs(eta - left) / left < 0.25 < abs(plain - left) / left
    assert max(_errors(planned)[half:]) < 0.15 < max(_errors(unplanned)[half:])


def test_knowing_the_tests_to_come_is_never_worse_on_the_recorded_runs() -> None:
    """Every recorded run replayed: the per-test estimate's mean miss is at most the mean of
    all cases' (eight quiet smoke runs: 15 to 44 % of the run against 17 to 46 %; their
    last case, 60 steps against 12, is what neither can know)."""
    for path in [RUN_SUITES, *QUIET]:
        planned = statistics.fmean(_errors(_replay(path, plan=True)))
        unplanned = statistics.fmean(_errors(_replay(path, plan=False)))
        assert planned <= unplanned, path


def test_a_case_past_its_expected_duration_does_not_eat_the_others_time() -> None:
    clock = SessionClock(total=4)
    clock.finished(10.0)
    clock.finished(10.0)
    assert clock.eta_s(current_elapsed_s=4.0) == 16.0  # 6 s of this one + 10 s of the last
    assert clock.eta_s(current_elapsed_s=60.0) == 10.0  # not 20 - 60 < 0: the last one's 10


def test_the_runs_of_one_item_are_one_case_and_its_test_s_mean_counts() -> None:
    clock = SessionClock()
    clock.plan(["t.py::probe[a]", "t.py::fast[1]", "t.py::fast[2]", "t.py::fast[3]"])
    for duration in (20.0, 20.0, 20.0):  # a batch probe: three runs of one item
        clock.finished(duration, "t.py::probe[a]")
    clock.finished(2.0, "t.py::fast[1]")
    assert (clock.done, clock.total, clock.remaining) == (2, 4, 2)
    # fast[2] and fast[3]: (2 + 1 x 31) / 2 = 16.5 each, not the mean of all (31) each
    assert clock.eta_s() == 33.0


def test_a_later_run_of_one_test_says_which_run_and_no_time_left() -> None:
    lines: list[str] = []
    progress = LiveProgress(FakeWriter(), live=False, verbose=True, write_line=lines.append)
    progress.clock.plan(["t.py::probe[a]", "t.py::fast[1]"])
    for _ in range(3):  # a batch probe: three runs of one item, then a case of another test
        progress.case_reported("probe on cpu: ok", 20.0, nodeid="t.py::probe[a]")
    progress.case_reported("fast on cpu: ok", 2.0, nodeid="t.py::fast[1]")
    assert lines == [
        "gpubench: probe on cpu: ok [1/2 done, ~20s left]",  # the one run seen so far
        "gpubench: probe on cpu: ok [run 2 of this test, 1/2 done]",
        "gpubench: probe on cpu: ok [run 3 of this test, 1/2 done]",
        "gpubench: fast on cpu: ok [2/2 done]",
    ]
