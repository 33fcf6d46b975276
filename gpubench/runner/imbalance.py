"""Whether one rank of a case stands apart from the others: slower, markedly more memory,
or a much less busy GPU. Each finding is a sentence naming the rank and its figures
against the others' (``Result.imbalance``); none: balanced.

**Slower.** In data-parallel training (DDP, FSDP, DeepSpeed ZeRO) every rank's *step
time* is the same: the gradient collectives synchronise the ranks, so the fast ones wait
for the slow one inside their collectives and their clocks stop together. A slow rank
shows in the phases of its step that hold no collective, where nothing makes it wait for
the others: ``data`` always, and ``forward`` where the engine's forward exchanges nothing
(DDP, ZeRO-1/2; FSDP and ZeRO-3 all-gather parameters in forward). A rank is slower when
the median of its collective-free phases (summed) exceeds the fastest rank's by more than
:data:`SLOW_SHARE` of the median step time: the others then wait that long each step, which
costs the case that share of its throughput, the size of a tokens/s change the regression
gate judges by default (``gpubench.baseline.rules``: 10 %). Two identical ranks on one
machine agree far closer than that (docs/scale.md has the figures measured).
A case without its phases timed (``time_phases=False``) is not judged for slowness.
A DDP model with buffers broadcasts them in forward (``broadcast_buffers``): there a slow
``data`` still shows, a slow forward hides in rank 0's wait.

**More memory.** The ranks of a data-parallel case hold the same model states (or the
same shards), so their peaks differ by what one rank alone keeps. A rank whose peak (the
device's; on a CPU, its process's resident set) is above :data:`MEMORY_RATIO` times the
smallest rank's, and more than :data:`MEMORY_MIN_BYTES` above it, needs a bigger card than
the others: 1.25 is well outside allocator rounding and the per-rank communication
buffers of a model of any size, and the floor keeps the few MiB of a tiny model's ranks
from reading as a quarter.

**Less busy.** NVML's utilisation is the share of its sample periods in which a kernel ran
on the device. Ranks of one synchronous step share the wall clock, so a GPU whose median is
below :data:`UTIL_RATIO` times the busiest rank's (and :data:`UTIL_MIN_POINTS` points below,
so that near-idle devices are not compared by ratio) idles a quarter of the time the
others compute: waiting for its data, or for a slower peer. The seed's launch report had
100 % and 60 %.
"""

from __future__ import annotations

from collections.abc import Sequence

from gpubench.contracts.case import Case
from gpubench.contracts.result import RAN_STATUSES, RankFigures
from gpubench.contracts.units import MiB, format_bytes

SLOW_SHARE = 0.10  # a rank's collective-free phases longer than the fastest's by this x step
MEMORY_RATIO = 1.25  # a peak above this x the smallest rank's ...
MEMORY_MIN_BYTES = 64 * MiB  # ... and this much above it
UTIL_RATIO = 0.75  # a GPU's median utilisation below this x the busiest rank's ...
UTIL_MIN_POINTS = 10.0  # ... and this many percentage points below it


def collective_free_phases(case: Case) -> tuple[str, ...]:
    """The phases of ``case``'s step in which a rank waits for no other (module docstring)."""
    if case.engine == "fsdp" or (case.engine == "deepspeed" and case.flags.zero_stage >= 3):
        return ("data",)
    return ("data", "forward")


def imbalance_sentences(ranks: Sequence[RankFigures], case: Case) -> list[str]:
    """Why one rank stands apart from the others, a sentence each; [] when balanced (or
    fewer than two ranks trained to the end: a failed rank is named by the case's error)."""
    ran = [r for r in ranks if r.status in RAN_STATUSES]
    if len(ran) < 2:
        return []
    return [*_slower(ran, case), *_more_memory(ran), *_less_busy(ran)]


def _slower(ranks: Sequence[RankFigures], case: Case) -> list[str]:
    phases = collective_free_phases(case)
    timed = [r for r in ranks if r.step_time_s is not None and r.phases]
    if len(timed) < 2:
        return []
    free = {r.rank: sum(r.phases[p].median for p in phases if p in r.phases) for r in timed}
    step = sorted(r.step_time_s.median for r in timed if r.step_time_s)[len(timed) // 2]
    fastest = min(free, key=lambda rank: free[rank])
    names = " + ".join(phases)
    found = []
    for rank, seconds in free.items():
        excess = seconds - free[fastest]
        if step > 0 and excess > SLOW_SHARE * step:
            found.append(
                f"rank {rank} is slower: its {names} took {1e3 * seconds:.1f} ms a step "
                f"(median) against {1e3 * free[fastest]:.1f} ms on rank {fastest}, "
                f"{excess / step:.0%} of the {1e3 * step:.1f} ms step (over "
                f"{SLOW_SHARE:.0%}): the other ranks wait for it in their collectives"
            )
    return found


def _more_memory(ranks: Sequence[RankFigures]) -> list[str]:
    peaks = {r.rank: r.peak_memory_bytes for r in ranks if r.peak_memory_bytes}
    if len(peaks) < 2:
        return []
    smallest = min(peaks, key=lambda rank: peaks[rank])
    low = peaks[smallest]
    source = {r.rank: r.peak_memory_source or "peak" for r in ranks}
    return [
        f"rank {rank} uses more memory: {format_bytes(peak)} ({source[rank]}) against "
        f"{format_bytes(low)} on rank {smallest}, {peak / low:.2f}x (over "
        f"{MEMORY_RATIO:g}x and {format_bytes(MEMORY_MIN_BYTES)} more)"
        for rank, peak in peaks.items()
        if peak > MEMORY_RATIO * low and peak - low > MEMORY_MIN_BYTES
    ]


def _less_busy(ranks: Sequence[RankFigures]) -> list[str]:
    util = {r.rank: r.gpu_util.median for r in ranks if r.gpu_util is not None}
    if len(util) < 2:
        return []
    busiest = max(util, key=lambda rank: util[rank])
    high = util[busiest]
    return [
        f"rank {rank}'s GPU was busy {median:.0f} % of the time (median utilisation) "
        f"against {high:.0f} % on rank {busiest} (below {UTIL_RATIO:g}x): it idles while "
        f"rank {busiest} computes, waiting for its data or for a slower peer"
        for rank, median in util.items()
        if median < UTIL_RATIO * high and high - median >= UTIL_MIN_POINTS
    ]
