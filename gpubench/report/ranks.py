"""Each rank's figures of a case run by several processes, side by side: the report's
per-rank table (``Result.ranks``), above which the case's imbalance sentences stand
(``Result.imbalance``, judged by :mod:`gpubench.runner.imbalance` when the case ran)."""

from __future__ import annotations

from dataclasses import dataclass

from gpubench.contracts.result import RankFigures, Result, Stats
from gpubench.report import figures


@dataclass(frozen=True)
class RankRow:
    rank: str  # "0", "1 (node-b)" where the ranks ran on several machines
    status: str
    tokens_per_s: str  # the rank's own tokens over its own step time, median
    step_ms: str  # median
    device_peak: str  # GiB
    peak_source: str  # which figure that is ("cuda-reserved", "host-rss" on a CPU)
    host_peak: str  # GiB, the rank's own process
    gpu_util: str  # median %, "-" without a GPU
    error: str  # why the rank did not train to the end; "" when it did


def _median(stats: Stats | None) -> float | None:
    return stats.median if stats is not None else None


def rank_rows(result: Result) -> tuple[RankRow, ...]:
    """One row per rank, rank 0 first; () for a case of one process (or a record before v8)."""
    hosts = {r.hostname for r in result.ranks if r.hostname}
    return tuple(_row(r, len(hosts) > 1) for r in result.ranks)


def _row(rank: RankFigures, several_hosts: bool) -> RankRow:
    util = _median(rank.gpu_util)
    peak = rank.peak_memory_bytes
    return RankRow(
        rank=f"{rank.rank}" + (f" ({rank.hostname})" if several_hosts and rank.hostname else ""),
        status=figures.status(rank.status),
        tokens_per_s=figures.rate(_median(rank.tokens_per_s)),
        step_ms=figures.milliseconds(_median(rank.step_time_s)),
        device_peak=figures.gib(peak) if peak else figures.MISSING,
        peak_source=rank.peak_memory_source or figures.MISSING,
        host_peak=figures.gib(rank.peak_rss_bytes) if rank.peak_rss_bytes else figures.MISSING,
        gpu_util=figures.MISSING if util is None else f"{util:.0f}",
        error=rank.error or "",
    )
