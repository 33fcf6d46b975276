"""No process of a case outlives the pytest that started it, whatever signal ends pytest.

End to end: a real pytest session in a subprocess runs a case whose model hangs in
``forward`` (and, as torchrun does, survives SIGTERM); the session gets SIGTERM,
SIGKILL, or Ctrl-C twice (the second during the clean-up's grace), for a plain
case and a two-rank torchrun case. Every process the session started carries a
marker in its environment; 15 s after the first signal none may be left, nor a
case directory. Then the parts one by one: the tether (PR_SET_PDEATHSIG), the
guardian, held signals and SIGTERM as an interrupt.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from gpubench.runner.guardian import Guardian
from gpubench.runner.guardian_main import CASE_TOKEN_ENV, marked_pids
from gpubench.runner.signals import HeldSignals, interrupt_on_sigterm
from gpubench.worker.tether import PARENT_PID_ENV

pytest_plugins = ("pytester",)

MARK_ENV = "GPUBENCH_TEST_LIFETIME_MARK"
OUTLIVE_LIMIT_S = 15.0
START_LIMIT_S = 240.0  # until the case hangs in forward: pytest, torchrun, torch imports

HANG_MODELS = """
import os, signal, time
from pathlib import Path

from torch import nn


def _note(event):
    Path(os.environ["HANG_NOTES"], f"{event}-{os.environ.get('RANK', '0')}").touch()


class Hang(nn.Module):
    vocab_size = 64

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(64, 8)
        self.head = nn.Linear(8, 64)
        # as torchrun does: SIGTERM alone does not end it
        signal.signal(signal.SIGTERM, lambda signum, frame: _note("term"))

    def forward(self, idx):
        _note("forward")
        while True:
            time.sleep(1)


def hang():
    return Hang()
"""

HANG_TEST = """
import gpubench

@gpubench.single_case(model="hangmodels:hang", batch_size=2, seq_len=8, steps=2, warmup=0,
                      nproc={nproc}, name="hang")
def test_hang(gpubench_result):
    pass
"""


def marked_processes(mark: str) -> list[psutil.Process]:
    """Living processes whose environment carries ``MARK_ENV=mark``."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid == os.getpid() or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get(MARK_ENV) == mark:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def describe(procs: list[psutil.Process]) -> list[str]:
    described = []
    for proc in procs:
        try:
            described.append(f"{proc.pid}: {' '.join(proc.cmdline())[:160]}")
        except psutil.Error:
            described.append(str(proc.pid))
    return described


def wait_for(
    predicate: Callable[[], bool], limit_s: float, session: subprocess.Popen[bytes]
) -> bool:
    """Whether ``predicate`` came true within ``limit_s`` (False at once if pytest ended)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        if session.poll() is not None:
            return predicate()
        time.sleep(0.1)
    return False


@pytest.fixture
def mark() -> Iterator[str]:
    """A fresh marker; whatever still carries it at the end is killed, pass or fail."""
    value = uuid.uuid4().hex
    yield value
    for proc in marked_processes(value):
        try:
            proc.kill()
        except psutil.Error:
            continue


@pytest.mark.parametrize("nproc", [1, 2], ids=["plain", "torchrun-2"])
@pytest.mark.parametrize("how", ["TERM", "KILL", "INT-twice"])
def test_nothing_of_a_case_outlives_pytest(
    pytester: pytest.Pytester, mark: str, nproc: int, how: str
) -> None:
    pytester.makepyfile(hangmodels=HANG_MODELS, test_hang=HANG_TEST.format(nproc=nproc))
    notes, tmp = pytester.mkdir("notes"), pytester.mkdir("tmp")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "GPUBENCH_"))}
    env |= {MARK_ENV: mark, "HANG_NOTES": str(notes), "TMPDIR": str(tmp)}
    log = pytester.path / "session.log"
    with open(log, "wb") as out:
        session = subprocess.Popen(
            [sys.executable, "-m", "pytest", "--gpu-profile", "cpu", "-p", "no:cacheprovider"],
            cwd=pytester.path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # no terminal's signal but the test's own
        )
    try:

        def hanging() -> bool:
            return len(list(notes.glob("forward-*"))) == nproc

        assert wait_for(hanging, START_LIMIT_S, session), log.read_text(errors="replace")
        workdirs = list(tmp.glob("gpubench-*"))
        assert len(workdirs) == 1  # the case's, while it runs
        first_signal = time.monotonic()
        if how == "INT-twice":
            session.send_signal(signal.SIGINT)
            # the runner's SIGTERM reached the case: the clean-up's grace has begun
            assert wait_for(lambda: any(notes.glob("term-*")), 60, session)
            session.send_signal(signal.SIGINT)
        else:
            session.send_signal(getattr(signal, f"SIG{how}"))
        session.wait(timeout=60)

        def gone() -> bool:
            return not marked_processes(mark) and not any(tmp.glob("gpubench-*"))

        deadline = first_signal + OUTLIVE_LIMIT_S
        while not gone() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not marked_processes(mark), (
            f"{OUTLIVE_LIMIT_S:.0f} s after SIG{how} to pytest, still running: "
            f"{describe(marked_processes(mark))}"
        )
        assert not any(tmp.glob("gpubench-*")), "the case's directory was left behind"
        if how == "KILL":
            assert session.returncode == -signal.SIGKILL
        else:  # the session ended as an interrupted one does, its summary written
            assert session.returncode == pytest.ExitCode.INTERRUPTED, log.read_text()
    finally:
        if session.poll() is None:
            session.kill()
            session.wait()


# -- the tether: PR_SET_PDEATHSIG --------------------------------------------------------------

TETHERED_SLEEPER = (
    "from gpubench.worker.tether import tether_to_parent; import sys, time; "
    "tether_to_parent(); print('tethered', flush=True); time.sleep(600)"
)


def test_a_tethered_process_dies_with_its_parent_even_by_sigkill() -> None:
    parent_code = (
        "import subprocess, sys, time; "
        f"child = subprocess.Popen([sys.executable, '-c', {TETHERED_SLEEPER!r}], "
        "stdout=subprocess.PIPE); child.stdout.readline(); "
        "print(child.pid, flush=True); time.sleep(600)"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE)
    assert parent.stdout is not None
    child = psutil.Process(int(parent.stdout.readline()))
    try:
        parent.kill()
        parent.wait()
        child.wait(timeout=30)  # psutil.TimeoutExpired: it outlived its parent
    finally:
        with_leftover = child.is_running()
        if with_leftover:
            child.kill()
    assert not with_leftover


def test_a_process_orphaned_before_it_could_tether_ends_itself() -> None:
    code = "from gpubench.worker.tether import tether_to_parent; tether_to_parent(); print('alive')"
    not_my_parent = {**os.environ, PARENT_PID_ENV: "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=not_my_parent, capture_output=True, timeout=60
    )
    assert done.returncode == -signal.SIGKILL and b"alive" not in done.stdout


def test_the_tether_command_keeps_the_request_across_exec() -> None:
    probe = (
        "import ctypes, os; from gpubench.worker.prctl import PR_GET_PDEATHSIG, prctl; "
        "sig = ctypes.c_int(0); prctl()(PR_GET_PDEATHSIG, ctypes.byref(sig), 0, 0, 0); "
        f"print(sig.value, os.environ[{PARENT_PID_ENV!r}] == str(os.getpid()))"
    )
    done = subprocess.run(
        [sys.executable, "-m", "gpubench.worker.tether", sys.executable, "-c", probe],
        env={**os.environ, PARENT_PID_ENV: str(os.getpid())},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.split() == [str(int(signal.SIGKILL)), "True"], done.stderr


# -- the guardian -------------------------------------------------------------------------------

SLEEPER = "import time; time.sleep(600)"


def marked_sleeper(guardian: Guardian) -> subprocess.Popen[bytes]:
    """A process of the case that left its process group (``setsid``)."""
    return subprocess.Popen(
        [sys.executable, "-c", SLEEPER],
        env={**os.environ, **guardian.env},
        start_new_session=True,
    )


def test_the_guardian_ends_the_case_and_its_directory_when_the_runner_is_gone(
    tmp_path: Path,
) -> None:
    workdir = tmp_path / "gpubench-case"
    workdir.mkdir()
    guardian = Guardian.start(workdir)
    sleeper = marked_sleeper(guardian)
    try:
        assert marked_pids(guardian.token) == [sleeper.pid]
        proc = guardian._proc
        assert proc is not None and proc.stdin is not None
        proc.stdin.close()  # as the kernel does when the runner dies: no "released"
        proc.wait(timeout=30)
        assert sleeper.wait(timeout=30) in (-signal.SIGTERM, -signal.SIGKILL)
        assert not workdir.exists()
    finally:
        sleeper.kill()


def test_a_released_guardian_leaves_everything_alone(tmp_path: Path) -> None:
    guardian = Guardian.start(tmp_path)
    sleeper = marked_sleeper(guardian)
    try:
        guardian.release()
        assert guardian.pid is None  # exited and reaped
        assert sleeper.poll() is None and tmp_path.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def ignored_signals(pid: int) -> set[int]:
    """The signals process ``pid`` ignores (its SigIgn mask in /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            mask = int(line.split()[1], 16)
            return {sig for sig in range(1, 65) if mask >> (sig - 1) & 1}
    return set()


def test_the_guardian_is_out_of_reach_of_ctrl_c() -> None:
    guardian = Guardian.start()
    try:
        assert guardian.pid is not None
        assert os.getsid(guardian.pid) == guardian.pid != os.getsid(0)  # a session of its own
        wanted = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
        deadline = time.monotonic() + 30
        while not wanted <= ignored_signals(guardian.pid) and time.monotonic() < deadline:
            time.sleep(0.01)  # until its interpreter has started
        for sig in wanted:
            os.kill(guardian.pid, sig)
        assert CASE_TOKEN_ENV not in psutil.Process(guardian.pid).environ()  # not the case's
    finally:
        proc = guardian._proc
        guardian.release()
    assert proc is not None and proc.returncode == 0  # it lived on to be released


# -- signals while a case is cleaned up -----------------------------------------------------------


def test_a_held_interrupt_arrives_when_the_clean_up_is_done() -> None:
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as usual
    try:
        held = HeldSignals()
        held.hold()
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # twice: still nothing until the release
        time.sleep(0.05)  # the handler has run: the interrupt was noted, not raised
        assert held.holding
        with pytest.raises(KeyboardInterrupt):
            held.release()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_sigterm_ends_the_session_as_ctrl_c_does() -> None:
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        pytest.skip("SIGTERM already has a handler here")
    undo = interrupt_on_sigterm()
    assert undo is not None
    try:
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    finally:
        undo()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
