"""The largest batch that fits, and the tokens/s curve up to it (docs/probe.md).

    pytest suites/test_batch_probe.py --gpu-profile rtx5080
    pytest suites/test_batch_probe.py --gpu-profile cpu:256MiB

For each model the probe starts at the largest batch the memory estimate says
fits the profile, runs short probes in fresh workers (a warm-up step and two
measured ones) and narrows a fitting and a failing batch until they are
adjacent; then the case as declared runs at 1, 2, 4, ... and the largest batch.
Every run is a Result in the run's results.jsonl and report (its batch in its
id). On ``cpu`` the profile's memory cap (``cpu:MEM``, enforced with
RLIMIT_DATA) is the capacity the probe runs into; with the default 8 GiB the
CPU case stops at its batch cap instead, and says so.
"""

from __future__ import annotations

from collections.abc import Callable

import gpubench
from gpubench import HardwareProfile
from gpubench.probe import BatchProbe
from gpubench.probe.curve import curve_batches

GPU_MAX_BATCH = 512  # sequences of 1024 tokens: beyond any of these models on an 80 GB card
CPU_MAX_BATCH = 16  # on the default 8 GiB `cpu` the cap ends it: 1 probe + 5 curve runs

GPU_LADDER = gpubench.matrix(
    model=["gpt2-small", "gpt2-medium", "gpt-500m", "gpt2-large", "gpt-1b"],
    precision="bf16",
    seq_len=1024,
    steps=20,
    requires_gpu=True,
)
CPU_SIZED = gpubench.single_case(model="gpt-mini", seq_len=128, steps=6, warmup=2)

Probe = Callable[..., BatchProbe]


@GPU_LADDER
def test_largest_batch_on_the_gpu(gpubench_probe: Probe, gpubench_profile: HardwareProfile):
    _assert_consistent(gpubench_probe(max_batch=GPU_MAX_BATCH))


@CPU_SIZED
def test_largest_batch_under_a_memory_cap(gpubench_probe: Probe, gpubench_profile: HardwareProfile):
    _assert_consistent(gpubench_probe(max_batch=CPU_MAX_BATCH))


def _assert_consistent(probe: BatchProbe) -> None:
    """The largest batch fits, the next one does not (unless the cap ended the search),
    and the curve has a fitting run, with its tokens/s, at every ladder batch up to it.
    "Not even a batch of 1 fits" is an answer too (gpt-1b's states alone are above a
    12 GB card's). Under --gpubench-estimate-only every run is a prediction and there is
    no curve."""
    report = probe.describe()
    if probe.largest_batch is None:
        one = probe.probe_at(1)
        assert one is not None and not one.fits, report
        return
    largest = probe.largest_batch
    searched = probe.probe_at(largest)
    if searched is not None and searched.predicted:
        assert searched.fits and not probe.curve, report
        above = probe.probe_at(largest + 1)
        assert probe.limited_by_cap or (above is not None and not above.fits), report
        return
    full = {r.case.batch_size: r for r in probe.curve}
    assert set(curve_batches(largest)) <= set(full), report
    assert all(full[b].fits and full[b].tokens_per_s for b in full if b <= largest), report
    if not probe.limited_by_cap:  # the next batch failed its probe or its full-length run
        runs_above = [r for r in (probe.probe_at(largest + 1), full.get(largest + 1)) if r]
        assert runs_above and not all(r.fits for r in runs_above), report
