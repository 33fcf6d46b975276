"""Each rank's own figures (Result.ranks), the case's figures derived from them, and the
imbalance judged from them (gpubench.runner.ranks, gpubench.runner.imbalance).

End to end on CPU through torchrun and gloo: DDP, FSDP and DeepSpeed ZeRO-2 with two ranks;
a slow rank planted by a model that sleeps in its forward on rank 1 only; a rank killed
mid-run by SIGKILL. The rule itself is checked on planted RankFigures.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import psutil
import pytest

from gpubench.contracts.case import Case
from gpubench.contracts.profiles import HardwareProfile
from gpubench.contracts.result import (
    Metrics,
    RankFigures,
    Result,
    Series,
    Stats,
)
from gpubench.contracts.units import MiB
from gpubench.report.document import ReportData, build_report
from gpubench.report.render import render_html, render_markdown
from gpubench.runner.imbalance import imbalance_sentences
from gpubench.runner.process import run_case
from gpubench.runner.ranks import derived_throughput, with_ranks
from gpubench.session.summary import format_summary

PROFILE = HardwareProfile(
    name="cpu",
    kind="cpu",
    memory_bytes=4 * 2**30,
    bf16_flops=None,
    fp32_flops=None,
    memory_bandwidth=None,
)
TWO_RANKS = Case(model="gpt-tiny", batch_size=2, seq_len=32, steps=10, warmup=2, nproc=2)
ENGINES = {
    "ddp": TWO_RANKS,
    "fsdp": TWO_RANKS.replace(engine="fsdp"),
    "zero2": TWO_RANKS.replace(engine="deepspeed", zero_stage=2),
}

# rank 1 sleeps in its forward: a rank slower in a phase without a collective (DDP, ZeRO-2)
SLOW_RANK_MODEL = """
import os, time
from torch import nn


class TinyLM(nn.Module):
    vocab_size = 64

    def __init__(self):
        super().__init__()
        self.emb, self.head = nn.Embedding(64, 16), nn.Linear(16, 64)
        self.slow = os.environ["RANK"] == "1"

    def forward(self, idx):
        if self.slow:
            time.sleep(SLEEP_S)
        return self.head(self.emb(idx))


def make():
    return TinyLM()
"""

# rank 1 kills itself with SIGKILL in its 4th forward: mid-run, after warm-up
KILLED_RANK_MODEL = """
import os, signal
from torch import nn


class TinyLM(nn.Module):
    vocab_size = 64

    def __init__(self):
        super().__init__()
        self.emb, self.head, self.calls = nn.Embedding(64, 16), nn.Linear(16, 64), 0

    def forward(self, idx):
        self.calls += 1
        if os.environ["RANK"] == "1" and self.calls == 4:
            os.kill(os.getpid(), signal.SIGKILL)
        return self.head(self.emb(idx))


def make():
    return TinyLM()
"""


def _import_path(folder: Path) -> dict[str, str]:
    paths = [str(folder), os.environ.get("PYTHONPATH")]
    return {"PYTHONPATH": os.pathsep.join(p for p in paths if p)}


@pytest.fixture(scope="module", params=sorted(ENGINES))
def two_ranks(request: pytest.FixtureRequest) -> Result:
    return run_case(ENGINES[request.param], PROFILE, timeout_s=300)


# -- end to end -----------------------------------------------------------------------------
def test_every_rank_has_its_own_figures(two_ranks: Result) -> None:
    result = two_ranks
    assert result.status == "ok", result.describe()
    assert [r.rank for r in result.ranks] == [0, 1]
    for rank in result.ranks:
        assert rank.status == "ok" and rank.error is None and rank.device == "cpu"
        assert rank.hostname == result.environment.hostname
        assert rank.measured_steps == result.metrics.measured_steps == 10
        assert rank.tokens_per_s is not None and rank.step_time_s is not None
        assert rank.step_time_s.n == 10
        # the rank's own tokens (one rank's share of the step) over its own step time
        own = result.case.tokens_per_step
        assert rank.tokens_per_s.max == pytest.approx(own / rank.step_time_s.min, rel=1e-9)
        assert rank.tokens_per_s.min == pytest.approx(own / rank.step_time_s.max, rel=1e-9)
        assert rank.peak_memory_source == "host-rss"  # a CPU's device memory is the host's
        assert rank.peak_memory_bytes == rank.peak_rss_bytes and rank.peak_rss_bytes
        assert rank.gpu_util is None  # no GPU, nothing measured
        assert {"data", "forward", "backward"} <= rank.phases.keys()
    # the case's figures from the ranks: each step as long as its slowest rank's, every
    # rank's tokens; memory of the largest rank
    m = result.metrics
    assert m.tokens_per_step == 2 * result.case.tokens_per_step
    assert m.step_time_s is not None and m.tokens_per_s is not None
    steps = [r.step_time_s for r in result.ranks if r.step_time_s is not None]
    rates = [r.tokens_per_s.median for r in result.ranks if r.tokens_per_s is not None]
    assert m.step_time_s.median >= max(s.median for s in steps)  # each step's max over ranks
    assert m.step_time_s.max == max(s.max for s in steps)
    assert m.tokens_per_s.median <= 2 * min(rates) * (1 + 1e-12)  # 2 ranks' tokens, own steps
    assert m.peak_rss_bytes == max(r.peak_rss_bytes or 0 for r in result.ranks)
    # two identical ranks on one machine: no false alarm
    assert result.imbalance == [], result.imbalance
    assert Result.from_json(result.to_json()).ranks == result.ranks


def test_the_report_shows_each_rank_side_by_side(two_ranks: Result) -> None:
    report = build_report(ReportData([two_ranks]))
    markdown, html = render_markdown(report), render_html(report)
    assert "| rank | status | tokens/s | step, ms | device peak, GiB |" in markdown
    for rank in two_ranks.ranks:
        assert rank.tokens_per_s is not None
        tokens = f"{rank.tokens_per_s.median:,.0f}"
        assert f"| {rank.rank} | PASS | {tokens} |" in markdown
        assert f'<tr><td>{rank.rank}</td><td>PASS</td><td class="num">{tokens}</td>' in html
    assert "imbalanced" not in markdown.lower() and "imbal" not in format_summary([two_ranks])


@pytest.mark.parametrize("engine", ["ddp", "zero2"])
def test_a_planted_slow_rank_is_flagged(engine: str, tmp_path: Path) -> None:
    # 20 ms a forward on rank 1 against a step of about 10 ms: over a half of the step
    (tmp_path / "slow_rank_model.py").write_text(SLOW_RANK_MODEL.replace("SLEEP_S", "0.02"))
    case = ENGINES[engine].replace(model="slow_rank_model:make", steps=8)
    result = run_case(case, PROFILE, timeout_s=300, env=_import_path(tmp_path))
    assert result.status == "ok", result.describe()
    assert len(result.imbalance) == 1, result.imbalance
    assert result.imbalance[0].startswith("rank 1 is slower: its data + forward took ")
    assert "on rank 0" in result.imbalance[0]
    slow, fast = result.ranks[1], result.ranks[0]
    assert slow.phases["forward"].median >= 0.02 > fast.phases["forward"].median
    # its step is the others' too: they wait for it in their collectives (backward)
    assert fast.phases["backward"].median > slow.phases["backward"].median
    assert "imbalanced: rank 1 is slower" in result.describe()
    summary = format_summary([result], width=200)
    assert "imbal" in summary and f"imbal: {case.id}: rank 1 is slower" in summary
    markdown = render_markdown(build_report(ReportData([result])))
    assert "- imbalanced: rank 1 is slower" in markdown


def test_a_rank_killed_mid_run_is_named_and_leaves_no_process(tmp_path: Path) -> None:
    (tmp_path / "killed_rank_model.py").write_text(KILLED_RANK_MODEL)
    case = TWO_RANKS.replace(model="killed_rank_model:make", warmup=1, steps=20)
    workdir = tmp_path / "case"
    result = run_case(case, PROFILE, timeout_s=120, env=_import_path(tmp_path), workdir=workdir)
    assert result.status == "crashed", result.describe()
    assert result.error is not None and result.error.signal == "SIGKILL"
    assert result.error.message.startswith("rank 1: the worker was killed by SIGKILL")
    assert result.duration_s is not None and result.duration_s < 60  # not the time limit
    killed = result.ranks[1]
    assert (killed.rank, killed.status) == (1, "crashed")
    assert killed.error is not None and "SIGKILL" in killed.error
    assert killed.tokens_per_s is None and result.imbalance == []
    assert result.ranks[0].status == "crashed"  # lost its peer, or stopped by torchrun
    left = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if any(str(workdir) in arg for arg in p.info["cmdline"] or ())
    ]
    assert left == [], f"processes of the case still alive: {left}"


def test_one_process_has_no_ranks() -> None:
    result = run_case(TWO_RANKS.replace(nproc=1, steps=3, warmup=1), PROFILE, timeout_s=120)
    assert result.status == "ok", result.describe()
    assert result.ranks == [] and result.imbalance == []


# -- the rule, on planted figures -----------------------------------------------------------
def _stats(median: float) -> Stats:
    return Stats.of([median] * 5)


def _rank(
    rank: int,
    *,
    step: float = 0.100,
    data: float = 0.001,
    forward: float = 0.020,
    backward: float = 0.060,
    peak: int = 2048 * MiB,
    util: float | None = None,
    status: str = "ok",
) -> RankFigures:
    phases = {"data": data, "forward": forward, "backward": backward}
    return RankFigures(
        rank=rank,
        status=status,
        step_time_s=_stats(step),
        tokens_per_s=_stats(1000 / step),
        peak_memory_bytes=peak,
        peak_memory_source="cuda-reserved",
        gpu_util=None if util is None else _stats(util),
        phases={name: _stats(seconds) for name, seconds in phases.items()},
    )


def test_a_rank_slower_in_its_collective_free_phases_is_named() -> None:
    # rank 1 spends 15 ms more in forward; rank 0 waits that long in its backward
    ranks = [_rank(0, backward=0.075), _rank(1, forward=0.035), _rank(2, backward=0.075)]
    [sentence] = imbalance_sentences(ranks, TWO_RANKS)
    assert sentence.startswith("rank 1 is slower: its data + forward took 36.0 ms a step")
    assert "against 21.0 ms on rank 0, 15% of the 100.0 ms step" in sentence


def test_a_difference_under_a_tenth_of_the_step_is_balanced() -> None:
    ranks = [_rank(0), _rank(1, forward=0.029)]  # 9 ms of a 100 ms step
    assert imbalance_sentences(ranks, TWO_RANKS) == []
    assert imbalance_sentences([_rank(0), _rank(1)], TWO_RANKS) == []


def test_fsdp_and_zero3_are_judged_on_their_data_phase_only() -> None:
    # their forward all-gathers parameters: a longer forward may be a wait, not slowness
    ranks = [_rank(0), _rank(1, forward=0.050)]
    for case in (TWO_RANKS.replace(engine="fsdp"), ENGINES["zero2"].replace(zero_stage=3)):
        assert imbalance_sentences(ranks, case) == []
    slow_data = [_rank(0), _rank(1, data=0.030)]
    [sentence] = imbalance_sentences(slow_data, TWO_RANKS.replace(engine="fsdp"))
    assert sentence.startswith("rank 1 is slower: its data took 30.0 ms")


def test_markedly_more_memory_needs_the_ratio_and_the_floor() -> None:
    big = [_rank(0, peak=2048 * MiB), _rank(1, peak=2700 * MiB)]  # 1.32x, 652 MiB more
    [sentence] = imbalance_sentences(big, TWO_RANKS)
    assert sentence.startswith("rank 1 uses more memory: 2.6 GiB (cuda-reserved) against 2.0 GiB")
    assert "on rank 0, 1.32x" in sentence
    tiny = [_rank(0, peak=100 * MiB), _rank(1, peak=150 * MiB)]  # 1.5x but 50 MiB
    close = [_rank(0, peak=2048 * MiB), _rank(1, peak=2500 * MiB)]  # 1.22x
    assert imbalance_sentences(tiny, TWO_RANKS) == imbalance_sentences(close, TWO_RANKS) == []


def test_the_seeds_utilisation_split_is_flagged() -> None:
    seed = [_rank(0, util=100.0), _rank(1, util=60.0)]  # the launch report's two A100s
    [sentence] = imbalance_sentences(seed, TWO_RANKS)
    assert sentence.startswith("rank 1's GPU was busy 60 % of the time (median utilisation)")
    assert "against 100 % on rank 0" in sentence
    assert imbalance_sentences([_rank(0, util=100.0), _rank(1, util=80.0)], TWO_RANKS) == []
    idle = [_rank(0, util=8.0), _rank(1, util=2.0)]  # 0.25x, but 6 points of near idle
    assert imbalance_sentences(idle, TWO_RANKS) == []


def test_ranks_that_did_not_train_to_the_end_are_not_compared() -> None:
    ranks = [_rank(0, util=100.0), _rank(1, util=10.0, status="crashed")]
    assert imbalance_sentences(ranks, TWO_RANKS) == []


# -- the case's figures, derived ------------------------------------------------------------
def _rank_result(step_times: list[float], warmup: int = 1) -> Result:
    measured = step_times[warmup:]
    tokens = TWO_RANKS.tokens_per_step * 2  # as a rank records it: all ranks' tokens
    metrics = Metrics(
        tokens_per_s=Stats.of([tokens / t for t in measured]),
        step_time_s=Stats.of(measured),
        warmup_steps=warmup,
        measured_steps=len(measured),
        tokens_per_step=tokens,
        model_flops_per_token=1e6,
        model_flops_per_s=Stats.of([tokens / t for t in measured]).median * 1e6,
        mfu=0.5,
        peak_rss_bytes=300 * MiB,
    )
    return Result(
        case=TWO_RANKS, profile=PROFILE, status="ok", metrics=metrics, series=Series(step_times)
    )


def test_each_steps_time_is_its_slowest_ranks() -> None:
    rank0 = _rank_result([1.0, 0.010, 0.010, 0.010])
    rank1 = _rank_result([1.0, 0.020, 0.020, 0.009])  # rank 0's clock stopped before rank 1
    derived = derived_throughput(rank0.metrics, [rank0, rank1])
    assert derived.step_time_s is not None and derived.tokens_per_s is not None
    assert derived.step_time_s.median == pytest.approx(0.020)
    assert derived.step_time_s.max == pytest.approx(0.020)
    assert derived.tokens_per_s.min == pytest.approx(2 * TWO_RANKS.tokens_per_step / 0.020)
    assert derived.mfu == pytest.approx(0.25)  # half the tokens/s rank 0 measured alone
    assert derived.model_flops_per_s == pytest.approx(derived.tokens_per_s.median * 1e6)
    # ranks that disagree on their steps: rank 0's figures stay
    short = _rank_result([1.0, 0.010, 0.010])
    assert derived_throughput(rank0.metrics, [rank0, short]) == rank0.metrics


def test_a_rank_without_a_result_gets_a_row_saying_why() -> None:
    rank0 = dataclasses.replace(_rank_result([1.0, 0.01]), status="crashed")
    report = (
        "Root Cause (first observed failure):\n[0]:\n  time      : 2026-12-02_10:00:00\n"
        "  host      : vm\n  rank      : 1 (local_rank: 1)\n  exitcode  : -9 (pid: 42)\n"
    )
    result = with_ranks(rank0, [(0, rank0)], world_size=2, stderr=report)
    assert [r.rank for r in result.ranks] == [0, 1]
    assert result.ranks[1].status == "crashed"
    assert result.ranks[1].error == (
        "the worker was killed by SIGKILL without a result (torchrun's root cause)"
    )
    timed_out = with_ranks(dataclasses.replace(rank0, status="timeout"), [], world_size=2)
    assert [r.status for r in timed_out.ranks] == ["timeout", "timeout"]
