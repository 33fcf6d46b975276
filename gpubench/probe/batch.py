"""probe_batch_size(): the largest batch of a case that fits a profile, found with isolated
worker probes started where the memory estimate points, and the tokens/s curve up to it."""

from __future__ import annotations

from collections.abc import Callable

from gpubench.contracts.case import Case
from gpubench.contracts.profiles import HardwareProfile
from gpubench.contracts.result import Result
from gpubench.probe.cases import PROBE_STEPS, PROBE_WARMUP, batch_case, probe_case
from gpubench.probe.curve import curve_batches
from gpubench.probe.outcome import BatchProbe, ProbeError, batch_fits
from gpubench.probe.search import largest_fitting
from gpubench.probe.start import Predict, estimated_peak_bytes, predicted_largest_batch

Run = Callable[[Case, HardwareProfile], Result]  # one case in its own worker
BATCH_LIMIT = 2**16  # searched when no max_batch is given: sequences per micro-batch


def run_in_worker(case: Case, profile: HardwareProfile) -> Result:
    """:func:`gpubench.runner.run_case` under the case's timeout, else a session's default."""
    from gpubench.runner import run_case
    from gpubench.session.settings import DEFAULT_TIMEOUT_S

    return run_case(case, profile, timeout_s=case.timeout_s or DEFAULT_TIMEOUT_S)


def probe_batch_size(
    case: Case,
    profile: HardwareProfile,
    *,
    max_batch: int | None = None,
    predict: Predict = estimated_peak_bytes,
    run: Run = run_in_worker,
    probe_steps: int | None = PROBE_STEPS,
    probe_warmup: int = PROBE_WARMUP,
    curve: bool = True,
) -> BatchProbe:
    """The largest batch (sequences per micro-batch) of ``case`` that fits ``profile``.

    The search starts at the largest batch ``predict`` says fits (at most ``max_batch``),
    runs each probe with ``run`` (a fresh worker; ``probe_warmup`` + ``probe_steps``
    steps, or the case as declared with ``probe_steps=None``) and narrows the fitting and
    failing batches until they are adjacent (:mod:`gpubench.probe.search`). ``ok`` fits;
    ``oom`` and ``over_capacity`` do not; any other status raises :class:`ProbeError`.
    With ``curve``, the case as declared then runs at 1, 2, 4, ... and the largest batch;
    a run of the very same case the search made is reused, not repeated. A short probe
    that fit, at a batch whose run of the declared length then did not (near a hard cap
    the allocator's state after more steps can decide), steps the answer down one batch
    at a time until a full-length run fits: the answer is what the declared run fits.
    """
    limit = _limit(max_batch)
    _check_probe_steps(probe_steps, probe_warmup)
    runs = _Runs(run, profile)
    start = predicted_largest_batch(case, profile, predict, limit)

    def probe_fits(batch: int) -> bool:
        return batch_fits(runs.result(probe_case(case, batch, probe_steps, probe_warmup)))

    bracket = largest_fitting(probe_fits, start, limit)
    probes = runs.done()
    points: tuple[Result, ...] = ()
    largest = bracket.largest_fitting
    if curve and largest is not None:
        ladder = curve_batches(largest)
        points = tuple(runs.result(batch_case(case, batch)) for batch in ladder)
        largest, points = _confirmed(case, largest, points, runs)
    return BatchProbe(
        case=case,
        profile=profile,
        limit=limit,
        predicted_batch=start,
        largest_batch=largest,
        probes=probes,
        curve=points,
    )


def _confirmed(
    case: Case, largest: int, points: tuple[Result, ...], runs: _Runs
) -> tuple[int | None, tuple[Result, ...]]:
    """The largest batch whose declared-length run fits, stepping down from ``largest``
    while its curve run does not; the curve gains each run this costs."""
    by_batch = {r.case.batch_size: r for r in points}
    batch: int | None = largest
    while batch is not None and not batch_fits(by_batch[batch]):
        batch = batch - 1 if batch > 1 else None
        if batch is not None and batch not in by_batch:
            by_batch[batch] = runs.result(batch_case(case, batch))
    return batch, tuple(by_batch[b] for b in sorted(by_batch))


def _limit(max_batch: int | None) -> int:
    if max_batch is None:
        return BATCH_LIMIT
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ValueError(f"max_batch={max_batch!r} must be a whole number >= 1, or None")
    return max_batch


def _check_probe_steps(steps: int | None, warmup: int) -> None:
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 2):
        raise ValueError(f"probe_steps={steps!r} must be a whole number >= 2, or None")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"probe_warmup={warmup!r} must be a whole number >= 0")


class _Runs:
    """Every run of one probe, in order; a case already run is answered from its Result.

    A run that says nothing about memory raises ProbeError carrying all runs so far."""

    def __init__(self, run: Run, profile: HardwareProfile) -> None:
        self._run = run
        self._profile = profile
        self._by_case: dict[str, Result] = {}

    def result(self, case: Case) -> Result:
        key = case.to_json()
        if key not in self._by_case:
            result = self._run(case, self._profile)
            self._by_case[key] = result
            try:
                batch_fits(result)
            except ProbeError as exc:
                raise ProbeError(str(exc), self.done()) from None
        return self._by_case[key]

    def done(self) -> tuple[Result, ...]:
        return tuple(self._by_case.values())
