"""What the terminal shows while a matrix runs: the case's phase, step, tokens/s and
memory so far, and cases done / remaining with an estimated time left.

On a terminal the live line is drawn *below* pytest's current line and erased
when the case ends, with the cursor put back where pytest left it, so the
``.``/``PASSED`` output of ``-q``, default and ``-v`` reads as usual. Without a
terminal (CI logs) nothing is redrawn; one line per finished case is written
instead, unless ``-q`` (:func:`choose_display`). Writes go through pytest's
TerminalWriter with output capture suspended (the same way pytest's live logging does).

Under pytest-xdist the workers have no terminal and draw nothing; the
controller learns of each finished case from its test report (the fixture
puts the case's one-line summary, duration and the collected total in
``user_properties``) and writes a line per case with done / total and the
time left, the cases' expected durations spread over the workers
(:meth:`LiveProgress.case_reported`; :class:`SessionClock` says how a case's
duration is expected). A line, not a live line: the controller
prints xdist's own output as reports arrive, and a redrawn line below it
would be overwritten.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from gpubench.contracts.case import Case
from gpubench.contracts.profiles import HardwareProfile
from gpubench.contracts.protocol import ProgressEvent
from gpubench.contracts.result import Result
from gpubench.contracts.text import safe_text
from gpubench.contracts.units import GiB


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def function_of(nodeid: str) -> str:
    """The test function a case belongs to: its pytest id without the parameters
    (``suites/test_cpu_smoke.py::test_engine_flags``)."""
    return nodeid.split("[", 1)[0]


SHRINK = 1.0  # the weight, in cases, of the mean of all in a test's expected duration


class SessionClock:
    """Cases done / remaining and the time left, from the durations seen so far.

    A case is a pytest item: the runs of one item (a batch probe's, a gate's confirmation
    reruns) add up to its duration. The time left is each remaining case's expected
    duration, summed and spread over the cases running at once, less what the running
    case has already spent (never below nothing: a case past its expected duration does
    not eat into the others'). Where the clock knows which test each remaining case
    belongs to (:meth:`plan`), a case's expected duration is the mean of its test's
    finished cases, drawn towards the mean of all by :data:`SHRINK` (one finished case
    is a noisy guess of the next); otherwise, and for a test none of whose cases has
    finished, it is the mean of all finished cases. Tests differ tenfold in duration (a
    2-step estimator check, a 60-step training, a batch probe of six runs): replayed on
    a real 25-case run of the shipped suites, the per-test means are 12 % off the real
    remainder halfway through where the mean of all is 65 % off
    (``tests/test_progress.py``).
    """

    def __init__(self, total: int = 0, parallel: int = 1) -> None:
        self.total = total
        self.parallel = max(1, parallel)  # cases running at once (xdist workers)
        self._items: dict[str, float] = {}  # nodeid (or a run's number) -> its duration
        self._functions: dict[str, list[float]] = {}  # test function -> [sum, cases]
        self._pending: list[str] = []  # the planned cases not finished yet, in run order
        self._runs: dict[str, int] = {}  # nodeid -> runs finished

    def plan(self, nodeids: Sequence[str]) -> None:
        """The cases the session will run, in order (the collected items' pytest ids)."""
        self._pending = list(dict.fromkeys(n for n in nodeids if n not in self._items))
        self.total = len(self._items) + len(self._pending)

    def finished(self, duration_s: float, nodeid: str | None = None) -> None:
        """A run of the case ``nodeid`` ended after ``duration_s``."""
        key = nodeid if nodeid is not None else f"#run{len(self._items)}"
        function = self._functions.setdefault(function_of(key), [0.0, 0])
        function[0] += duration_s
        if key not in self._items:
            function[1] += 1
        self._items[key] = self._items.get(key, 0.0) + duration_s
        self._runs[key] = self._runs.get(key, 0) + 1
        if key in self._pending:
            self._pending.remove(key)

    @property
    def done(self) -> int:
        return len(self._items)

    @property
    def remaining(self) -> int:
        return max(0, self.total - self.done)

    def expected_s(self, nodeid: str | None = None) -> float | None:
        """A case's expected duration (see the class); None before any case finished."""
        if not self._items:
            return None
        return self._expected(nodeid, sum(self._items.values()) / len(self._items))

    def _expected(self, nodeid: str | None, overall: float) -> float:
        same = self._functions.get(function_of(nodeid)) if nodeid is not None else None
        if same is None:
            return overall
        total, cases = same
        return (total + SHRINK * overall) / (cases + SHRINK)

    def eta_s(self, current_elapsed_s: float = 0.0) -> float | None:
        """Seconds left, the running case having run ``current_elapsed_s``; None before any
        case finished."""
        overall = self.expected_s()
        if overall is None:
            return None
        if self._pending:
            expected = [self._expected(n, overall) for n in self._pending]
        else:
            expected = [overall] * self.remaining
        if not expected:
            return 0.0
        running, *rest = expected
        return (max(0.0, running - current_elapsed_s) + sum(rest)) / self.parallel

    def describe(self, current_elapsed_s: float = 0.0, nodeid: str | None = None) -> str:
        """``3/28 done, ~4m10s left``. After a later run of one test (a batch probe's,
        a confirmation rerun) the time left is not said: that test may have more runs to
        come, and its duration so far is no case's."""
        text = f"{self.done}/{self.total} done" if self.total else f"{self.done} done"
        runs = self._runs.get(nodeid, 0) if nodeid is not None else 0
        if runs > 1:
            return f"run {runs} of this test, {text}"
        eta = self.eta_s(current_elapsed_s)
        if eta is not None and self.remaining:
            text += f", ~{format_duration(eta)} left"
        return text


def describe_event(event: ProgressEvent) -> str:
    if event.phase == "building-ops":  # DeepSpeed's compiled ops, not in the cache yet
        ops = f" {event.detail}" if event.detail else ""
        return f"building ops{ops} (not in the op cache yet: tens of seconds)"
    parts = [event.phase]
    if event.phase in ("warmup", "measuring"):
        total = f"/{event.total_steps}" if event.total_steps else ""
        parts.append(f"step {event.step}{total}")
    if event.tokens_per_s:
        parts.append(f"{event.tokens_per_s:,.0f} tok/s")
    if event.memory_bytes:
        parts.append(f"{event.memory_bytes / GiB:.2f} GiB")
    return " ".join(parts)


class LiveProgress:
    """Draws progress through a pytest TerminalWriter (duck-typed: write/flush/fullwidth)."""

    def __init__(
        self,
        writer: Any,
        *,
        live: bool,
        verbose: bool,
        suspend_capture: Callable[[], AbstractContextManager[None]] | None = None,
        write_line: Callable[[str], None] | None = None,
    ) -> None:
        self._tw = writer
        self._live = live
        self._verbose = verbose
        self._suspend = suspend_capture or contextlib.nullcontext
        self._write_line = write_line
        self.clock = SessionClock()
        self._label = ""
        self._started = 0.0
        self._shown = False
        self._saved_line = ""
        self._saved_col = 0

    # -- case lifecycle ---------------------------------------------------------------------
    def case_started(self, case: Case, profile: HardwareProfile) -> None:
        self._label = safe_text(f"{case.id}@{profile.name}", lines=False)
        self._started = time.monotonic()
        self._draw("starting")

    def update(self, event: ProgressEvent) -> None:
        self._draw(safe_text(describe_event(event), lines=False))

    def case_finished(self, result: Result) -> None:
        self._erase()
        self.clock.finished(result.duration_s or (time.monotonic() - self._started), result.nodeid)
        if self._verbose and not self._live and self._write_line is not None:
            with self._suspend():
                clock = self.clock.describe(nodeid=result.nodeid)
                line = safe_text(result.describe(), lines=False)
                self._write_line(f"gpubench: {line} [{clock}]")

    def case_reported(
        self,
        summary: str,
        duration_s: float,
        total: int | None = None,
        nodeid: str | None = None,
    ) -> None:
        """A case finished elsewhere (an xdist worker): count it and write its line."""
        if total:
            self.clock.total = max(self.clock.total, total)
        self.clock.finished(duration_s, nodeid)
        if self._write_line is not None:
            with self._suspend():
                clock = self.clock.describe(nodeid=nodeid)
                self._write_line(f"gpubench: {safe_text(summary, lines=False)} [{clock}]")

    # -- drawing ----------------------------------------------------------------------------
    def _text(self, status: str) -> str:
        elapsed = time.monotonic() - self._started
        clock = self.clock.describe(elapsed)
        return f"[gpubench {clock}] {self._label} {status} ({format_duration(elapsed)})"

    def _draw(self, status: str) -> None:
        if not self._live:
            return
        width = max(20, int(getattr(self._tw, "fullwidth", 80)) - 1)
        text = self._text(status)[:width]
        with self._suspend():
            if not self._shown:
                # Remember pytest's current line, then draw on the line below it.
                self._saved_line = getattr(self._tw, "_current_line", "")
                self._saved_col = int(getattr(self._tw, "width_of_current_line", 0))
                self._tw.write("\n")
                self._shown = True
            self._tw.write("\r" + text.ljust(width), flush=True)

    def _erase(self) -> None:
        if not (self._live and self._shown):
            return
        width = max(20, int(getattr(self._tw, "fullwidth", 80)) - 1)
        with self._suspend():
            # Blank the live line, go back up to the end of pytest's line.
            back = "\r" + " " * width + "\r\x1b[1A"
            if self._saved_col:
                back += f"\x1b[{self._saved_col}C"
            self._tw.write(back, flush=True)
            if hasattr(self._tw, "_current_line"):
                self._tw._current_line = self._saved_line  # keep pytest's width bookkeeping
        self._shown = False


@dataclass(frozen=True)
class Display:
    """How progress is shown: a status line redrawn in place, and/or a line per case."""

    live: bool
    lines: bool


def choose_display(
    mode: str, *, terminal: bool, verbosity: int, xdist_controller: bool = False
) -> Display | None:
    """The display for ``--gpubench-progress MODE``; None: show nothing.

    ``auto`` is live on a terminal and a line per finished case otherwise (a CI log),
    unless ``-q``. The xdist controller writes lines only: it prints xdist's own output
    as reports arrive, which a redrawn line below it would overwrite."""
    if mode == "off" or (mode == "auto" and verbosity < 0):
        return None
    live = not xdist_controller and (mode == "live" or (mode == "auto" and terminal))
    return Display(live=live, lines=not live)
