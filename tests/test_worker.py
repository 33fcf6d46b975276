"""``python -m gpubench.worker`` as the parent runs it: a subprocess on a job.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpubench.contracts.case import Case, make_case
from gpubench.contracts.profiles import HardwareProfile
from gpubench.contracts.protocol import PHASES, WorkerPaths
from gpubench.contracts.result import Result
from gpubench.worker.capacity import CapacityLimit, vm_data_bytes

MiB = 2**20


def cpu_profile(memory_bytes: int = 4 * 2**30) -> HardwareProfile:
    return HardwareProfile(
        name="cpu-test",
        kind="cpu",
        memory_bytes=memory_bytes,
        bf16_flops=None,
        fp32_flops=None,
        memory_bandwidth=None,
    )


def run_worker(
    tmp_path: Path,
    case: Case,
    profile: HardwareProfile,
    env: dict[str, str] | None = None,
    launcher: list[str] | None = None,
) -> tuple[subprocess.CompletedProcess[str], WorkerPaths]:
    paths = WorkerPaths(tmp_path)
    job = {"case": case.to_dict(), "profile": profile.to_dict(), "nodeid": "t::x", "run_id": "r7"}
    paths.job.write_text(json.dumps(job))
    argv = [*(launcher or [sys.executable, "-m"]), "gpubench.worker"]
    argv += ["--job", str(paths.job), "--result", str(paths.result)]
    argv += ["--progress", str(paths.progress)]
    done = subprocess.run(
        argv,
        cwd=tmp_path,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=240,
    )
    return done, paths


def read_result(paths: WorkerPaths) -> Result:
    return Result.from_json(paths.result.read_text())


def phases(paths: WorkerPaths) -> list[str]:
    return [json.loads(line)["phase"] for line in paths.progress.read_text().splitlines()]


def test_worker_runs_a_case(tmp_path: Path) -> None:
    case = make_case(model="gpt-tiny", batch_size=2, seq_len=16, steps=3, warmup=1)
    done, paths = run_worker(tmp_path, case, cpu_profile())
    assert done.returncode == 0, done.stderr
    result = read_result(paths)
    assert result.status == "ok", result.describe()
    assert result.worker_pid is not None and result.worker_pid != os.getpid()
    assert result.nodeid == "t::x" and result.run_id == "r7"
    assert result.started_at.endswith("+00:00")
    assert result.case == case
    assert result.metrics.capacity_bytes == 4 * 2**30
    assert result.metrics.capacity_emulated is False
    # the runtime's resident set when the cap went on: torch imported, no case yet
    runtime, peak = result.metrics.runtime_rss_bytes, result.metrics.peak_rss_bytes
    assert runtime is not None and peak is not None and 50 * 2**20 < runtime <= peak
    assert result.metrics.measured_steps == 3 and len(result.series.loss) == 4
    env = result.environment
    assert env.torch and env.python and env.device and env.cpu_count >= 1
    assert env.git_commit is None  # the worker ran in tmp_path, outside any repository
    seen = phases(paths)
    order = [PHASES.index(p) for p in seen]
    assert order == sorted(order), seen  # never backwards
    assert seen[0] == "starting" and seen[-1] == "done"
    assert {"building", "warmup", "measuring"} <= set(seen)
    # gpt-tiny at T = 16 (tests/test_flops.py); the cpu profile states no peak: no MFU
    assert result.metrics.model_flops_per_token == 723_456
    tokens_per_s = result.tokens_per_s
    assert tokens_per_s is not None
    assert result.metrics.model_flops_per_s == pytest.approx(tokens_per_s * 723_456)
    assert result.metrics.mfu is None and result.implausible == []


def test_worker_names_a_parameter_count_mismatch(tmp_path: Path) -> None:
    case = make_case(model="gpt-tiny", batch_size=2, seq_len=16, steps=2, expect_params=1_000_000)
    done, paths = run_worker(tmp_path, case, cpu_profile())
    result = read_result(paths)
    sentence = (
        "declared 1,000,000 parameters (expect_params=1,000,000), the model built has 124,672 "
        "(-88 %, beyond ±10 %): the benchmark would measure a different model than declared."
    )
    assert result.status == "crashed" and done.returncode == 1  # statuses are a fixed contract
    assert result.error is not None and result.error.type == "ParameterCountMismatch"
    assert result.error.message == sentence and result.error.traceback == ""
    assert result.implausible == [sentence]
    assert (result.metrics.n_params, result.metrics.declared_params) == (124_672, 1_000_000)
    assert "Traceback" not in done.stderr and "Traceback" not in result.describe()
    assert f"ParameterCountMismatch: {sentence}" in result.describe()


def test_worker_reports_oom_under_the_cpu_cap(tmp_path: Path) -> None:
    # The first forward needs ~0.25 GiB for the logits alone ([2048, 128, 256] float32),
    # plus every block's activations: well past a 256 MiB cap on the very first step.
    case = make_case(model="gpt-tiny", batch_size=2048, seq_len=128, steps=2, warmup=0)
    done, paths = run_worker(tmp_path, case, cpu_profile(256 * MiB))
    assert done.returncode == 0, done.stderr
    result = read_result(paths)
    assert result.status == "oom", result.describe()
    assert result.error is not None
    assert "can't allocate memory" in result.error.message
    assert result.error.traceback
    assert result.metrics.capacity_bytes == 256 * MiB
    assert result.series.loss == []
    assert result.environment.torch  # filled after the cap was lifted
    assert phases(paths)[-1] == "done"


BAD_FACTORY = """
def broken(**kwargs):
    raise RuntimeError("this factory is broken on purpose")
"""


def test_worker_reports_a_crash_with_its_traceback(tmp_path: Path) -> None:
    (tmp_path / "gpubench_test_bad_factory.py").write_text(BAD_FACTORY)
    case = make_case(model="gpubench_test_bad_factory:broken", batch_size=2, seq_len=8, steps=2)
    pythonpath = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    done, paths = run_worker(tmp_path, case, cpu_profile(), env={"PYTHONPATH": pythonpath})
    assert done.returncode == 1
    result = read_result(paths)
    assert result.status == "crashed"
    assert result.error is not None and result.error.type == "RuntimeError"
    assert "broken on purpose" in result.error.message
    assert "def broken" in result.error.traceback or "broken" in result.error.traceback
    assert "Traceback" in result.error.traceback
    assert "broken on purpose" in done.stderr  # also on stderr, for the parent's tail
    assert result.worker_pid is not None and result.environment.python


def test_worker_without_a_readable_job(tmp_path: Path) -> None:
    paths = WorkerPaths(tmp_path)
    paths.job.write_text("{not json")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gpubench.worker",
            "--job",
            str(paths.job),
            "--result",
            str(paths.result),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert not paths.result.exists()
    assert "JSONDecodeError" in done.stderr


def test_torchrun_two_ranks_rank_zero_answers(tmp_path: Path) -> None:
    case = make_case(model="gpt-tiny", batch_size=2, seq_len=16, steps=2, warmup=0, nproc=2)
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
    ]
    done, paths = run_worker(tmp_path, case, cpu_profile(), launcher=launcher)
    assert done.returncode == 0, done.stderr
    result = read_result(paths)
    assert result.status == "ok", result.describe()
    assert result.metrics.tokens_per_step == 2 * 2 * 16  # both ranks' tokens
    assert phases(paths).count("starting") == 1  # only rank 0 reports progress


def test_a_single_process_case_is_a_world_of_one_whatever_rank_pytest_holds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """pytest itself run as rank 1 of 2 (under torchrun or SLURM): a one-process case must not
    wait for a peer, write rank 1's file, or pick rank 1's device."""
    from gpubench.runner import run_case

    for key, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(key, value)
    case = make_case(model="gpt-tiny", batch_size=2, seq_len=16, steps=2, warmup=0)
    result = run_case(case, cpu_profile(), timeout_s=120)
    assert result.status == "ok", result.describe()
    assert result.metrics.tokens_per_step == 2 * 16  # one rank's tokens


# -- the CPU cap itself, in process --------------------------------------------------------------


def test_cpu_capacity_sets_and_restores_the_soft_data_limit() -> None:
    resource = pytest.importorskip("resource")
    before = resource.getrlimit(resource.RLIMIT_DATA)
    base = vm_data_bytes()
    assert base is not None and base > 0
    cap = CapacityLimit.apply(cpu_profile(512 * MiB))
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
        assert hard == before[1]
        now = vm_data_bytes()
        assert now is not None and abs(soft - 512 * MiB - now) < 256 * MiB
        assert cap.capacity_bytes == 512 * MiB and not cap.emulated
    finally:
        cap.release()
    assert resource.getrlimit(resource.RLIMIT_DATA) == before
