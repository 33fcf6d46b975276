"""A stand-in for ``python -m gpubench.worker``: each mode is one way a worker can end.

Usage: ``python fake_worker.py MODE --job J --result R --progress P``. It
speaks the same protocol as the real worker (job.json in, progress.jsonl and
result.json out) without importing torch, so runner tests stay fast. Pids of
the processes it starts are appended to ``$FAKE_WORKER_PIDFILE`` as
``role pid`` lines, so a test can check that none of them outlives the case.

Modes:
  ok             progress events, then a valid ``ok`` Result with this pid; exit 0
  hang           a child that ignores SIGTERM, then sleep forever ignoring SIGTERM too
  hang-polite    sleep forever; SIGTERM ends it
  setsid-child   a child in its own session (outside the group), then sleep forever
  signal-KILL    a line on stderr, then SIGKILL to itself (also signal-SEGV, ...)
  exit3          a line on stderr, then exit code 3
  oom-stderr     a CUDA out-of-memory message on stderr, then exit code 1
  garbage-result invalid JSON in result.json, then exit 0
  crashed-result a ``crashed`` Result without a stderr tail, a traceback on stderr; exit 1
  leak           a sleeping child in the group, a valid Result, exit 0 at once
  leak-setsid    a sleeping child in its own session, a valid Result after 1.5 s, exit 0
  quick-setsid   a sleeping child in its own session, a valid Result, exit 0 at once
                 (before any scan of the tree could see the child)
  double-fork    a daemon: a child forks a sleeping grandchild and exits at once, so the
                 grandchild is an orphan from its first instant; a valid Result after 1.5 s
  answer-hang    a valid Result, then sleep forever (SIGTERM ends it)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gpubench.contracts.case import Case
from gpubench.contracts.profiles import HardwareProfile
from gpubench.contracts.protocol import ProgressWriter, write_json_atomic
from gpubench.contracts.result import Environment, ErrorInfo, Metrics, Result, Stats

SLEEPER = "import signal, time; signal.signal(signal.SIGTERM, signal.{action}); time.sleep(600)"
STDERR_LINE = "fake worker: about to end badly"


def record_pid(role: str, pid: int) -> None:
    pidfile = os.environ.get("FAKE_WORKER_PIDFILE")
    if pidfile:
        with open(pidfile, "a", encoding="utf-8") as fh:
            fh.write(f"{role} {pid}\n")


def start_sleeper(role: str, *, ignore_term: bool, new_session: bool = False) -> None:
    action = "SIG_IGN" if ignore_term else "SIG_DFL"
    child = subprocess.Popen(
        [sys.executable, "-c", SLEEPER.format(action=action)],
        start_new_session=new_session,
        stdin=subprocess.DEVNULL,
    )
    record_pid(role, child.pid)


def start_daemon(role: str) -> None:
    """The classic double fork: the grandchild never has a living parent to be found under."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the child: start the grandchild in its own session, then vanish
        os.close(read_end)
        grandchild = subprocess.Popen(
            [sys.executable, "-c", SLEEPER.format(action="SIG_DFL")],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
        )
        os.write(write_end, str(grandchild.pid).encode())
        os._exit(0)
    os.close(write_end)
    pid = int(os.read(read_end, 32).decode())
    os.close(read_end)
    os.waitpid(child, 0)
    record_pid(role, pid)


def sleep_forever() -> None:
    while True:
        time.sleep(60)


def write_result(args: argparse.Namespace, status: str = "ok", **fields: Any) -> None:
    job = json.loads(Path(args.job).read_text(encoding="utf-8"))
    result = Result(
        case=Case.from_dict(job["case"]),
        profile=HardwareProfile.from_dict(job["profile"]),
        status=status,
        metrics=Metrics(tokens_per_s=Stats.of([1000.0, 1100.0, 1050.0]), measured_steps=3),
        environment=Environment(hostname="fake-worker"),
        nodeid=job["nodeid"],
        run_id=job["run_id"],
        worker_pid=os.getpid(),
        **fields,
    )
    write_json_atomic(Path(args.result), result.to_dict())


def write_seen_env(args: argparse.Namespace) -> None:
    names = ("PYTHONUNBUFFERED", "FAKE_LAUNCHER_VAR", "FAKE_SHARED_VAR", "FAKE_CALLER_VAR")
    seen = {name: os.environ.get(name) for name in names}
    write_json_atomic(Path(args.job).parent / "seen_env.json", seen)


def emit_progress(progress: ProgressWriter) -> None:
    progress.emit("building")
    for step in range(1, 4):
        progress.emit("warmup", step=step)
    for step in range(1, 6):
        progress.emit("measuring", step=step, total_steps=5, tokens_per_s=1000.0 + step)
    progress.emit("done", step=5, total_steps=5)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode")
    parser.add_argument("--job", required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--progress", required=True)
    args = parser.parse_args()
    mode = args.mode
    record_pid("worker", os.getpid())
    progress = ProgressWriter(Path(args.progress), min_interval_s=0.0)
    progress.emit("starting")

    if mode == "ok":
        write_seen_env(args)
        emit_progress(progress)
        write_result(args)
    elif mode == "hang":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        start_sleeper("child", ignore_term=True)
        sleep_forever()
    elif mode == "hang-polite":
        start_sleeper("child", ignore_term=False)
        sleep_forever()
    elif mode == "setsid-child":
        start_sleeper("escapee", ignore_term=False, new_session=True)
        sleep_forever()
    elif mode.startswith("signal-"):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file from SIGSEGV
        print(STDERR_LINE, file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.Signals["SIG" + mode.removeprefix("signal-")])
        sleep_forever()
    elif mode == "exit3":
        print(STDERR_LINE, file=sys.stderr, flush=True)
        return 3
    elif mode == "oom-stderr":
        print(
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. "
            "GPU 0 has a total capacity of 79.11 GiB of which 1.02 GiB is free.",
            file=sys.stderr,
            flush=True,
        )
        return 1
    elif mode == "garbage-result":
        Path(args.result).write_text("{this is not json", encoding="utf-8")
    elif mode == "crashed-result":
        print("Traceback (most recent call last):\nRuntimeError: boom", file=sys.stderr)
        write_result(args, status="crashed", error=ErrorInfo(type="RuntimeError", message="boom"))
        return 1
    elif mode == "leak":
        start_sleeper("leaked", ignore_term=False)
        write_result(args)
    elif mode == "leak-setsid":
        start_sleeper("leaked", ignore_term=False, new_session=True)
        time.sleep(1.5)  # long enough for the parent's periodic descendant scan
        write_result(args)
    elif mode == "quick-setsid":
        write_result(args)
        start_sleeper("escapee", ignore_term=False, new_session=True)  # then exit at once
    elif mode == "double-fork":
        start_daemon("daemon")
        time.sleep(1.5)
        write_result(args)
    elif mode == "chatty":  # 40 MiB on stdout, numbered lines; the last says so
        line = "x" * 1000
        for number in range(40 * 1024):
            sys.stdout.write(f"{number:08d} {line}\n")
        print("chatty: the last line", flush=True)
        print(STDERR_LINE, file=sys.stderr, flush=True)
        write_result(args)
    elif mode == "answer-hang":
        write_result(args)
        sleep_forever()
    else:
        print(f"fake worker: unknown mode {mode!r}", file=sys.stderr)
        return 2
    progress.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
