"""The DeepSpeed engine: its config, its launch environment, and real cases on CPU.

The training tests run gpt-tiny through the real worker (``run_case``) on
DeepSpeed's CPU accelerator and skip where deepspeed is not installed. The
first run compiles DeepSpeed's CPU ops (``shm_comm``, ``cpu_adam``) into the
per-user cache (``TORCH_EXTENSIONS_DIR``, see gpubench.worker.engines.deepspeed_setup);
later runs load them from there.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpubench.contracts.case import Case, make_case
from gpubench.contracts.profiles import HardwareProfile, resolve_profile
from gpubench.contracts.protocol import ProgressEvent, ProgressReader, ProgressWriter
from gpubench.contracts.result import Result
from gpubench.runner import ProcessLauncher, TorchrunLauncher, launcher_for, run_case
from gpubench.session import collection as collection_checks
from gpubench.session.progress import describe_event
from gpubench.worker.engines import deepspeed_setup, engine_names
from gpubench.worker.engines.deepspeed_config import deepspeed_config, engine_clips
from gpubench.worker.engines.deepspeed_setup import (
    announce_op_builds,
    deepspeed_environment,
    default_torch_extensions_dir,
    ops_for,
)

needs_deepspeed = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None,
    reason="deepspeed is not installed (pip install 'gpubench[deepspeed]')",
)

CUDA = HardwareProfile(
    name="h100-test",
    kind="cuda",
    memory_bytes=80 * 2**30,
    bf16_flops=None,
    fp32_flops=None,
    memory_bandwidth=None,
)
RENDEZVOUS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# 20 optimizer steps at a high learning rate: enough for gpt-tiny to learn the Markov stream
TRAINING = dict(
    model="gpt-tiny", engine="deepspeed", batch_size=8, seq_len=32, steps=18, warmup=2, lr=3e-3
)
# With a cold op cache a case waits for DeepSpeed's ops to compile (about a minute each on
# 2 cores, longer while the other xdist worker trains): generous, it only bounds a hang
TIMEOUT_S = 600


def ds_case(**flags: object) -> Case:
    return make_case(**{**TRAINING, **flags})


# -- the Case and its config (no deepspeed needed) -----------------------------------------------


def test_case_ids_name_the_zero_flags() -> None:
    tokens = ds_case(zero_stage=2).id.split("-")
    assert tokens[:4] == ["gpt", "tiny", "fp32", "zero2"] and tokens[-1] == "deepspeed"
    offload = ds_case(zero_stage=2, offload_optimizer=True).id.split("-")
    assert offload[:5] == ["gpt", "tiny", "fp32", "zero2", "offopt"]
    case = ds_case(precision="bf16", zero_stage=3, offload_optimizer=True, offload_params=True)
    assert {"bf16", "zero3", "offopt", "offparam", "deepspeed"} <= set(case.id.split("-"))
    assert "deepspeed" in engine_names()


def test_config_follows_the_flags_on_cpu() -> None:
    cpu = resolve_profile("cpu")
    config = deepspeed_config(ds_case(precision="bf16", zero_stage=2, grad_accum=2), cpu)
    assert config["train_micro_batch_size_per_gpu"] == 8
    assert config["gradient_accumulation_steps"] == 2
    assert config["gradient_clipping"] == 1.0
    assert config["bf16"] == {"enabled": True} and "fp16" not in config
    assert config["zero_optimization"] == {"stage": 2}
    assert config["optimizer"] == {
        "type": "AdamW",
        "params": {"lr": 3e-3, "betas": [0.9, 0.95], "weight_decay": 0.1, "torch_adam": True},
    }
    assert config["steps_per_print"] >= 2**31 - 1 and config["wall_clock_breakdown"] is False
    # buckets no bigger than the gradients (DeepSpeed allocates 5e8 elements by default)
    sized = deepspeed_config(ds_case(zero_stage=2), cpu, n_params=124_672)["zero_optimization"]
    assert sized["reduce_bucket_size"] == sized["allgather_bucket_size"] == 124_672
    big = deepspeed_config(ds_case(zero_stage=3), cpu, n_params=10**10)["zero_optimization"]
    assert big["reduce_bucket_size"] == 500_000_000

    offload = deepspeed_config(
        ds_case(zero_stage=3, offload_optimizer=True, offload_params=True), cpu
    )
    zero = offload["zero_optimization"]
    assert zero["stage"] == 3
    assert zero["offload_optimizer"] == {"device": "cpu", "pin_memory": False}
    assert zero["offload_param"] == {"device": "cpu", "pin_memory": False}
    assert "torch_adam" not in offload["optimizer"]["params"]  # DeepSpeedCPUAdam
    assert "bf16" not in offload and "fp16" not in offload  # fp32
    assert ops_for(ds_case(zero_stage=2, offload_optimizer=True), "cpu") == [
        "ShareMemCommBuilder",
        "CPUAdamBuilder",
    ]


def test_gradient_clipping_is_deepspeeds_unless_the_engine_clips() -> None:
    cpu = resolve_profile("cpu")
    # a norm-keeping wrapper (bf16, ZeRO): DeepSpeed clips; 0.0 is its "no clipping"
    assert (
        deepspeed_config(ds_case(precision="bf16", grad_clip=0.5), cpu)["gradient_clipping"] == 0.5
    )
    assert deepspeed_config(ds_case(zero_stage=1, grad_clip=None), cpu)["gradient_clipping"] == 0.0
    # fp32 without ZeRO: the engine clips (and keeps the norm), DeepSpeed must not clip again
    assert engine_clips(ds_case()) and not engine_clips(ds_case(zero_stage=1))
    assert not engine_clips(ds_case(precision="bf16"))
    assert deepspeed_config(ds_case(grad_clip=0.5), cpu)["gradient_clipping"] == 0.0


def test_config_on_cuda_pins_offload_memory_and_scales_fp16_loss() -> None:
    config = deepspeed_config(ds_case(precision="fp16", zero_stage=1, offload_optimizer=True), CUDA)
    assert config["fp16"] == {"enabled": True, "loss_scale": 0}  # dynamic loss scaling
    assert config["zero_optimization"]["offload_optimizer"]["pin_memory"] is True
    assert "torch_adam" not in config["optimizer"]["params"]  # offload: DeepSpeedCPUAdam
    fused = deepspeed_config(ds_case(fused_adamw=True), CUDA)
    assert fused["optimizer"]["params"]["fused"] is True
    assert fused["zero_optimization"] == {"stage": 0}
    assert ops_for(ds_case(), "cuda") == []


# -- collection: checks and imports --------------------------------------------------------------


def test_a_deepspeed_case_without_deepspeed_names_the_missing_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> object:
        return None if name == "deepspeed" else real_find_spec(name, package)

    monkeypatch.setattr(collection_checks.importlib.util, "find_spec", find_spec)
    reason = collection_checks.missing_requirement(ds_case(zero_stage=2))
    assert reason is not None
    assert "engine='deepspeed'" in reason
    assert "pip install 'gpubench[deepspeed]'" in reason
    assert (
        collection_checks.missing_requirement(make_case(model="gpt-tiny")) is None
    )  # torch unaffected


@needs_deepspeed
def test_an_installed_deepspeed_is_no_missing_requirement() -> None:
    assert collection_checks.missing_requirement(ds_case(zero_stage=2)) is None


def test_collection_and_engine_lookup_do_not_import_deepspeed() -> None:
    code = (
        "import sys, gpubench.plugin, gpubench.session.collection\n"
        "from gpubench.worker.engines import get_engine\n"
        "assert get_engine('deepspeed').name == 'deepspeed'\n"
        "assert 'deepspeed' not in sys.modules, 'deepspeed was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# -- the launch environment ----------------------------------------------------------------------


def test_single_process_deepspeed_cases_get_a_rendezvous(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    env = deepspeed_environment(resolve_profile("cpu"), {})
    assert {k: env[k] for k in RENDEZVOUS[:4]} == {
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
    }
    assert 0 < int(env["MASTER_PORT"]) < 65536
    assert env["DS_ACCELERATOR"] == "cpu"
    extensions = Path(env["TORCH_EXTENSIONS_DIR"])
    assert extensions.parent == tmp_path / "gpubench" / "torch_extensions"
    assert extensions.name.startswith(f"py{sys.version_info.major}{sys.version_info.minor}")

    inherited = {
        "TORCH_EXTENSIONS_DIR": str(tmp_path / "mine"),
        "DS_ACCELERATOR": "cpu",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "10.0.0.9",  # exported in the shell: not for a world of one
        "MASTER_PORT": "29999",
    }
    env = deepspeed_environment(CUDA, inherited)
    assert "TORCH_EXTENSIONS_DIR" not in env  # the user's choice stands
    assert env["DS_ACCELERATOR"] == "cuda"  # the profile decides, whatever was set
    assert env["MASTER_ADDR"] == "127.0.0.1" and set(RENDEZVOUS) <= set(env)


def test_torchrun_deepspeed_cases_keep_torchruns_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    torchrun = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_PORT": "29500"}
    env = deepspeed_environment(resolve_profile("cpu"), torchrun)
    assert set(env) == {"DS_ACCELERATOR", "TORCH_EXTENSIONS_DIR"}


@needs_deepspeed
def test_each_environment_keeps_its_own_op_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    here = default_torch_extensions_dir()
    python, torch_build, ds_version, location = here.name.split("-")
    assert python.startswith(f"py{sys.version_info.major}{sys.version_info.minor}")
    assert torch_build == "torch" + importlib.metadata.version("torch")
    assert ds_version == "ds" + importlib.metadata.version("deepspeed")
    assert len(location) == 8 and int(location, 16) >= 0
    # the same DeepSpeed version installed elsewhere (another virtualenv) builds elsewhere
    elsewhere = tmp_path / "other-venv" / "site-packages" / "deepspeed"
    monkeypatch.setattr(deepspeed_setup, "_package_dir", lambda package: elsewhere)
    other = default_torch_extensions_dir()
    assert other.parent == here.parent and other.name != here.name
    assert other.name.rsplit("-", 1)[0] == here.name.rsplit("-", 1)[0]  # only the location
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "mine"))  # the user's choice
    assert "TORCH_EXTENSIONS_DIR" not in deepspeed_environment(resolve_profile("cpu"), os.environ)


def test_an_op_build_is_announced_with_the_ops_it_builds(tmp_path: Path) -> None:
    cache = tmp_path / "torch_extensions"
    (cache / "cpu_adam").mkdir(parents=True)
    (cache / "cpu_adam" / "cpu_adam.so").write_bytes(b"")  # built before
    (cache / "deepspeed_shm_comm").mkdir()  # a build that never finished: no library
    writer = ProgressWriter(tmp_path / "progress.jsonl")
    ops = ["deepspeed_shm_comm", "cpu_adam"]
    assert announce_op_builds(ops, writer, cache) == ["deepspeed_shm_comm"]
    assert announce_op_builds(["cpu_adam"], writer, cache) == []  # cached: nothing said
    writer.close()
    events = ProgressReader(tmp_path / "progress.jsonl").poll()
    assert [(e.phase, e.detail) for e in events] == [("building-ops", "deepspeed_shm_comm")]
    assert describe_event(events[0]) == (
        "building ops deepspeed_shm_comm (not in the op cache yet: tens of seconds)"
    )


def test_launchers_know_no_engine() -> None:
    assert launcher_for(ds_case(zero_stage=2)) == ProcessLauncher()
    assert launcher_for(ds_case(zero_stage=2, nproc=2)) == TorchrunLauncher(2)
    assert set(ProcessLauncher().env()) - {"PYTHONPATH", "GPUBENCH_PARENT_PID"} == {
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
    }


# -- real cases through the worker ---------------------------------------------------------------


def run_cpu(case: Case, profile: str = "cpu") -> Result:
    return run_case(case, resolve_profile(profile), timeout_s=TIMEOUT_S, nodeid="t::ds")


def check_trained(result: Result, case: Case, profile: str = "cpu") -> None:
    assert result.status == "ok", result.describe()
    metrics, series = result.metrics, result.series
    n_steps = metrics.warmup_steps + case.steps
    assert result.worker_pid is not None and result.worker_pid != os.getpid()
    assert metrics.n_params == 124_672 == metrics.declared_params
    assert metrics.warmup_steps == case.warmup and metrics.measured_steps == case.steps
    assert metrics.capacity_bytes == resolve_profile(profile).memory_bytes  # ran under the cap
    assert metrics.tokens_per_step == case.tokens_per_step
    assert metrics.tokens_per_s is not None and metrics.tokens_per_s.median > 0
    assert len(series.loss) == len(series.grad_norm) == len(series.step_time_s) == n_steps
    assert all(math.isfinite(v) for v in series.loss)
    # DeepSpeed's unclipped global norm, or the engine's own where DeepSpeed keeps none
    assert all(math.isfinite(v) and v > 0 for v in series.grad_norm), series.grad_norm
    assert metrics.nonfinite_steps == 0
    assert metrics.loss_start is not None and metrics.loss_start == pytest.approx(
        math.log(256), rel=0.1
    )  # an untrained model on a 256-token vocabulary
    if n_steps >= 20:
        assert metrics.loss_decreased, series.loss


@needs_deepspeed
def test_zero2_bf16_trains_through_the_worker() -> None:
    case = ds_case(precision="bf16", zero_stage=2, grad_accum=2)
    check_trained(run_cpu(case), case)


@needs_deepspeed
def test_the_progress_line_says_when_a_case_builds_ops_and_only_then() -> None:
    """A run that builds an op says so on the progress line and is a cold Result; the next
    is warm and says nothing. (The build itself, ~45 s from an empty cache, is run end to
    end in tests/test_no_false_alarms.py.)"""
    extensions = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or default_torch_extensions_dir())
    library = extensions / "deepspeed_shm_comm" / "deepspeed_shm_comm.so"  # cpu: shm_comm
    case = ds_case(steps=2, warmup=0)
    runs = []
    for _ in range(2):
        built_before = library.is_file()
        events: list[ProgressEvent] = []
        result = run_case(
            case, resolve_profile("cpu"), timeout_s=TIMEOUT_S, on_progress=events.append
        )
        assert result.status == "ok", result.describe()
        runs.append((built_before, [(e.phase, e.detail) for e in events if e.detail], result))
    (built_before_first, first, cold), (built_before_second, second, warm) = runs
    assert first == ([] if built_before_first else [("building-ops", "deepspeed_shm_comm")])
    assert cold.cold == (not built_before_first)
    assert built_before_second and second == []  # the first run built it: nothing to say
    assert not warm.cold and warm.cold_start == []


@needs_deepspeed
def test_zero2_with_optimizer_offload_trains_through_the_worker_under_a_small_cap() -> None:
    # 512 MiB: cpu_adam compiles (on a cold cache) in prepare(), before the cap, since the
    # compiler fails under it; and ZeRO's buckets are sized to the model, not 2 GB
    case = ds_case(zero_stage=2, offload_optimizer=True)
    assert "offopt" in case.id.split("-")
    check_trained(run_cpu(case, "cpu:512MiB"), case, "cpu:512MiB")


@needs_deepspeed
def test_zero3_with_parameter_and_optimizer_offload_trains_through_the_worker() -> None:
    case = ds_case(zero_stage=3, offload_optimizer=True, offload_params=True)
    assert {"zero3", "offopt", "offparam"} <= set(case.id.split("-"))
    check_trained(run_cpu(case), case)


@needs_deepspeed
def test_plain_fp32_without_zero_still_records_the_grad_norm() -> None:
    # DeepSpeed keeps no norm for fp32 without ZeRO; the engine computes it
    case = ds_case(steps=3, warmup=1)
    check_trained(run_cpu(case), case)


@needs_deepspeed
def test_the_engines_own_clip_matches_deepspeeds_step_for_step() -> None:
    # fp32 without ZeRO is clipped by the engine, ZeRO-1 by DeepSpeed: a clip tight enough to
    # act on every step must give the same losses and unclipped norms on the same data
    clipped = dict(steps=4, warmup=1, grad_clip=0.05)
    own, deepspeeds = run_cpu(ds_case(**clipped)), run_cpu(ds_case(zero_stage=1, **clipped))
    unclipped = run_cpu(ds_case(steps=4, warmup=1, grad_clip=None))
    for result in (own, deepspeeds, unclipped):
        assert result.status == "ok", result.describe()
    assert min(own.series.grad_norm) > 0.05  # so every step was clipped
    assert own.series.loss == pytest.approx(deepspeeds.series.loss, rel=1e-5)
    assert own.series.grad_norm == pytest.approx(deepspeeds.series.grad_norm, rel=1e-5)
    # and the clip did act: without it the third step on (after two updates) trains differently
    assert own.series.loss[:2] == pytest.approx(unclipped.series.loss[:2], rel=1e-5)
    assert own.series.loss[2:] != pytest.approx(unclipped.series.loss[2:], rel=1e-5)
