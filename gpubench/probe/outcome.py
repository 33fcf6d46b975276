"""What a batch-size probe answers (:class:`BatchProbe`), and the error that stops one."""

from __future__ import annotations

from dataclasses import dataclass

from gpubench.contracts.case import Case
from gpubench.contracts.profiles import HardwareProfile
from gpubench.contracts.result import Result

DOES_NOT_FIT = ("oom", "over_capacity")  # ran out of memory, or only beyond the capacity


class ProbeError(RuntimeError):
    """A run that says nothing about memory (crashed, timeout, diverged) stopped the probe.

    ``results`` holds every run of the probe so far, the one that stopped it last."""

    def __init__(self, message: str, results: tuple[Result, ...]) -> None:
        super().__init__(message)
        self.results = results


def batch_fits(result: Result) -> bool:
    """:attr:`Result.fits` of a probe run (it trained within the capacity), or ProbeError
    when the run says nothing about memory."""
    if result.fits:
        return True
    if result.status in DOES_NOT_FIT:
        return False
    raise ProbeError(
        f"batch probe stopped: {result.describe()}; a {result.status} run says nothing about "
        "memory, so it is counted neither as a fit nor as an OOM",
        (result,),
    )


@dataclass(frozen=True)
class BatchProbe:
    """The largest batch of ``case`` that fits ``profile``, how it was found, and the
    tokens/s curve up to it."""

    case: Case  # the case probed (its own batch_size is not used)
    profile: HardwareProfile
    limit: int  # the largest batch searched (max_batch, else BATCH_LIMIT)
    predicted_batch: int  # where the search started: the largest the estimate said fits
    largest_batch: int | None  # None: not even a batch of 1 fits
    probes: tuple[Result, ...]  # the search's runs, in the order they ran
    curve: tuple[Result, ...]  # the case as declared per ladder batch, ascending

    @property
    def any_batch_fits(self) -> bool:
        """Whether a batch of 1 or more fits."""
        return self.largest_batch is not None

    @property
    def limited_by_cap(self) -> bool:
        """The limit fitted: memory might take a larger batch than was searched."""
        return self.largest_batch == self.limit

    @property
    def worker_runs(self) -> int:
        """Workers started: every probe, and each curve point no probe had already run."""
        probed = {id(result) for result in self.probes}
        return len(self.probes) + sum(1 for result in self.curve if id(result) not in probed)

    def probe_at(self, batch: int) -> Result | None:
        """The search's run at ``batch``, or None when the search did not run it."""
        return next((r for r in self.probes if r.case.batch_size == batch), None)

    @property
    def tokens_per_s_curve(self) -> list[tuple[int, float | None]]:
        """(batch size, median tokens/s) per curve point; None where the run stopped early."""
        return [(result.case.batch_size, result.tokens_per_s) for result in self.curve]

    def describe(self) -> str:
        """A few lines for a log or an assertion message."""
        if self.largest_batch is None:
            head = "no batch fits, not even 1"
        else:
            head = f"largest batch {self.largest_batch}"
            if self.limited_by_cap:
                head += " (the limit searched; memory may allow more)"
        lines = [
            f"{self.case.model} on {self.profile.name}: {head}; started at the predicted "
            f"{self.predicted_batch}, {len(self.probes)} probes, {self.worker_runs} worker runs",
            "probes: " + ", ".join(f"b{r.case.batch_size} {r.status}" for r in self.probes),
        ]
        lines += [f"  b{r.case.batch_size}: {_point(r)}" for r in self.curve]
        return "\n".join(lines)


def _point(result: Result) -> str:
    if result.tokens_per_s is None:
        return result.status
    return f"{result.tokens_per_s:,.0f} tok/s ({result.status})"
