"""Where one optimizer step's time goes: data, forward, backward, clip, optimizer and the rest.

The engine's train step calls :meth:`PhaseClock.mark` at each phase boundary ("from here on
the step is in ``forward``"); the step timer (:class:`~gpubench.worker.trackers.StepTimer`)
opens the clock with its own start mark and closes it with its own end mark, and the loop
reads the step's seconds per phase after the timer has stopped
(:func:`~gpubench.worker.engines.loop.training_loop`). A phase the step enters several times
(data, forward and backward once per micro-batch) is summed over the step. ``rest`` is
every stretch of the step outside a named phase: from the timer's start to the first
mark, the loss accumulation, the GradScaler's update, ``zero_grad``. It is marked and timed
like any other phase, not defined as the step time minus the others.

How it is timed:

- CUDA: a ``torch.cuda.Event(enable_timing=True)`` recorded on the current stream at
  every boundary, from a pool the clock keeps (a torch step of ``grad_accum``
  micro-batches records ``4 * grad_accum + 3``); no synchronisation inside the step.
  :meth:`PhaseClock.read` runs after the step timer has synchronised on its end event,
  which follows the last mark on the same stream, so every mark has completed and
  ``elapsed_time`` between neighbours is device time. A host-side stall (a slow data
  source) shows up as the device idling between two marks, in the phase where the host
  stalled; the same stall hidden behind queued device work costs the step nothing and
  shows up nowhere, as it should. Work DeepSpeed or DDP put on side streams is counted in
  the phase where the current stream waits for it.
- CPU: ``time.perf_counter()`` at every boundary.

How it relates to the step time: the first and last marks are the step timer's own, and
the phases are the intervals between neighbouring marks, each attributed to one phase; so
they add up to the step time, on the CPU to float rounding and on CUDA within the events'
resolution (about 0.5 µs per interval). The stated tolerance, :data:`SUM_TOLERANCE_S` plus
:data:`SUM_TOLERANCE_SHARE` of the step, leaves room for figures rounded on their way to a
reader; tests/test_phases.py checks every step of both engines against it.

What it costs: on the CPU a ``perf_counter`` call and two list appends per boundary; on CUDA
an event record (host time of the order of a kernel launch, a timestamp write on the
device) per boundary and, after the step, one ``elapsed_time`` per boundary outside the
timer. docs/diagnostics.md, "Time per phase", has the measured figure and the reasoning.
A case with ``time_phases=False`` gets :class:`NoPhases`, whose methods do nothing.
"""

from __future__ import annotations

import dataclasses
import time
from itertools import pairwise
from typing import Any

from gpubench.contracts.result import Metrics, Stats

# Metrics.phases' names, in the order a step runs them ("rest": outside a named phase)
PHASES = ("data", "forward", "backward", "clip", "optimizer", "rest")
REST = "rest"
# phases vs step time: at most this plus SUM_TOLERANCE_SHARE of the step (module docstring)
SUM_TOLERANCE_S = 0.0005
SUM_TOLERANCE_SHARE = 0.01


class PhaseClock:
    """One step's phase boundaries, marked by the train step, read after the step.

    >>> clock = PhaseClock("cpu")
    >>> clock.begin(); clock.mark("data"); clock.mark("forward"); clock.end()
    >>> sorted(clock.read())
    ['data', 'forward', 'rest']
    """

    def __init__(self, device: Any = "cpu", event_factory: Any = None) -> None:
        """``event_factory`` makes a timing event (tests pass a fake); default on CUDA:
        ``torch.cuda.Event(enable_timing=True)``."""
        self.is_cuda = getattr(device, "type", device) == "cuda"
        self.timing = "cuda-events" if self.is_cuda else "perf_counter"
        self._event_factory = event_factory
        self._open = False
        self._phases: list[str] = []  # the phase each mark starts (the last one's is unused)
        self._marks: list[Any] = []  # perf_counter readings (CPU) or recorded events (CUDA)
        self._pool: list[Any] = []  # CUDA: events reused step after step
        self._used = 0  # events of the pool this step has recorded
        self._stream: Any = None  # CUDA: the stream the step timer records on
        self._now = self._record_event if self.is_cuda else time.perf_counter  # a mark

    def begin(self, start: Any = None) -> None:
        """The step's first mark: ``start``, the step timer's own (its ``perf_counter``
        reading or its recorded start event), else one taken now. The step is in ``rest``
        until the train step's first :meth:`mark`."""
        self._phases.clear()
        self._marks.clear()
        self._used = 0
        self._open = True
        if self.is_cuda and self._event_factory is None:
            import torch

            self._stream = torch.cuda.current_stream()  # once a step, not once a mark
        self._phases.append(REST)
        self._marks.append(self._now() if start is None else start)

    def mark(self, phase: str) -> None:
        """From here on the step is in ``phase`` (one of :data:`PHASES`). Outside
        :meth:`begin` ... :meth:`end` (a step called without the loop) it does nothing."""
        if self._open:
            self._phases.append(phase)
            self._marks.append(self._now())

    def end(self, stop: Any = None) -> None:
        """The step's last mark: ``stop``, the step timer's own, else one taken now."""
        if not self._open:
            return
        self._open = False
        self._phases.append("")
        self._marks.append(self._now() if stop is None else stop)

    def read(self) -> dict[str, float]:
        """Seconds per phase of the step just ended (each phase it entered, summed over its
        stretches); on CUDA after the step timer's synchronise. Empty before a step."""
        marks = self._marks
        if self._open or len(marks) < 2:
            return {}
        if self.is_cuda:
            marks[-1].synchronize()  # done already: the step timer waited on its end event
            intervals = [a.elapsed_time(b) / 1000.0 for a, b in pairwise(marks)]  # ms -> s
        else:
            intervals = [b - a for a, b in pairwise(marks)]
        seconds: dict[str, float] = {}
        for phase, duration in zip(self._phases[:-1], intervals, strict=True):
            seconds[phase] = seconds.get(phase, 0.0) + duration
        unknown = seconds.keys() - set(PHASES)
        if unknown:  # a train step's typo would otherwise be a phase of its own
            raise ValueError(f"phase(s) {sorted(unknown)} unknown; valid: {', '.join(PHASES)}")
        return seconds

    def _record_event(self) -> Any:
        """The pool's next event, recorded now on the step's stream."""
        if self._used == len(self._pool):
            self._pool.append(self._new_event())
        event = self._pool[self._used]
        event.record(self._stream)
        self._used += 1
        return event

    def _new_event(self) -> Any:
        if self._event_factory is not None:
            return self._event_factory()
        import torch

        return torch.cuda.Event(enable_timing=True)


class NoPhases(PhaseClock):
    """The clock of a case that does not split its steps: every method does nothing, and
    :meth:`read` is empty (``Metrics.phases`` stays ``{}``, ``phase_timing`` "")."""

    def __init__(self) -> None:
        super().__init__("cpu")
        self.timing = ""

    def begin(self, start: Any = None) -> None:
        pass

    def mark(self, phase: str) -> None:
        pass

    def end(self, stop: Any = None) -> None:
        pass

    def read(self) -> dict[str, float]:
        return {}


def phase_clock(time_phases: bool, device: Any) -> PhaseClock:
    """The clock for a case: :class:`PhaseClock` on ``device``, or :class:`NoPhases`."""
    return PhaseClock(device) if time_phases else NoPhases()


def append_step(
    phase_s: dict[str, list[float]], seconds: dict[str, float], steps_before: int
) -> None:
    """Add one step's seconds per phase to ``phase_s`` (phase -> one value per step), kept
    aligned with the step times: a phase first seen now reads 0.0 for the ``steps_before``
    steps before it, one this step did not enter reads 0.0 for it."""
    if not seconds:
        return
    for phase in seconds.keys() - phase_s.keys():
        phase_s[phase] = [0.0] * steps_before
    for phase, values in phase_s.items():
        values.append(seconds.get(phase, 0.0))


def with_phases(
    metrics: Metrics, phase_s: dict[str, list[float]], warmup_steps: int, timing: str
) -> Metrics:
    """``metrics`` with ``phases`` (Stats of each phase's seconds over the measured steps,
    the steps after the first ``warmup_steps``) and ``phase_timing``. Stats only where the
    throughput is known (a case that trained to the end), as for the step time; the
    per-step seconds are in the Series either way."""
    if not phase_s:
        return metrics
    stats: dict[str, Stats] = {}
    if metrics.tokens_per_s is not None:
        stats = {
            phase: Stats.of(phase_s[phase][warmup_steps:])
            for phase in PHASES
            if phase in phase_s and phase_s[phase][warmup_steps:]
        }
    return dataclasses.replace(metrics, phases=stats, phase_timing=timing)
