"""Trackers: steady-state detection, Stats, step timing, host RSS, device memory, fingerprint."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpubench.contracts.result import Environment, Stats
from gpubench.worker.trackers import (
    DeviceMemoryTracker,
    ProcessTreeRSS,
    SteadyStateDetector,
    StepTimer,
)
from gpubench.worker.trackers import memory as memory_module
from gpubench.worker.trackers.fingerprint import (
    fingerprint,
    git_state,
    launch_command,
    launch_environment,
)

# -- SteadyStateDetector -------------------------------------------------------------------------


def feed(detector: SteadyStateDetector, times: list[float]) -> int | None:
    """Add ``times`` one by one; the 1-based index of the first steady answer, or None."""
    for i, t in enumerate(times, start=1):
        if detector.add(t):
            return i
    return None


def test_detector_settles_after_a_decaying_warmup() -> None:
    # 0.5 s decaying towards a flat 0.1 s (compile, allocator growth, caches warming)
    warmup = [0.1 + 0.4 * 0.5**i for i in range(12)]
    flat = [0.1, 0.101, 0.099, 0.1, 0.102, 0.098, 0.1, 0.1, 0.101, 0.099] * 2
    detector = SteadyStateDetector(window=5, max_cv=0.10, max_drift=0.10)
    first = feed(detector, warmup + flat)
    assert first is not None
    assert detector.steady and detector.steady_at == first
    # not while the decay is still visible: both windows must be flat and agree
    assert first >= 10
    series = warmup + flat
    last, previous = series[first - 5 : first], series[first - 10 : first - 5]
    assert max(last) / min(last) < 1.3
    assert abs(sorted(last)[2] - sorted(previous)[2]) / sorted(previous)[2] <= 0.10


def test_detector_needs_two_full_windows() -> None:
    detector = SteadyStateDetector(window=5)
    assert feed(detector, [0.1] * 9) is None
    assert detector.add(0.1) is True
    assert detector.steady_at == 10


def test_detector_never_settles_on_a_noisy_series() -> None:
    # alternating fast/slow steps: CV ~ 0.25, far above 10 %
    noisy = [0.1 if i % 2 else 0.16 for i in range(200)]
    detector = SteadyStateDetector()
    assert feed(detector, noisy) is None
    assert not detector.steady


def test_detector_rejects_a_level_shift() -> None:
    # each window is flat, but the median moved 30 %: drift, not steady yet
    detector = SteadyStateDetector(window=5)
    assert feed(detector, [0.1] * 5 + [0.13] * 5) is None
    assert detector.add(0.13) is False  # previous window [0.1]*4 + [0.13]: median 0.1
    # the previous window's median moves to 0.13 once most of it is at the new level
    assert feed(detector, [0.13] * 4) == 2


def test_detector_validates_window() -> None:
    with pytest.raises(ValueError, match="window"):
        SteadyStateDetector(window=1)


# -- Stats ---------------------------------------------------------------------------------------


def test_stats_of_a_series() -> None:
    stats = Stats.of([4.0, 1.0, 3.0, 2.0, 5.0])
    assert stats.n == 5
    assert stats.median == 3.0
    assert stats.min == 1.0 and stats.max == 5.0
    assert stats.p10 == pytest.approx(1.4)
    assert stats.p90 == pytest.approx(4.6)
    assert stats.mean == 3.0
    assert stats.cv == pytest.approx(stats.stdev / 3.0)
    assert stats.noisy
    assert not Stats.of([1.0, 1.0, 1.0]).noisy
    with pytest.raises(ValueError):
        Stats.of([])


# -- StepTimer -----------------------------------------------------------------------------------


def test_step_timer_on_cpu_keeps_every_step() -> None:
    timer = StepTimer("cpu")
    assert timer.timing == "perf_counter"
    for _ in range(3):
        with timer:
            time.sleep(0.01)
    with timer.track():
        pass
    assert len(timer.times_s) == 4
    assert all(t >= 0.009 for t in timer.times_s[:3])
    assert timer.last_s == timer.times_s[-1] < 0.01


def test_step_timer_without_a_step() -> None:
    with pytest.raises(RuntimeError):
        _ = StepTimer("cpu").last_s


# -- ProcessTreeRSS ------------------------------------------------------------------------------

CHILD_MIB = 200
CHILD = (
    "import sys, time\n"
    f"block = bytearray({CHILD_MIB} * 2**20)\n"
    "for i in range(0, len(block), 4096): block[i] = 1  # touch every page: resident\n"
    "print('ready', flush=True)\n"
    "time.sleep(30)\n"
)


def test_process_tree_rss_sees_a_childs_memory() -> None:
    alone = ProcessTreeRSS().sample()
    with ProcessTreeRSS(interval_s=0.02) as rss:
        child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
            time.sleep(0.15)  # several sampler ticks while the child holds its block
        finally:
            child.terminate()
            child.wait(timeout=10)
    assert rss.peak_bytes is not None
    assert rss.peak_bytes - alone >= 0.8 * CHILD_MIB * 2**20
    assert rss.samples >= 3


SPIKE = (
    "from gpubench.worker.trackers import ProcessTreeRSS\n"
    "with ProcessTreeRSS(interval_s=3600) as rss:\n"
    "    before = rss.peak_bytes\n"
    "    block = bytearray(300 * 2**20)\n"
    "    for i in range(0, len(block), 4096): block[i] = 1\n"
    "    del block\n"
    "print((rss.peak_bytes - before) // 2**20)\n"
)


def test_a_peak_between_samples_is_not_missed() -> None:
    """High-water marks, not samples: a 300 MiB spike freed before any tick still counts.
    (A fresh interpreter, so no earlier test has already raised the high-water mark.)"""
    out = subprocess.run([sys.executable, "-c", SPIKE], capture_output=True, text=True, check=True)
    assert int(out.stdout) >= 0.8 * 300


ENDED_CHILDREN = (
    "import subprocess, sys\n"
    "from gpubench.worker.trackers import ProcessTreeRSS\n"
    "def child(mib):\n"
    "    code = f'b = bytearray({mib} * 2**20)\\nfor i in range(0, len(b), 4096): b[i] = 1'\n"
    "    subprocess.run([sys.executable, '-c', code], check=True)\n"
    "child(300)  # before the case: the set-up's (DeepSpeed's op build), not the case's\n"
    "with ProcessTreeRSS(interval_s=3600) as quiet:\n"
    "    pass\n"
    "with ProcessTreeRSS(interval_s=3600) as busy:\n"
    "    child(600)  # during the case, and ended before the last sample\n"
    "print(quiet.peak_bytes // 2**20, busy.peak_bytes // 2**20)\n"
)


def test_children_that_ended_before_the_case_do_not_count_those_during_it_do() -> None:
    out = subprocess.run(
        [sys.executable, "-c", ENDED_CHILDREN], capture_output=True, text=True, check=True
    )
    quiet_mib, busy_mib = map(int, out.stdout.split())
    assert quiet_mib < 250  # the interpreter alone, not the 300 MiB child before it
    assert busy_mib >= 0.8 * 600


SMALL_COMMAND_OF_A_BIG_PROCESS = (
    "import subprocess\n"
    "from gpubench.worker.trackers import ProcessTreeRSS\n"
    "with ProcessTreeRSS(interval_s=3600) as rss:\n"
    "    block = bytearray(400 * 2**20)\n"
    "    for i in range(0, len(block), 4096): block[i] = 1\n"
    "    subprocess.run(['true'], check=True)  # as py-cpuinfo runs lscpu\n"
    "print(rss.peak_bytes // 2**20)\n"
)


def test_a_short_command_does_not_count_its_parents_memory_twice() -> None:
    """The kernel's ru_maxrss of a child started by fork/vfork + exec includes the parent's
    pages before the exec: a 400 MiB worker running `true` once measured 800 MiB (the
    smoke suite's ZeRO-offload case read 1.04 GiB instead of 0.68: docs/baselines.md)."""
    out = subprocess.run(
        [sys.executable, "-c", SMALL_COMMAND_OF_A_BIG_PROCESS],
        capture_output=True,
        text=True,
        check=True,
    )
    assert 400 <= int(out.stdout) < 1.5 * 400


@pytest.fixture
def shell_tree() -> Iterator[list[int]]:
    """Two shells, each with two sleeping children: the pids of all six."""
    import psutil

    shells = [subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30"]) for _ in range(2)]
    try:
        deadline = time.monotonic() + 10
        tree: list[psutil.Process] = []
        while time.monotonic() < deadline:
            tree = [psutil.Process(shell.pid) for shell in shells]
            tree += [child for shell in tree[:2] for child in shell.children()]
            if len(tree) == 6:
                break
            time.sleep(0.02)  # each shell forks its two sleeps
        assert len(tree) == 6
        yield [process.pid for process in tree]
    finally:
        for shell in shells:
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(shell.pid).children(recursive=True):
                    child.kill()
            shell.kill()
            shell.wait(timeout=10)


def test_descendant_pids_finds_grandchildren_as_psutil_does(shell_tree: list[int]) -> None:
    """The kernel's per-thread children lists give the same tree as psutil's full scan."""
    import psutil

    from gpubench.worker.trackers.host import descendant_pids

    found = descendant_pids(os.getpid())
    if found is None:
        pytest.skip("this kernel has no /proc/<pid>/task/<tid>/children")
    # other children of this test process may live beside the tree (a multiprocessing
    # forkserver an earlier test started under the same xdist worker): the tree is in it
    assert set(shell_tree) <= set(found)
    assert sorted(found) == sorted(p.pid for p in psutil.Process().children(recursive=True))


def test_descendant_pids_of_a_process_that_is_gone() -> None:
    from gpubench.worker.trackers.host import descendant_pids

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    assert descendant_pids(child.pid) == []


@pytest.mark.parametrize("children_lists", [True, False], ids=["proc-children", "psutil"])
def test_tree_peak_is_the_sum_of_every_members_peak(
    shell_tree: list[int], children_lists: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psutil

    from gpubench.worker.trackers import host

    if not children_lists:  # a kernel without the lists: psutil's scan instead
        monkeypatch.setattr(host, "descendant_pids", lambda pid: None)
    shell = psutil.Process(shell_tree[0])
    members = [shell.pid, *(child.pid for child in shell.children())]
    expected = sum(host.peak_rss_bytes(pid) or 0 for pid in members)
    assert len(members) == 3
    assert host.tree_peak_rss_bytes(shell) == expected


def test_process_tree_rss_stops_its_thread() -> None:
    rss = ProcessTreeRSS(interval_s=0.01)
    with rss.track():
        assert rss._sampler.running
    assert not rss._sampler.running
    assert rss.peak_bytes is not None and rss.peak_bytes > 0


# -- DeviceMemoryTracker -------------------------------------------------------------------------


def test_device_memory_on_cpu_is_all_none() -> None:
    with DeviceMemoryTracker("cpu") as tracker:
        assert tracker.current_allocated_bytes() is None
    assert tracker.peak_allocated_bytes is None
    assert tracker.peak_reserved_bytes is None
    assert tracker.nvml_peak_used_bytes is None


def fake_pynvml(processes: list[tuple[int, int | None]]) -> types.ModuleType:
    module = types.ModuleType("pynvml")
    entries = [types.SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in processes]
    module.nvmlDeviceGetComputeRunningProcesses = lambda handle: entries  # type: ignore[attr-defined]
    return module


def test_nvml_process_memory_is_filtered_by_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([(1, 10), (42, 300), (7, None)]))
    assert memory_module.nvml_process_used_bytes("handle", 42) == 300
    assert memory_module.nvml_process_used_bytes("handle", 99) is None  # not listed
    assert memory_module.nvml_process_used_bytes("handle", 7) is None  # no figure
    assert memory_module.nvml_process_used_bytes(None, 42) is None  # no NVML


# -- environment ---------------------------------------------------------------------------------


def test_fingerprint_on_cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import torch

    import gpubench

    monkeypatch.chdir(tmp_path)  # not a git work tree
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    env = fingerprint(cpu_only=True)
    assert isinstance(env, Environment)
    assert env.hostname and env.platform and env.python
    assert env.torch == torch.__version__
    assert env.cuda == torch.version.cuda
    assert env.gpubench == gpubench.__version__
    assert env.cpu and env.device == env.cpu
    assert env.cpu_count >= 1 and env.device_count == 1
    assert env.host_memory_bytes > 2**28
    assert env.device_memory_bytes == env.host_memory_bytes
    assert env.torch_threads == torch.get_num_threads()
    assert env.allocator_conf == "expandable_segments:True"
    assert env.git_commit is None and env.git_dirty is None
    assert not torch.cuda.is_initialized()
    assert ("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True") in env.launch_env
    assert env.launch_command == ()  # not one of torchrun's ranks


def test_the_launch_environment_keeps_tuning_and_devices_never_secrets_or_per_launch_ports() -> (
    None
):
    environ = {
        "NCCL_ALGO": "Ring",
        "NCCL_IB_DISABLE": "1",
        "CUDA_VISIBLE_DEVICES": "2,3",
        "OMP_NUM_THREADS": "4",
        "TORCH_NCCL_ASYNC_ERROR_HANDLING": "3",
        "TORCH_HUB_TOKEN": "hunter2",  # a TORCH_ name, but a secret
        "NCCL_SOME_KEY": "k",
        "MASTER_PORT": "29517",  # torchrun's, new each launch: its command line says it
        "TORCHELASTIC_RUN_ID": "3f2a",
        "HOME": "/root",
    }
    assert launch_environment(environ) == {
        "CUDA_VISIBLE_DEVICES": "2,3",
        "NCCL_ALGO": "Ring",
        "NCCL_IB_DISABLE": "1",
        "OMP_NUM_THREADS": "4",
        "TORCH_NCCL_ASYNC_ERROR_HANDLING": "3",
    }


def test_a_rank_records_torchruns_command_line_as_its_launch_command() -> None:
    import psutil

    parent = psutil.Process(os.getppid()).cmdline()
    assert launch_command({"TORCHELASTIC_RUN_ID": "x"}) == parent  # torchrun is the parent
    assert launch_command({}) == []


def test_git_state_of_a_repository(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    try:
        git("init", "-q")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git is not available")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "x")
    (tmp_path / "tracked.txt").write_text("a")
    (tmp_path / "untracked.txt").write_text("a")
    commit, dirty = git_state(tmp_path)
    assert commit is not None and re.fullmatch(r"[0-9a-f]{40}", commit)
    assert dirty is False  # untracked files do not count
    git("add", "tracked.txt")
    assert git_state(tmp_path) == (commit, True)
