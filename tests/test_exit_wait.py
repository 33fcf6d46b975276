"""ExitWaiter: the runner's wait for a worker, asleep between polls."""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import sys
import time

import pytest

from gpubench.runner.exit_wait import ExitWaiter


def sleeper(seconds: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])


def test_an_exit_ends_the_wait_at_once() -> None:
    proc = sleeper(0.3)
    with contextlib.closing(ExitWaiter(proc)) as waiter:
        started = time.monotonic()
        assert waiter.wait(30.0)
        assert time.monotonic() - started < 10.0  # the exit, not the 30 s timeout
    assert proc.returncode == 0  # reaped by Popen


WAITER = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)  # Linux: this thread only


def test_a_running_process_times_out_asleep() -> None:
    """Popen.wait(timeout) wakes about 70 times a second (1, 2, 4 ... 50 ms sleeps); a
    pidfd wait wakes once, so the waiting process leaves the cores to the case."""
    proc = sleeper(30)
    try:
        with contextlib.closing(ExitWaiter(proc)) as waiter:
            if not waiter.uses_pidfd:
                pytest.skip("no pidfd_open on this kernel/python")
            # this thread's own wake-ups: the process may hold other threads that poll (a
            # gloo process group's, left by an in-process FSDP test on the same xdist worker,
            # wake 100 times a second and outlive destroy_process_group)
            before = resource.getrusage(WAITER).ru_nvcsw
            assert not waiter.wait(1.0)
            switches = resource.getrusage(WAITER).ru_nvcsw - before
        assert switches <= 5, f"{switches} wake-ups in a 1 s wait"
        assert proc.returncode is None
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_without_pidfd_it_falls_back_to_popen_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "pidfd_open", raising=False)
    proc = sleeper(30)
    try:
        with contextlib.closing(ExitWaiter(proc)) as waiter:
            assert not waiter.uses_pidfd
            assert not waiter.wait(0.2)
            proc.kill()
            assert waiter.wait(30.0)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert proc.returncode == -9


def test_a_process_already_reaped_needs_no_pidfd() -> None:
    proc = sleeper(0)
    proc.wait(timeout=30)
    with contextlib.closing(ExitWaiter(proc)) as waiter:
        assert waiter.wait(5.0)


def test_close_is_safe_twice() -> None:
    proc = sleeper(0)
    waiter = ExitWaiter(proc)
    waiter.close()
    waiter.close()
    proc.wait(timeout=30)


def test_a_pidfd_numbered_past_select_s_limit_still_waits() -> None:
    """A long pytest session may hold over 1,023 descriptors; select() refuses those."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below 1200")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    proc = sleeper(0.2)
    try:
        with contextlib.closing(ExitWaiter(proc)) as waiter:
            if not waiter.uses_pidfd:
                pytest.skip("no pidfd_open on this kernel/python")
            assert waiter._pidfd is not None and waiter._pidfd > 1023
            assert waiter.wait(30.0)
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        proc.kill()
        proc.wait(timeout=10)
