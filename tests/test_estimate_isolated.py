"""A user factory is estimated in a child process: the session survives one that hangs
or kills its interpreter, and a sound one answers as it would in process."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

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
    assert shape_safely(flat) == model_shape(flat)
    profile = resolve_profile("cpu")
    one, many = (estimated_peak_bytes(flat.replace(batch_size=b), profile) for b in (1, 64))
    assert 0 < one < many < UNKNOWN_PEAK
    # a factory that kills its interpreter: no estimate, the search starts from a batch of 1
    die = make_case(model=f"{factories}:die", vocab_size=64, seq_len=16)
    assert estimated_peak_bytes(die, profile) == UNKNOWN_PEAK
    with pytest.raises(EstimateFailed, match="took over 5 s"):
        shape_safely(make_case(model=f"{factories}:hang", vocab_size=64, seq_len=16), timeout_s=5)
