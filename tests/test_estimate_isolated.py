"""A user factory is estimated in a child process: the session survives one that hangs
or kills its interpreter, and a sound one answers as it would in process."""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from gpubench.contracts.case import make_case
from gpubench.contracts.profiles import resolve_profile
from gpubench.estimate import estimate_case
from gpubench.estimate.isolated import EstimateFailed, estimate_safely, runs_user_code

FACTORIES = """
import os, signal, time
import torch

def hang(vocab_size=64):
    time.sleep(3600)

def die(vocab_size=64):
    os.kill(os.getpid(), signal.SIGKILL)

def flat(vocab_size=64):
    return torch.nn.Sequential(torch.nn.Embedding(vocab_size, 8), torch.nn.Linear(8, vocab_size))

def forks(vocab_size=64):
    # a daemon, as a careless factory starts one: double fork, a session of its own
    middle = os.fork()
    if middle == 0:
        os.setsid()
        daemon = os.fork()
        if daemon == 0:
            time.sleep(3600)
            os._exit(0)
        with open(os.environ["FACTORY_PIDFILE"], "a") as fh:
            fh.write(f"{daemon}\\n")
        os._exit(0)
    os.waitpid(middle, 0)
    return flat(vocab_size)

def greedy(vocab_size=64):
    hoard = bytearray(int(os.environ.get("FACTORY_HOARD_BYTES", 3 * 2**30)))
    return flat(vocab_size)

def chatty(vocab_size=64):
    print("building...", flush=True)
    for number in range(20000):
        print(f"{number} " + "{" * 50)
    return flat(vocab_size)

def exits(vocab_size=64):
    os._exit(7)
"""


@pytest.fixture
def factories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "isolated_factories.py").write_text(textwrap.dedent(FACTORIES))
    monkeypatch.syspath_prepend(str(tmp_path))  # as pytest puts a test file's folder
    yield "isolated_factories"
    sys.modules.pop("isolated_factories", None)


def test_only_user_code_leaves_the_process() -> None:
    assert not runs_user_code(make_case(model="gpt2-small"))
    assert not runs_user_code(make_case(model="hf:gpt2"))
    assert runs_user_code(make_case(model="pkg.models:make"))


def test_a_hanging_factory_fails_the_estimate_not_the_session(factories: str) -> None:
    case = make_case(model=f"{factories}:hang", vocab_size=64, seq_len=16)
    with pytest.raises(EstimateFailed, match="took over 5 s"):
        estimate_safely(case, resolve_profile("cpu"), timeout_s=5)


def test_a_factory_that_kills_its_interpreter_fails_the_estimate(factories: str) -> None:
    case = make_case(model=f"{factories}:die", vocab_size=64, seq_len=16)
    with pytest.raises(EstimateFailed, match="exit code -9"):
        estimate_safely(case, resolve_profile("cpu"), timeout_s=60)


def test_a_sound_factory_answers_as_in_process(factories: str) -> None:
    case = make_case(model=f"{factories}:flat", vocab_size=64, seq_len=16, batch_size=2)
    profile = resolve_profile("cpu")
    isolated = estimate_safely(case, profile, timeout_s=120)
    assert isolated == estimate_case(case, profile)
    assert isolated.method.startswith("traced step")  # no layers to read: the trace decides


def test_the_batch_probe_reads_a_factory_shape_in_a_child_once(factories: str) -> None:
    from gpubench.estimate.isolated import shape_safely
    from gpubench.estimate.shape import model_shape
    from gpubench.probe.start import UNKNOWN_PEAK, estimated_peak_bytes

    flat = make_case(model=f"{factories}:flat", vocab_size=64, seq_len=16)
    profile = resolve_profile("cpu")
    assert shape_safely(flat, profile) == model_shape(flat)
    one, many = (estimated_peak_bytes(flat.replace(batch_size=b), profile) for b in (1, 64))
    assert 0 < one < many < UNKNOWN_PEAK
    # a factory that kills its interpreter: no estimate, the search starts from a batch of 1
    die = make_case(model=f"{factories}:die", vocab_size=64, seq_len=16)
    assert estimated_peak_bytes(die, profile) == UNKNOWN_PEAK
    with pytest.raises(EstimateFailed, match="took over 5 s"):
        shape_safely(
            make_case(model=f"{factories}:hang", vocab_size=64, seq_len=16), profile, timeout_s=5
        )


# -- containment (issue 18): what a factory starts, allocates or prints stays the estimate's


def _daemons(path: Path) -> list[int]:
    return [int(pid) for pid in path.read_text().split()] if path.exists() else []


def _dead(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_forking_factory_leaves_no_process_behind(
    factories: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pidfile = tmp_path / "daemons.txt"
    monkeypatch.setenv("FACTORY_PIDFILE", str(pidfile))
    case = make_case(model=f"{factories}:forks", vocab_size=64, seq_len=16, batch_size=2)
    profile = resolve_profile("cpu")
    started = time.monotonic()
    estimate = estimate_safely(case, profile, timeout_s=60)
    assert estimate.peak_bytes > 0 and time.monotonic() - started < 60
    daemons = _daemons(pidfile)
    assert daemons, "the factory ran and started its daemon"
    assert all(_dead(pid) for pid in daemons), f"left running: {daemons}"
    assert not _children_named("gpubench.estimate.isolated")


def _children_named(module: str) -> list[int]:
    """Processes running ``module`` anywhere on this machine that this test started."""
    mine = {p.pid for p in psutil.Process().children(recursive=True)}
    found = []
    for proc in psutil.process_iter(["cmdline", "ppid"]):
        cmdline = proc.info["cmdline"] or []
        if module in cmdline and (proc.pid in mine or proc.info["ppid"] == 1):
            found.append(proc.pid)
    return found


def test_an_allocating_factory_stays_under_the_profiles_cap(factories: str) -> None:
    case = make_case(model=f"{factories}:greedy", vocab_size=64, seq_len=16, batch_size=2)
    with pytest.raises(
        EstimateFailed, match=r"asked for more than the 256.0 MiB profile cpu allows"
    ):
        estimate_safely(case, resolve_profile("cpu:256MiB"), timeout_s=60)
    # the same factory where its 3 GiB fit the profile: estimated
    assert estimate_safely(case, resolve_profile("cpu:8GiB"), timeout_s=60).peak_bytes > 0


def test_the_post_run_estimate_is_contained_and_capped(
    factories: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from gpubench.contracts.result import Result
    from gpubench.session.bench import with_estimate

    case = make_case(model=f"{factories}:greedy", vocab_size=64, seq_len=16, batch_size=2)
    measured = Result(case=case, profile=resolve_profile("cpu:256MiB"), status="ok")
    assert with_estimate(measured, timeout_s=60) == measured  # no estimate; the run kept
    assert "more than the 256.0 MiB profile cpu allows" in capsys.readouterr().err


def test_estimate_only_reports_a_capped_factory_as_crashed_with_the_reason(factories: str) -> None:
    from gpubench.estimate.predicted import predicted_result

    case = make_case(model=f"{factories}:greedy", vocab_size=64, seq_len=16, batch_size=2)
    result = predicted_result(case, resolve_profile("cpu:256MiB"))
    assert result.status == "crashed" and result.predicted
    assert (
        result.error is not None
        and "more than the 256.0 MiB profile cpu allows" in result.error.message
    )


def test_a_factory_that_prints_keeps_its_estimate(factories: str) -> None:
    from gpubench.estimate.predicted import predicted_result

    case = make_case(model=f"{factories}:chatty", vocab_size=64, seq_len=16, batch_size=2)
    profile = resolve_profile("cpu")
    assert estimate_safely(case, profile, timeout_s=120) == estimate_case(case, profile)
    assert predicted_result(case, profile).status == "ok"


@pytest.mark.parametrize(
    ("factory", "extra", "message"),
    [
        ("hang", ["--timeout", "5"], "took over 5 s"),
        ("exits", [], "ended with exit code 7 before answering"),
        ("greedy", ["--profile", "cpu:1GiB"], "more than the 1.0 GiB profile cpu allows"),
    ],
)
def test_gpubench_estimate_contains_a_factory(
    factories: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    factory: str,
    extra: list[str],
    message: str,
) -> None:
    from gpubench.cli import main

    monkeypatch.setenv("FACTORY_HOARD_BYTES", str(50 * 10**9))  # 50 GB: more than this machine
    args = ["estimate", "--model", f"{factories}:{factory}", "--vocab-size", "64"]
    code = main([*args, "--seq-len", "16", "--batch-size", "2", *extra])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("gpubench estimate: error: ") and message in err
    assert "Traceback" not in err.splitlines()[0]
