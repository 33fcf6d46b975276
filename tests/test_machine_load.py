"""A busy machine is measured and said: other CPU work outside the case's process tree
(/proc/stat minus the tree), other processes on the case's GPU (NVML, faked here), the
Result's MachineLoad and what it calls busy.

This machine is shared: the tests compare the detector's figure with a ground truth
(the planted hog's own CPU time) or with and without the hog, never with an exact
quietness.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from gpubench.contracts.case import make_case
from gpubench.contracts.conditions import BUSY_OTHER_CORES, MachineLoad, busy_sentence
from gpubench.contracts.profiles import resolve_profile
from gpubench.contracts.result import Result
from gpubench.runner import run_case
from gpubench.worker.trackers import load as load_module
from gpubench.worker.trackers.load import (
    MachineLoadTracker,
    machine_cpu_times,
    process_cpu_ticks,
)

HOG = "while True: pass"
TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@contextmanager
def hogs(count: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` busy-loop processes, killed at the end."""
    started = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(count)]
    try:
        yield started
    finally:
        for hog in started:
            hog.kill()
            hog.wait(timeout=10)


@pytest.fixture
def sleeper() -> Iterator[int]:
    """A process that does nothing: the root of a quiet 'case' tree."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield child.pid
    finally:
        child.kill()
        child.wait(timeout=10)


# -- the figures --------------------------------------------------------------------------------


def test_proc_stat_is_read_over_every_core() -> None:
    times = machine_cpu_times()
    if times is None:
        pytest.skip("no /proc/stat here")
    assert times.cpu_count == len(os.sched_getaffinity(0)) or times.cpu_count >= 1
    assert 0 < times.busy <= times.total


def test_a_hog_outside_the_tree_is_other_work_and_counted_whole(sleeper: int) -> None:
    """The detector's 'other' figure holds at least the planted hog's own CPU time, whatever
    else the shared machine does; the quiet tree it was measured for used almost none."""
    if machine_cpu_times() is None:
        pytest.skip("no /proc/stat here")
    with hogs(1) as (hog,):
        time.sleep(0.3)  # the interpreter started: the hog spins
        tracker = MachineLoadTracker(root=sleeper)
        hog_before = process_cpu_ticks(hog.pid)
        with tracker:
            time.sleep(1.0)
        hog_cores = (process_cpu_ticks(hog.pid) - hog_before) / TICKS_PER_S / 1.0
    load = tracker.load()
    assert load is not None
    assert load.window_s == pytest.approx(1.0, abs=0.3)
    assert load.case_cpu_cores < 0.1
    assert hog_cores > 0.2  # the hog got a share of a core, even on a busy machine
    assert load.other_cpu_cores >= hog_cores - 0.15


def test_the_tree_s_own_work_is_the_case_s_not_other(sleeper: int) -> None:
    """The same hog, started by the process the tracker follows, is the case's own work."""
    with hogs(1) as (hog,):
        time.sleep(0.3)
        tracker = MachineLoadTracker(root=os.getpid())  # the hog is this process's child
        hog_before = process_cpu_ticks(hog.pid)
        with tracker:
            time.sleep(1.0)
        hog_cores = (process_cpu_ticks(hog.pid) - hog_before) / TICKS_PER_S
    load = tracker.load()
    assert load is not None
    assert load.case_cpu_cores >= hog_cores - 0.15


def test_an_unstarted_tracker_measured_nothing() -> None:
    tracker = MachineLoadTracker()
    tracker.stop()
    assert tracker.load() is None and not tracker.started


# -- what counts as busy ------------------------------------------------------------------------


def test_busy_means_other_work_took_cores_the_case_competed_for() -> None:
    hogged = MachineLoad(window_s=1, cpu_count=2, case_cpu_cores=1.0, other_cpu_cores=1.0)
    assert hogged.busy and hogged.cpu_busy
    sentence = busy_sentence(hogged)
    assert sentence is not None and "1.0 of 2 cores busy with other work" in sentence
    quiet = MachineLoad(window_s=1, cpu_count=2, case_cpu_cores=1.95, other_cpu_cores=0.05)
    assert not quiet.busy and busy_sentence(quiet) is None
    # a GPU case using one core of 64 beside a build on ten others: nothing competed
    roomy = MachineLoad(window_s=1, cpu_count=64, case_cpu_cores=1.0, other_cpu_cores=10.0)
    assert not roomy.busy
    assert BUSY_OTHER_CORES == 0.5


def test_other_processes_on_the_gpu_make_it_busy() -> None:
    shared = MachineLoad(
        window_s=1,
        cpu_count=8,
        case_cpu_cores=1,
        other_cpu_cores=0,
        gpu_other_processes=2,
        gpu_other_pids=[11, 12],
        gpu_other_memory_bytes=3 * 2**30,
    )
    assert shared.busy and not shared.cpu_busy
    assert shared.reasons() == ["2 other process(es) on the GPU (pid 11, 12) holding 3.0 GiB"]
    alone = MachineLoad(window_s=1, cpu_count=8, case_cpu_cores=1, other_cpu_cores=0)
    assert alone.gpu_other_processes is None and not alone.busy


def fake_pynvml(listings: list[list[tuple[int, int | None]]]) -> types.ModuleType:
    """NVML whose compute-process list is each of ``listings`` in turn (the last repeats)."""
    module = types.ModuleType("pynvml")
    calls = iter(listings)
    last: list[tuple[int, int | None]] = []

    def running(handle: object) -> list[types.SimpleNamespace]:
        nonlocal last
        last = next(calls, last)
        return [types.SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in last]

    module.nvmlDeviceGetComputeRunningProcesses = running  # type: ignore[attr-defined]
    return module


def test_nvml_other_processes_exclude_the_case_s_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    me = os.getpid()
    listings = [[(me, 5 * 2**30)], [(me, 5 * 2**30), (4242, 2**30)], [(me, 5 * 2**30)]]
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(listings))
    tracker = MachineLoadTracker(root=me, nvml_handle="handle", interval_s=3600)
    with tracker:
        tracker._sample_gpu()  # the sampler's tick, by hand: the other process came and went
    load = tracker.load()
    assert load is not None and load.gpu_busy
    assert load.gpu_other_processes == 1 and load.gpu_other_pids == [4242]
    assert load.gpu_other_memory_bytes == 2**30


def test_nvml_pids_of_another_namespace_count_all_but_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In a container NVML lists the host's pids: the case's own entry cannot be told
    apart, so the others are the entries beyond one, their pids unknown."""
    listing = [(900001, 5 * 2**30), (900002, 2**30)]
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([listing]))
    with MachineLoadTracker(nvml_handle="handle", interval_s=3600) as tracker:
        pass
    load = tracker.load()
    assert load is not None and load.gpu_other_processes == 1 and load.gpu_other_pids == []
    assert load.reasons() == ["1 other process(es) on the GPU"]
    alone = [(900001, 5 * 2**30)]
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([alone]))
    with MachineLoadTracker(nvml_handle="handle", interval_s=3600) as tracker:
        pass
    assert tracker.load() is not None and not tracker.load().gpu_busy  # type: ignore[union-attr]


def test_no_nvml_answer_leaves_the_gpu_unlooked_at(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(load_module, "nvml_compute_processes", lambda handle: None)
    with MachineLoadTracker(nvml_handle="handle", interval_s=3600) as tracker:
        pass
    load = tracker.load()
    assert load is not None and load.gpu_other_processes is None


# -- a real case, with and without a planted hog ------------------------------------------------

TINY = make_case(model="gpt-tiny", batch_size=8, seq_len=64, steps=20, warmup=2)
CPU = resolve_profile("cpu")


def _load(result: Result) -> MachineLoad:
    assert result.status == "ok", result.describe()
    assert result.machine_load is not None, result.describe()
    return result.machine_load


def test_a_case_run_beside_a_cpu_hog_says_the_machine_was_busy() -> None:
    """Measured on the 2-vCPU VM (2026-12-02): gpt-tiny at 47,464 tokens/s with 0.03 cores
    of other work; beside one busy loop 1,424 tokens/s (33x slower), 1.0 core of other
    work, and the Result says so."""
    quiet = _load(run_case(TINY, CPU, timeout_s=300))
    with hogs(os.cpu_count() or 1):
        time.sleep(0.3)
        hogged_result = run_case(TINY, CPU, timeout_s=300)
    hogged = _load(hogged_result)
    assert hogged_result.busy and hogged.cpu_busy
    assert hogged.other_cpu_cores >= BUSY_OTHER_CORES
    assert "machine busy during the measured steps" in hogged_result.describe()
    # the hog raised the figure; the quiet run is quiet unless this shared machine was busy
    assert hogged.other_cpu_cores > quiet.other_cpu_cores or quiet.busy
