from __future__ import annotations

import io

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
