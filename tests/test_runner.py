"""The parent side of case isolation: launchers, run_case and classification.

Process tests drive ``tests/fake_worker.py`` (no torch) through a test
launcher; classification is tested as the pure function it is.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from gpubench.contracts.case import Case
from gpubench.contracts.profiles import HardwareProfile
from gpubench.contracts.protocol import ProgressEvent, WorkerPaths
from gpubench.contracts.result import Environment, ErrorInfo, Result, Series
from gpubench.runner import (
    Launcher,
    ProcessLauncher,
    TorchrunLauncher,
    launcher_for,
    run_case,
)
from gpubench.runner.classify import (
    STDERR_TAIL_CHARS,
    STDERR_TAIL_LINES,
    classify,
    merge_rank_results,
    oom_line,
    parent_environment,
    signal_name,
    stderr_tail,
    torchrun_root_cause,
)
from gpubench.runner.launchers import worker_args

FAKE_WORKER = Path(__file__).with_name("fake_worker.py")
STDERR_LINE = "fake worker: about to end badly"
CASE = Case(model="gpt-tiny", steps=5)
PROFILE = HardwareProfile(
    name="cpu",
    kind="cpu",
    memory_bytes=2**30,
    bf16_flops=None,
    fp32_flops=None,
    memory_bandwidth=None,
)


@dataclass
class FakeLauncher:
    """Runs tests/fake_worker.py in ``mode``; remembers each case's directory."""

    mode: str
    extra_env: dict[str, str] = field(default_factory=dict)
    roots: list[Path] = field(default_factory=list)

    def argv(self, paths: WorkerPaths) -> list[str]:
        self.roots.append(paths.root)
        return [sys.executable, str(FAKE_WORKER), self.mode, *worker_args(paths)]

    def env(self) -> dict[str, str]:
        return dict(self.extra_env)


@pytest.fixture
def pidfile(tmp_path: Path) -> Path:
    return tmp_path / "pids.txt"


def fake(mode: str, pidfile: Path, **extra_env: str) -> FakeLauncher:
    return FakeLauncher(mode, {"FAKE_WORKER_PIDFILE": str(pidfile), **extra_env})


def recorded_pids(pidfile: Path) -> dict[str, int]:
    lines = pidfile.read_text(encoding="utf-8").split()
    return {role: int(pid) for role, pid in zip(lines[::2], lines[1::2], strict=True)}


def is_dead(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def assert_all_dead(pids: dict[str, int]) -> None:
    alive = {role: pid for role, pid in pids.items() if not is_dead(pid)}
    assert not alive, f"still running after the case: {alive}"
    # and reaped: no zombie of the case stays this process's child (adopted orphans are)
    zombies = [c.pid for c in psutil.Process().children() if c.pid in pids.values()]
    assert not zombies, f"left as zombie children of the parent: {zombies}"


# -- launchers ------------------------------------------------------------------------------


def test_process_launcher_runs_the_worker_module(tmp_path: Path) -> None:
    paths = WorkerPaths(tmp_path)
    launcher = ProcessLauncher()
    assert isinstance(launcher, Launcher)
    assert launcher.argv(paths) == [
        sys.executable,
        "-m",
        "gpubench.worker",
        "--job",
        str(tmp_path / "job.json"),
        "--result",
        str(tmp_path / "result.json"),
        "--progress",
        str(tmp_path / "progress.jsonl"),
    ]
    env = launcher.env()  # the import path, and a world of one whatever pytest's rank
    assert {k: env[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")} == {
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
    }
    assert env["GPUBENCH_PARENT_PID"] == str(os.getpid())  # the parent it is tethered to
    assert set(env) <= {"PYTHONPATH", "RANK", "WORLD_SIZE", "LOCAL_RANK", "GPUBENCH_PARENT_PID"}


def test_workers_get_the_import_path_pytest_added_but_not_the_interpreters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sysconfig

    from gpubench.runner.launchers import import_path_env

    monkeypatch.setattr(sys, "path", [str(tmp_path), "", sysconfig.get_paths()["stdlib"]])
    monkeypatch.setenv("PYTHONPATH", "/from/the/user")
    assert import_path_env() == {"PYTHONPATH": os.pathsep.join([str(tmp_path), "/from/the/user"])}
    monkeypatch.delenv("PYTHONPATH")
    monkeypatch.setattr(sys, "path", [sysconfig.get_paths()["purelib"]])
    assert import_path_env() == {}


def test_torchrun_launcher_runs_nproc_workers(tmp_path: Path) -> None:
    paths = WorkerPaths(tmp_path)
    launcher = TorchrunLauncher(4)
    assert isinstance(launcher, Launcher)
    assert launcher.argv(paths) == [
        sys.executable,
        "-m",
        "gpubench.worker.tether",  # torchrun dies with its parent (gpubench.worker.tether)
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "4",
        "-m",
        "gpubench.worker",
        *worker_args(paths),
    ]
    with pytest.raises(ValueError, match="nproc"):
        TorchrunLauncher(0)


def test_launcher_for_picks_by_nproc() -> None:
    assert launcher_for(CASE) == ProcessLauncher()
    assert launcher_for(CASE.replace(nproc=2)) == TorchrunLauncher(2)


# -- run_case: answered cases ---------------------------------------------------------------


def test_each_case_runs_in_its_own_fresh_process(pidfile: Path) -> None:
    first = run_case(CASE, PROFILE, timeout_s=30, launcher=fake("ok", pidfile))
    second = run_case(CASE, PROFILE, timeout_s=30, launcher=fake("ok", pidfile))
    assert first.status == second.status == "ok", (first.describe(), second.describe())
    assert first.worker_pid not in (None, os.getpid())
    assert second.worker_pid not in (None, os.getpid(), first.worker_pid)
    assert first.tokens_per_s == 1050.0
    assert first.environment.hostname == "fake-worker"  # the worker's Result, not rebuilt


def test_result_carries_parent_details(pidfile: Path) -> None:
    result = run_case(
        CASE,
        PROFILE,
        timeout_s=30,
        nodeid="t.py::test[x]",
        run_id="run-1",
        launcher=fake("ok", pidfile),
    )
    assert result.nodeid == "t.py::test[x]"
    assert result.run_id == "run-1"
    assert result.duration_s is not None and 0 < result.duration_s < 30
    assert result.started_at.endswith("+00:00")
    assert result.case == CASE
    assert result.profile == PROFILE


def test_progress_events_reach_the_callback_in_order(pidfile: Path) -> None:
    events: list[ProgressEvent] = []
    result = run_case(
        CASE,
        PROFILE,
        timeout_s=30,
        launcher=fake("ok", pidfile),
        on_progress=events.append,
        poll_interval_s=0.01,
    )
    assert result.status == "ok"
    phases = [e.phase for e in events]
    assert phases == ["starting", "building"] + ["warmup"] * 3 + ["measuring"] * 5 + ["done"]
    assert [e.step for e in events if e.phase == "measuring"] == [1, 2, 3, 4, 5]
    assert [e.t for e in events] == sorted(e.t for e in events)


def test_a_failing_progress_callback_does_not_break_the_case(
    pidfile: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[ProgressEvent] = []

    def explode(event: ProgressEvent) -> None:
        calls.append(event)
        raise RuntimeError("terminal went away")

    with caplog.at_level(logging.WARNING, logger="gpubench.runner.contained"):
        result = run_case(
            CASE, PROFILE, timeout_s=30, launcher=fake("ok", pidfile), on_progress=explode
        )
    assert result.status == "ok"
    assert len(calls) == 11  # every event was still offered
    assert "on_progress callback failed" in caplog.text


def test_workdir_is_removed_by_default(pidfile: Path) -> None:
    launcher = fake("ok", pidfile)
    run_case(CASE, PROFILE, timeout_s=30, launcher=launcher)
    (root,) = launcher.roots
    assert root.name.startswith("gpubench-")
    assert not root.exists()


def test_keep_workdir_leaves_the_protocol_files(
    tmp_path: Path, pidfile: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONUNBUFFERED", "0")
    monkeypatch.setenv("FAKE_SHARED_VAR", "parent")
    launcher = fake("ok", pidfile, FAKE_LAUNCHER_VAR="launcher", FAKE_SHARED_VAR="launcher")
    workdir = tmp_path / "case"
    run_case(
        CASE,
        PROFILE,
        timeout_s=30,
        nodeid="n",
        run_id="r",
        launcher=launcher,
        workdir=workdir,
        keep_workdir=True,
        env={"FAKE_CALLER_VAR": "caller", "FAKE_SHARED_VAR": "caller"},
    )
    assert launcher.roots == [workdir]
    job = json.loads((workdir / "job.json").read_text())
    assert job == {
        "case": CASE.to_dict(),
        "profile": PROFILE.to_dict(),
        "nodeid": "n",
        "run_id": "r",
    }
    assert Result.from_json((workdir / "result.json").read_text()).status == "ok"
    assert (workdir / "stdout.log").exists() and (workdir / "stderr.log").exists()
    assert json.loads((workdir / "seen_env.json").read_text()) == {
        "PYTHONUNBUFFERED": "1",
        "FAKE_LAUNCHER_VAR": "launcher",
        "FAKE_SHARED_VAR": "caller",
        "FAKE_CALLER_VAR": "caller",
    }


def test_given_workdir_is_removed_unless_kept(tmp_path: Path, pidfile: Path) -> None:
    workdir = tmp_path / "case"
    assert (
        run_case(CASE, PROFILE, timeout_s=30, launcher=fake("ok", pidfile), workdir=workdir).status
        == "ok"
    )
    assert not workdir.exists()


def test_a_non_empty_workdir_is_refused(tmp_path: Path, pidfile: Path) -> None:
    (tmp_path / "result.json").write_text("{}")
    with pytest.raises(ValueError, match="not empty"):
        run_case(CASE, PROFILE, timeout_s=30, launcher=fake("ok", pidfile), workdir=tmp_path)


def test_bad_timeout_is_refused(pidfile: Path) -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        run_case(CASE, PROFILE, timeout_s=0, launcher=fake("ok", pidfile))


# -- run_case: timeouts and stray processes -------------------------------------------------


def test_timeout_kills_the_whole_tree_even_when_sigterm_is_ignored(pidfile: Path) -> None:
    events: list[ProgressEvent] = []
    launcher = fake("hang", pidfile)
    parent_environment()  # cached after the first call (imports torch): keep it out of the clock
    start = time.monotonic()
    result = run_case(CASE, PROFILE, timeout_s=1.0, launcher=launcher, on_progress=events.append)
    elapsed = time.monotonic() - start
    assert result.status == "timeout"
    assert result.error is not None and result.error.type == "Timeout"
    assert "1 s" in result.error.message and "process group" in result.error.message
    assert result.error.signal == "SIGKILL"  # SIGTERM was ignored
    # timeout + the 3 s grace; the upper bound only proves it returns (CI machines are busy)
    assert 3.9 < elapsed < 15
    assert result.duration_s is not None and 3.9 < result.duration_s <= elapsed
    assert [e.phase for e in events] == ["starting"]
    assert_all_dead(recorded_pids(pidfile))
    assert set(recorded_pids(pidfile)) == {"worker", "child"}
    assert not launcher.roots[0].exists()


def test_timeout_of_a_worker_that_obeys_sigterm_needs_no_grace(pidfile: Path) -> None:
    parent_environment()
    start = time.monotonic()
    result = run_case(CASE, PROFILE, timeout_s=1.0, launcher=fake("hang-polite", pidfile))
    assert time.monotonic() - start < 3.9  # below timeout + grace: the grace was not waited
    assert result.status == "timeout"
    assert result.error is not None and result.error.signal == "SIGTERM"
    assert result.environment.python  # the parent's fingerprint
    assert_all_dead(recorded_pids(pidfile))


def test_timeout_kills_a_child_that_left_the_process_group(pidfile: Path) -> None:
    result = run_case(CASE, PROFILE, timeout_s=1.0, launcher=fake("setsid-child", pidfile))
    assert result.status == "timeout"
    pids = recorded_pids(pidfile)
    assert set(pids) == {"worker", "escapee"}
    assert_all_dead(pids)


def test_a_child_leaked_by_a_finished_worker_is_killed(pidfile: Path) -> None:
    start = time.monotonic()
    result = run_case(CASE, PROFILE, timeout_s=30, launcher=fake("leak", pidfile))
    assert result.status == "ok"
    assert time.monotonic() - start < 5
    assert_all_dead(recorded_pids(pidfile))


def test_a_setsid_child_leaked_by_a_finished_worker_is_killed(pidfile: Path) -> None:
    result = run_case(CASE, PROFILE, timeout_s=30, launcher=fake("leak-setsid", pidfile))
    assert result.status == "ok"
    assert_all_dead(recorded_pids(pidfile))


def test_a_setsid_child_of_a_worker_that_exits_at_once_is_killed(pidfile: Path) -> None:
    # the worker is gone before the first scan of its tree: only adoption finds the child
    result = run_case(CASE, PROFILE, timeout_s=30, launcher=fake("quick-setsid", pidfile))
    assert result.status == "ok"
    pids = recorded_pids(pidfile)
    assert set(pids) == {"worker", "escapee"}
    assert_all_dead(pids)


def test_a_double_forked_daemon_is_killed(pidfile: Path) -> None:
    result = run_case(CASE, PROFILE, timeout_s=30, launcher=fake("double-fork", pidfile))
    assert result.status == "ok"
    pids = recorded_pids(pidfile)
    assert set(pids) == {"worker", "daemon"}
    assert_all_dead(pids)


def test_a_double_forked_daemon_is_killed_on_timeout(pidfile: Path) -> None:
    result = run_case(CASE, PROFILE, timeout_s=1.0, launcher=fake("double-fork", pidfile))
    assert result.status == "timeout"
    assert_all_dead(recorded_pids(pidfile))


def test_the_subreaper_mark_is_put_back_after_the_case(pidfile: Path) -> None:
    from gpubench.runner.subreaper import is_subreaper

    before = is_subreaper()
    run_case(CASE, PROFILE, timeout_s=30, launcher=fake("ok", pidfile))
    assert is_subreaper() == before


def test_a_chatty_worker_keeps_a_bounded_log_with_its_head_and_its_tail(
    pidfile: Path, tmp_path: Path
) -> None:
    from gpubench.runner.output_log import HEAD_BYTES, TAIL_BYTES

    workdir = tmp_path / "case"
    result = run_case(
        CASE,
        PROFILE,
        timeout_s=60,
        launcher=fake("chatty", pidfile),
        workdir=workdir,
        keep_workdir=True,
    )
    assert result.status == "ok"
    log = (workdir / "stdout.log").read_bytes()
    assert len(log) <= HEAD_BYTES + TAIL_BYTES + 200  # printed: 40 MiB
    assert log.startswith(b"00000000 xxx")
    assert log.rstrip().endswith(b"chatty: the last line")
    assert b"bytes of output left out here" in log
    assert (workdir / "stderr.log").read_text().strip() == STDERR_LINE  # untouched: small


def test_a_worker_that_answers_but_never_exits_is_ended_and_its_answer_stands(
    pidfile: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gpubench.runner.contained

    monkeypatch.setattr(gpubench.runner.contained, "EXIT_GRACE_S", 1.0)
    start = time.monotonic()
    result = run_case(CASE, PROFILE, timeout_s=60, launcher=fake("answer-hang", pidfile))
    assert time.monotonic() - start < 15  # not the 60 s limit
    assert result.status == "ok"
    assert result.metrics.measured_steps == 3
    assert_all_dead(recorded_pids(pidfile))


# -- run_case: workers that die without answering -------------------------------------------


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGSEGV"])
def test_death_by_signal_is_a_crash_naming_the_signal(pidfile: Path, sig: str) -> None:
    result = run_case(CASE, PROFILE, timeout_s=30, launcher=fake(f"signal-{sig[3:]}", pidfile))
    assert result.status == "crashed"
    assert result.error is not None
    assert result.error.type == "Signal"
    assert result.error.signal == sig
    assert sig in result.error.message
    assert STDERR_LINE in result.error.stderr_tail
    assert result.worker_pid == recorded_pids(pidfile)["worker"]
    assert ("OOM killer" in result.error.message) == (sig == "SIGKILL")


def test_exit_code_is_a_crash(pidfile: Path) -> None:
    result = run_case(CASE, PROFILE, timeout_s=30, launcher=fake("exit3", pidfile))
    assert result.status == "crashed"
    assert result.error is not None
    assert (result.error.type, result.error.exit_code) == ("ExitCode", 3)
    assert STDERR_LINE in result.error.stderr_tail


def test_out_of_memory_on_stderr_is_oom(pidfile: Path) -> None:
    result = run_case(CASE, PROFILE, timeout_s=30, launcher=fake("oom-stderr", pidfile))
    assert result.status == "oom"
    assert result.error is not None and "CUDA out of memory" in result.error.message


def test_garbage_result_is_a_crash(pidfile: Path) -> None:
    result = run_case(CASE, PROFILE, timeout_s=30, launcher=fake("garbage-result", pidfile))
    assert result.status == "crashed"
    assert result.error is not None
    assert (result.error.type, result.error.exit_code) == ("NoResult", 0)


def test_a_crashed_result_from_the_worker_gets_the_stderr_tail(pidfile: Path) -> None:
    result = run_case(CASE, PROFILE, timeout_s=30, launcher=fake("crashed-result", pidfile))
    assert result.status == "crashed"
    assert result.error is not None
    assert (result.error.type, result.error.message) == ("RuntimeError", "boom")
    assert "RuntimeError: boom" in result.error.stderr_tail
    assert result.error.exit_code == 1


def test_a_worker_that_cannot_start_is_a_crash(tmp_path: Path) -> None:
    class Missing:
        def argv(self, paths: WorkerPaths) -> list[str]:
            return [str(tmp_path / "no-such-worker")]

        def env(self) -> dict[str, str]:
            return {}

    result = run_case(CASE, PROFILE, timeout_s=30, launcher=Missing())
    assert result.status == "crashed"
    assert result.error is not None and result.error.type == "LaunchError"
    assert "no-such-worker" in result.error.message
    assert result.worker_pid is None


# -- classify (pure) ------------------------------------------------------------------------

PARENT_ENV = Environment(hostname="parent")


def parent_env() -> Environment:
    return PARENT_ENV


def classify_(**kwargs: object) -> Result:
    args: dict[str, object] = {
        "returncode": 1,
        "timed_out": False,
        "result_data": None,
        "stderr": "",
        "timeout_s": 60.0,
        "environment": parent_env,
    }
    args.update(kwargs)
    return classify(CASE, PROFILE, **args)  # type: ignore[arg-type]


def worker_result(status: str = "ok", error: ErrorInfo | None = None) -> dict[str, object]:
    return Result(
        case=CASE,
        profile=PROFILE,
        status=status,
        error=error,
        environment=Environment(hostname="worker"),
    ).to_dict()


def test_a_valid_result_wins_over_exit_code_and_timeout() -> None:
    result = classify_(returncode=-9, timed_out=True, result_data=worker_result("oom"))
    assert result.status == "oom"
    assert result.environment.hostname == "worker"


def test_a_crashed_result_gets_the_tail_only_if_it_has_none() -> None:
    bare = classify_(
        result_data=worker_result("crashed", ErrorInfo("ValueError", "x")), stderr="line1\nline2\n"
    )
    assert bare.error is not None and bare.error.stderr_tail == "line1\nline2"
    assert bare.error.exit_code == 1
    own = classify_(
        result_data=worker_result("crashed", ErrorInfo("ValueError", "x", stderr_tail="own")),
        stderr="parent's",
    )
    assert own.error is not None and own.error.stderr_tail == "own"


def test_an_invalid_result_counts_as_none() -> None:
    data = worker_result()
    data["schema_version"] = 999
    result = classify_(returncode=0, result_data=data)
    assert result.status == "crashed"
    assert result.error is not None and result.error.type == "NoResult"
    assert "schema_version" in result.error.message
    assert result.environment.hostname == "parent"


# -- several ranks: the rank that caused the failure speaks for the case -----------------------


def rank_result(status: str, message: str = "", steps: int = 0, **metrics: int) -> Result:
    result = Result.from_dict(worker_result(status, ErrorInfo("E", message) if message else None))
    return dataclasses.replace(
        result,
        series=Series(step_time_s=[0.1] * steps),
        metrics=dataclasses.replace(result.metrics, **metrics),
    )


def test_a_rank_that_ran_out_of_memory_explains_rank_zeros_lost_peer() -> None:
    rank0 = rank_result("crashed", "Connection closed by peer", steps=2)
    assert rank0.error is not None
    rank0 = dataclasses.replace(
        rank0, error=dataclasses.replace(rank0.error, stderr_tail="torchrun tail")
    )
    # the OOM rank's file can be the later one: it closed its group before writing
    merged = merge_rank_results(
        rank0, [(1.0, 0, rank0), (2.0, 1, rank_result("oom", "can't allocate memory"))]
    )
    assert merged.status == "oom"
    assert merged.error is not None
    assert merged.error.message == "rank 1: can't allocate memory"
    assert merged.error.stderr_tail == "torchrun tail"
    assert merged.series.step_time_s == [0.1, 0.1]  # rank 0's steps stay


def test_a_rank_zero_that_never_answered_takes_the_failed_ranks_record() -> None:
    timeout = classify_(returncode=-9, timed_out=True)  # built by the parent
    merged = merge_rank_results(timeout, [(5.0, 3, rank_result("diverged", "nan", steps=4))])
    assert merged.status == "diverged"
    assert merged.error is not None and merged.error.message == "rank 3: nan"
    assert len(merged.series.step_time_s) == 4


def test_rank_results_leave_a_finished_or_self_failed_rank_zero_alone() -> None:
    ok = rank_result("ok", steps=3)
    assert merge_rank_results(ok, [(1.0, 1, rank_result("oom", "x"))]) is ok
    own_oom = rank_result("oom", "rank 0's own", steps=1)
    peers = [(1.0, 0, own_oom), (0.5, 1, rank_result("crashed", "lost peer"))]
    assert merge_rank_results(own_oom, peers).error.message == "rank 0's own"  # type: ignore[union-attr]
    crashed = rank_result("crashed", "first", steps=1)
    later = [(1.0, 0, crashed), (2.0, 1, rank_result("crashed", "second"))]
    assert merge_rank_results(crashed, later).error.message == "first"  # type: ignore[union-attr]


def test_memory_of_a_finished_multi_rank_case_is_its_largest_ranks() -> None:
    rank0 = rank_result("ok", steps=3, peak_allocated_bytes=5 * 2**30, peak_rss_bytes=3 * 2**30)
    rank1 = rank_result(
        "over_capacity", steps=3, peak_allocated_bytes=9 * 2**30, peak_rss_bytes=2 * 2**30
    )
    merged = merge_rank_results(rank0, [(1.0, 0, rank0), (1.5, 1, rank1)])
    assert merged.status == "over_capacity"  # rank 1's device did not fit
    assert merged.metrics.peak_allocated_bytes == 9 * 2**30
    assert merged.metrics.peak_rss_bytes == 3 * 2**30
    assert merged.series.step_time_s == [0.1] * 3  # rank 0's record otherwise
    assert rank0.status == "ok" and rank0.metrics.peak_allocated_bytes == 5 * 2**30  # a copy
    alone = rank_result("ok", steps=3)
    assert merge_rank_results(alone, [(1.0, 0, alone)]) is alone


TORCHRUN_REPORT = """torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
=======================================================
gpubench.worker FAILED
-------------------------------------------------------
Failures:
[1]:
  time      : 2026-11-23_16:56:26
  host      : localhost
  rank      : 0 (local_rank: 0)
  exitcode  : -15 (pid: 13150)  (SIGTERM)
  error_file: <N/A>
  traceback : Signal 15 (SIGTERM) received by PID 13150
-------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-11-23_16:56:26
  host      : localhost
  rank      : 1 (local_rank: 1)
  exitcode  : -11 (pid: 13151)  (SIGSEGV)
  error_file: <N/A>
  traceback : Signal 11 (SIGSEGV) received by PID 13151
=======================================================
"""


def test_torchruns_root_cause_names_a_rank_that_died_without_a_result() -> None:
    assert torchrun_root_cause(TORCHRUN_REPORT) == (1, -11)
    assert torchrun_root_cause("Traceback ...\nRuntimeError: boom\n") is None
    rank0 = rank_result("crashed", "Connection closed by peer", steps=2)
    merged = merge_rank_results(rank0, [(1.0, 0, rank0)], TORCHRUN_REPORT)
    assert merged.status == "crashed"
    assert merged.error is not None and merged.error.signal == "SIGSEGV"
    assert merged.error.type == "Signal" and merged.error.exit_code == -11
    assert merged.error.message.startswith("rank 1: the worker was killed by SIGSEGV")
    assert merged.error.message.endswith("rank 0 then saw: Connection closed by peer")
    # a rank that answered speaks for itself; rank 0 as the root cause is rank 0's own crash
    answered = [(1.0, 0, rank0), (2.0, 1, rank_result("crashed", "own words"))]
    assert merge_rank_results(rank0, answered, TORCHRUN_REPORT).error.signal is None  # type: ignore[union-attr]
    own = TORCHRUN_REPORT.replace("rank      : 1 (local_rank: 1)", "rank      : 0 (local_rank: 0)")
    assert merge_rank_results(rank0, [(1.0, 0, rank0)], own) is rank0


def test_a_rank_killed_by_a_signal_is_named_through_torchrun(tmp_path: Path) -> None:
    (tmp_path / "rank1_segv_model.py").write_text(
        "import os, signal\n"
        "def make(**kwargs):\n"
        "    if os.environ.get('RANK') == '1':\n"
        "        os.kill(os.getpid(), signal.SIGSEGV)\n"
        "    raise RuntimeError('rank 0 must not get this far before torchrun stops it')\n"
    )
    case = Case(model="rank1_segv_model:make", batch_size=2, seq_len=8, steps=3, nproc=2)
    pythonpath = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    result = run_case(case, PROFILE, timeout_s=120, env={"PYTHONPATH": pythonpath})
    assert result.status == "crashed", result.describe()
    assert result.error is not None and result.error.signal == "SIGSEGV", result.describe()
    assert result.error.message.startswith("rank 1: the worker was killed by SIGSEGV")


def test_rank_result_files_are_found_by_rank(tmp_path: Path) -> None:
    from gpubench.contracts.protocol import rank_result_path

    paths = WorkerPaths(tmp_path)
    assert rank_result_path(paths.result, 0) == paths.result
    for rank in (10, 2):
        rank_result_path(paths.result, rank).write_text("{}")
    (tmp_path / "result.rankx.json").write_text("{}")
    assert [rank for rank, _ in paths.rank_results()] == [2, 10]


RANK1_OOM_MODEL = """
import os
from torch import nn


class TinyLM(nn.Module):
    vocab_size = 64

    def __init__(self):
        super().__init__()
        self.emb, self.head, self.calls = nn.Embedding(64, 8), nn.Linear(8, 64), 0

    def forward(self, idx):
        self.calls += 1
        if os.environ["RANK"] == "1" and self.calls >= 3:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to "
                               "allocate 1073741824 bytes. Error code 12")
        return self.head(self.emb(idx))


def make():
    return TinyLM()
"""


def test_an_oom_on_one_rank_of_two_is_the_cases_oom_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "rank1_oom_model.py").write_text(RANK1_OOM_MODEL)
    case = Case(model="rank1_oom_model:make", batch_size=2, seq_len=8, steps=5, warmup=1, nproc=2)
    pythonpath = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    result = run_case(case, PROFILE, timeout_s=120, env={"PYTHONPATH": pythonpath})
    assert result.status == "oom", result.describe()
    assert result.error is not None and result.error.message.startswith("rank 1: ")
    assert "can't allocate memory" in result.error.message
    assert result.duration_s is not None and result.duration_s < 60  # torchrun stopped rank 0


@pytest.mark.parametrize("cap_mib", [1, 8])
def test_two_ranks_under_a_tiny_cpu_cap_end_oom_not_crashed_or_hung(cap_mib: int) -> None:
    # gloo's set-up maps ~32 MiB and starts threads: done under the cap it failed ("Resource
    # temporarily unavailable": crashed) or left a rank waiting (timeout). The engine starts
    # the group before the cap; a thread that cannot start under the cap is an oom.
    case = Case(model="gpt-tiny", batch_size=2, seq_len=16, steps=3, warmup=1, nproc=2)
    profile = HardwareProfile.from_dict({**PROFILE.to_dict(), "memory_bytes": cap_mib * 2**20})
    result = run_case(case, profile, timeout_s=120)
    assert result.status == "oom", result.describe()
    assert result.duration_s is not None and result.duration_s < 60


def test_no_result_and_timed_out_is_timeout() -> None:
    result = classify_(returncode=-9, timed_out=True, stderr="CUDA out of memory\n", timeout_s=2.5)
    assert result.status == "timeout"
    assert result.error is not None
    assert result.error.type == "Timeout"
    assert "2.5 s" in result.error.message and "process group" in result.error.message
    assert (result.error.signal, result.error.exit_code) == ("SIGKILL", -9)
    assert result.environment.hostname == "parent"


@pytest.mark.parametrize(
    "line",
    [
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB",
        "RuntimeError: [enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: "
        "can't allocate memory: you tried to allocate 1073741824 bytes.",
        "terminate called after throwing an instance of 'std::bad_alloc'",
        "MemoryError",
        "OSError: [Errno 12] Cannot allocate memory",
    ],
)
def test_no_result_and_oom_on_stderr_is_oom(line: str) -> None:
    result = classify_(returncode=-6, stderr=f"Traceback (most recent call last):\n{line}\n")
    assert result.status == "oom"
    assert result.error is not None and line in result.error.message
    assert result.error.signal == "SIGABRT"


def test_death_by_signal() -> None:
    killed = classify_(returncode=-9, stderr="hello\n")
    assert killed.status == "crashed"
    assert killed.error is not None
    assert (killed.error.type, killed.error.signal) == ("Signal", "SIGKILL")
    assert "SIGKILL" in killed.error.message and "OOM killer" in killed.error.message
    assert killed.error.stderr_tail == "hello"
    segv = classify_(returncode=-11)
    assert segv.error is not None and segv.error.signal == "SIGSEGV"
    assert "OOM killer" not in segv.error.message


def test_exit_codes() -> None:
    failed = classify_(returncode=2)
    assert failed.status == "crashed"
    assert failed.error is not None
    assert (failed.error.type, failed.error.exit_code, failed.error.signal) == ("ExitCode", 2, None)
    silent = classify_(returncode=0)
    assert silent.error is not None and silent.error.type == "NoResult"


def test_signal_names() -> None:
    assert signal_name(-15) == "SIGTERM"
    assert signal_name(-999) == "signal 999"


def test_stderr_tail_keeps_the_last_lines_and_chars() -> None:
    text = "\n".join(f"line {i}" for i in range(100)) + "\n"
    tail = stderr_tail(text)
    assert tail.splitlines() == [f"line {i}" for i in range(100 - STDERR_TAIL_LINES, 100)]
    long = stderr_tail("x" * 10_000 + "END")
    assert len(long) == STDERR_TAIL_CHARS and long.endswith("END")


def test_oom_line_picks_the_last_matching_line() -> None:
    assert oom_line("a\nMemoryError: first\nb\nCUDA out of memory: last\nc") == (
        "CUDA out of memory: last"
    )
    assert oom_line("nothing to see") is None


def test_parent_environment_never_fails() -> None:
    env = parent_environment()
    assert isinstance(env, Environment)
    assert env.python and env.platform
