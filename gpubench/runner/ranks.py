"""Each rank's own figures of a case run by several processes (torchrun), and the case's
figures derived from them.

Every rank writes a Result of its own (:func:`gpubench.contracts.protocol.rank_result_path`);
the parent, not the worker, turns them into :class:`~gpubench.contracts.result.RankFigures`:
only the parent sees every rank's answer, including the absence of one (a rank killed by
a signal writes nothing, and still gets a row saying so), and the ranks need no collective
at the end of a run to compare themselves, which a rank that failed could not join.

The case's figures, derived from the ranks:

- throughput: a synchronous data-parallel step is over when its slowest rank is, so the
  case's step time of step *i* is the largest of the ranks' step times of step *i*, and
  its tokens/s is every rank's tokens of that step over it. (Rank 0's own clock stops
  when rank 0 is done: a rank that is slower after the step's last collective, in its
  optimizer step say, is not in it.) The figures that scale with the median tokens/s
  (model FLOP/s, MFU, dollars per million tokens, the interval's ends) follow it; the
  interval's relative half-width stays the one rank 0's bootstrap measured.
- memory: each peak of the largest rank (:func:`gpubench.runner.classify.merge_rank_results`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from gpubench.contracts.result import Metrics, RankFigures, Result, Stats
from gpubench.runner.classify import signal_name, torchrun_root_cause
from gpubench.runner.imbalance import imbalance_sentences


def measured_step_times(result: Result) -> list[float]:
    """The rank's step times after its warm-up, as its Metrics were computed from them; []
    for a rank that did not train to the end (its few steps are not its speed)."""
    if not result.ran:
        return []
    return [t for t in result.series.step_time_s[result.metrics.warmup_steps :] if t > 0]


def rank_figures(rank: int, result: Result) -> RankFigures:
    """Rank ``rank``'s figures from its own Result: its own tokens (the case's tokens per
    step, one rank's share) over its own step times, its own peaks and telemetry."""
    m = result.metrics
    steps = measured_step_times(result)
    tokens = result.case.tokens_per_step
    cuda = result.profile.kind == "cuda"
    return RankFigures(
        rank=rank,
        status=result.status,
        hostname=result.environment.hostname,
        # torchrun numbers a node's ranks contiguously: LOCAL_RANK is rank mod nproc
        device=f"cuda:{rank % result.case.nproc}" if cuda else "cpu",
        measured_steps=m.measured_steps,
        tokens_per_s=Stats.of([tokens / t for t in steps]) if steps else None,
        step_time_s=Stats.of(steps) if steps else None,
        peak_memory_bytes=m.peak_memory_bytes,
        peak_memory_source=m.peak_memory_source,
        peak_rss_bytes=m.peak_rss_bytes,
        gpu_util=m.gpu_util,
        phases=dict(m.phases) if steps else {},
        error=result.error.message if result.error else None,
    )


def silent_rank(rank: int, case_result: Result, stderr: str) -> RankFigures:
    """A row for a rank that wrote no Result: killed by a signal (named from torchrun's root
    cause when it is this rank), stopped by torchrun after another rank failed, or still
    running when the case hit its time limit."""
    status = "timeout" if case_result.status == "timeout" else "crashed"
    error = "left no result (stopped with the case, or ended before it could write one)"
    cause = torchrun_root_cause(stderr)
    if status == "timeout":
        error = "left no result: the case ran past its time limit"
    elif cause is not None and cause[0] == rank:
        code = cause[1]
        how = f"was killed by {signal_name(code)}" if code < 0 else f"exited with code {code}"
        error = f"the worker {how} without a result (torchrun's root cause)"
    return RankFigures(rank=rank, status=status, error=error)


def with_ranks(
    result: Result, answered: Sequence[tuple[int, Result]], world_size: int, stderr: str = ""
) -> Result:
    """``result`` (the case's, merged: :func:`~gpubench.runner.classify.merge_rank_results`)
    with every rank's figures, rank 0 first, and, for a case that trained to the end, its
    throughput derived from them and its imbalance judged (:mod:`gpubench.runner.imbalance`).

    ``answered`` holds ``(rank, Result)`` of each rank that wrote one; ``world_size`` the
    ranks the case was started with on this machine (a rank of them without a Result gets
    a row saying why, :func:`silent_rank`); 0: list only the ranks that answered (the
    ranks of other machines write their Results there)."""
    found = {rank: rank_figures(rank, r) for rank, r in answered}
    expected = set(range(world_size)) | found.keys()
    figures = [found.get(rank) or silent_rank(rank, result, stderr) for rank in sorted(expected)]
    result = dataclasses.replace(result, ranks=figures)
    if not result.ran or len(answered) < 2:
        return result
    results = [r for _, r in sorted(answered, key=lambda pair: pair[0])]
    metrics = derived_throughput(result.metrics, results)
    return dataclasses.replace(
        result, metrics=metrics, imbalance=imbalance_sentences(figures, result.case)
    )


def derived_throughput(metrics: Metrics, ranks: Sequence[Result]) -> Metrics:
    """``metrics`` with its throughput over every rank (the module docstring): each measured
    step's time is its slowest rank's, its tokens and samples every rank's. ``metrics`` as
    it is where the ranks did not all train to the end over the same steps."""
    series = [measured_step_times(r) for r in ranks]
    warmups = {r.metrics.warmup_steps for r in ranks}
    if not series[0] or len(warmups) > 1 or len({len(s) for s in series}) > 1:
        return metrics
    if metrics.tokens_per_s is None:
        return metrics
    steps = [max(times) for times in zip(*series, strict=True)]
    case = ranks[0].case
    tokens = sum(r.case.tokens_per_step for r in ranks)
    samples = len(ranks) * case.batch_size * case.flags.grad_accum
    tokens_per_s = Stats.of([tokens / t for t in steps])
    scale = tokens_per_s.median / metrics.tokens_per_s.median

    def scaled(value: float | None, by: float) -> float | None:
        return None if value is None else value * by

    return dataclasses.replace(
        metrics,
        tokens_per_s=tokens_per_s,
        samples_per_s=Stats.of([samples / t for t in steps]),
        step_time_s=Stats.of(steps),
        tokens_per_step=tokens,
        tokens_per_s_low=scaled(metrics.tokens_per_s_low, scale),
        tokens_per_s_high=scaled(metrics.tokens_per_s_high, scale),
        model_flops_per_s=scaled(metrics.model_flops_per_token, tokens_per_s.median),
        mfu=scaled(metrics.mfu, scale),
        usd_per_million_tokens=scaled(metrics.usd_per_million_tokens, 1 / scale),
    )
