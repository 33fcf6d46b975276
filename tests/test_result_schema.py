"""The Result schema as a contract: one reading policy, frozen records, earlier versions read.

``data/result-v1-6ecbd18.json`` is a real Result (gpt-tiny, 3 steps, cpu:2GiB)
written by gpubench at commit 6ecbd18, schema v1, before the Result was built
once and frozen: it must keep loading, and writing it back must give the same
JSON but for what v2 and v3 added (``repeat``, 0 for every v1 run; ``series.partial``,
false for a case that trained to the end). ``data/result-v2-c5105cf-oom.json`` is
a real v2 Result of a case that ran out of memory after two measured steps
(written at c5105cf): v2 gave it a throughput, v3 reads it without one, its
steps kept and marked partial. ``data/result-v4-dc9760a-zero2-offopt.json`` is a
real v4 Result (the CPU smoke suite's ZeRO-2 offload case, 2026-12-02): v5 reads
it with no conditions measured (warm, machine load unknown) and no thresholds.
v6 judges the derived ``metrics.noisy`` only from 5 or more measured steps: the v1
record's 3 steps, noisy when written, read back as not noisy.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from gpubench.contracts import result as result_module
from gpubench.contracts.case import Case, CaseError, make_case
from gpubench.contracts.conditions import MachineLoad
from gpubench.contracts.profiles import HardwareProfile, ProfileError, resolve_profile
from gpubench.contracts.result import (
    SCHEMA_VERSION,
    Environment,
    ErrorInfo,
    Estimate,
    Metrics,
    Result,
    Series,
    Stats,
)
from gpubench.contracts.schema import SchemaError

V1 = Path(__file__).parent / "data" / "result-v1-6ecbd18.json"
V2_OOM = Path(__file__).parent / "data" / "result-v2-c5105cf-oom.json"
V4 = Path(__file__).parent / "data" / "result-v4-dc9760a-zero2-offopt.json"
V5_FIELDS = {"cold_start": [], "machine_load": None, "gate_thresholds": {}}
CPU = resolve_profile("cpu")
V4_METRICS = dict.fromkeys(
    ("model_flops_per_token", "model_flops_per_s", "mfu", "runtime_rss_bytes")
)
# v7 (diagnostics): what a record before it measured none of, written back as defaults; its
# measured steps were a fixed count
V7_METRICS = {
    **dict.fromkeys(
        (
            "precision_achieved",
            "tokens_per_s_low",
            "tokens_per_s_high",
            "precision_confidence",
            "precision_target",
            "precision_reached",
            "gpu_util",
            "gpu_memory_used_bytes",
            "power_w",
            "temperature_c",
            "sm_clock_mhz",
            "energy_j",
            "energy_per_token_j",
            "usd_per_million_tokens",
            "cpu_util",
            "disk_read_bytes",
            "disk_write_bytes",
            "telemetry_interval_s",
        )
    ),
    "stop_reason": "steps",
    "phases": {},
    "phase_timing": "",
    "throttle_reasons": {},
    "energy_method": "",
}
V7_SERIES = {"phase_s": {}, "telemetry": {}}
# v7's Case settings of steps="auto", at their defaults in a record written before them, and
# time_phases: a record before v7 did not split its steps into phases
V7_CASE = {
    "max_steps": 2000,
    "max_seconds": 600.0,
    "precision_target": None,
    "time_phases": False,
    "nnodes": 1,  # v8
}
# v8's scale fields: no rank's own figures, no launch environment, before v8
V8_FIELDS = {"ranks": [], "imbalance": []}
V8_ENVIRONMENT = {"launch_env": {}, "launch_command": []}
# v9's training correctness: no resume check, no quality comparison, no held-out evaluation,
# no finer divergence figures (None, never "no spike"), no LR or loss-scale series; the case
# trained at a constant learning rate on synthetic tokens (the defaults say so)
V9_FIELDS = {"resume": None, "quality": None}
V9_METRICS = {
    **dict.fromkeys(
        (
            "eval_loss",
            "eval_perplexity",
            "eval_tokens",
            "grad_spikes",
            "clip_rate",
            "clipped_steps",
            "skipped_steps",
            "loss_scale_min",
            "loss_scale_final",
        )
    ),
    "grad_spike_steps": [],
}
V9_SERIES = {"lr": [], "loss_scale": []}
V9_CASE = {
    "tokenizer": "byte",
    "lr_schedule": "constant",
    "lr_warmup_steps": 0,
    "lr_decay_steps": None,
    "resume_check": False,
    "eval_batches": 0,
}


def v1_record() -> dict[str, Any]:
    return json.loads(V1.read_text(encoding="utf-8"))


def v2_oom_record() -> dict[str, Any]:
    return json.loads(V2_OOM.read_text(encoding="utf-8"))


def full_result() -> Result:
    """A Result with every optional part filled."""
    return Result(
        case=make_case(model="gpt-tiny", precision="bf16"),
        profile=resolve_profile("rtx3060"),
        status="oom",
        metrics=Metrics(step_time_s=Stats.of([0.1, 0.2]), peak_allocated_bytes=3 * 2**30),
        series=Series(step_time_s=[0.1, 0.2], loss=[5.0, 4.0]),
        environment=Environment(hostname="h", device="NVIDIA H100 80GB HBM3"),
        error=ErrorInfo(type="OutOfMemoryError", message="CUDA out of memory"),
        cold_start=["built DeepSpeed ops cpu_adam"],
        machine_load=MachineLoad(
            window_s=2.0,
            cpu_count=8,
            case_cpu_cores=1.0,
            other_cpu_cores=6.5,
            gpu_other_processes=1,
            gpu_other_pids=[4242],
            gpu_other_memory_bytes=2**30,
        ),
        gate_thresholds={"tokens_per_s": 0.35, "loss": 0.05},
        estimate=Estimate(
            peak_bytes=13 * 2**30,
            capacity_bytes=12 * 2**30,
            verdict="oom",
            headroom_bytes=-(2**30),
            method="analytical",
            breakdown={"parameters": 2**30},
        ),
    )


# -- what earlier gpubench wrote still loads -----------------------------------------------------


def test_a_v1_result_loads_and_writes_back_the_same_but_for_later_fields() -> None:
    record = v1_record()
    assert record["schema_version"] == 1
    result = Result.from_dict(record)
    assert result.schema_version == SCHEMA_VERSION == 9
    assert result.status == "ok" and result.case.model == "gpt-tiny"
    assert isinstance(result.profile, HardwareProfile) and result.profile.name == "cpu"
    assert result.profile.memory_bytes == 2 * 2**30
    assert result.estimate is None and result.repeat == 0
    assert result.metrics.peak_memory_source == "host-rss"
    assert result.tokens_per_s is not None and not result.series.partial  # it trained
    series = {**record["series"], "partial": False, **V7_SERIES, **V9_SERIES}
    assert not result.predicted and result.implausible == []
    assert result.metrics.mfu is None and result.metrics.runtime_rss_bytes is None
    assert record["metrics"]["noisy"] and record["metrics"]["step_time_s"]["n"] == 3
    metrics = {**record["metrics"], **V4_METRICS, "noisy": False, **V7_METRICS, **V9_METRICS}
    assert result.to_dict() == {
        **record,
        "case": {**record["case"], **V7_CASE, **V9_CASE},
        "environment": {**record["environment"], **V8_ENVIRONMENT},
        "schema_version": 9,
        "repeat": 0,
        "series": series,
        "metrics": metrics,
        "predicted": False,
        "implausible": [],
        **V5_FIELDS,
        **V8_FIELDS,
        **V9_FIELDS,
    }


def test_a_v2_oom_loses_its_throughput_and_keeps_its_steps_marked_partial() -> None:
    record = v2_oom_record()
    assert record["schema_version"] == 2 and record["status"] == "oom"
    assert record["metrics"]["tokens_per_s"] is not None  # what v2 showed as the speed
    result = Result.from_dict(record)
    assert result.tokens_per_s is None
    assert result.metrics.samples_per_s is None and result.metrics.step_time_s is None
    assert result.series.partial and result.series.step_time_s == record["series"]["step_time_s"]
    assert result.metrics.measured_steps == 2 and result.error is not None
    assert "stopped after 3 steps" in result.describe()
    written = result.to_dict()
    assert written["series"] == {**record["series"], "partial": True, **V7_SERIES, **V9_SERIES}
    assert Result.from_dict(written) == result


def test_a_v3_record_reads_as_v4_with_nothing_measured_it_did_not_measure() -> None:
    record = {**v2_oom_record(), "schema_version": 3}
    record["series"] = {**record["series"], "partial": True}
    result = Result.from_dict(record)
    assert result.schema_version == 9 and not result.predicted and result.implausible == []
    assert all(result.to_dict()["metrics"][name] is None for name in V4_METRICS)
    assert Result.from_dict(result.to_dict()) == result


def test_a_v4_result_reads_as_v9_warm_with_no_load_thresholds_or_diagnostics() -> None:
    record = json.loads(V4.read_text(encoding="utf-8"))
    assert record["schema_version"] == 4
    result = Result.from_dict(record)
    assert result.cold_start == [] and result.machine_load is None
    assert result.gate_thresholds == {} and not result.busy and not result.cold
    assert result.metrics.stop_reason == "steps" and result.metrics.precision_achieved is None
    assert result.to_dict() == {
        **record,
        "schema_version": 9,
        **V5_FIELDS,
        **V8_FIELDS,
        **V9_FIELDS,
        "environment": {**record["environment"], **V8_ENVIRONMENT},
        "case": {**record["case"], **V7_CASE, **V9_CASE},
        "metrics": {**record["metrics"], **V7_METRICS, **V9_METRICS},
        "series": {**record["series"], **V7_SERIES, **V9_SERIES},
    }
    assert result.metrics.peak_rss_bytes == record["metrics"]["peak_rss_bytes"]


def test_a_v8_result_reads_as_v9_with_no_correctness_figures_it_did_not_measure() -> None:
    """A v8 record (this version's, less what v9 added) loads: no resume check, no quality
    comparison, and divergence figures that say "not measured", never "none found"."""
    written = dataclasses.replace(full_result(), status="ok").to_dict()
    v8 = {k: v for k, v in written.items() if k not in V9_FIELDS}
    v8["schema_version"] = 8
    v8["metrics"] = {k: v for k, v in v8["metrics"].items() if k not in V9_METRICS}
    v8["series"] = {k: v for k, v in v8["series"].items() if k not in V9_SERIES}
    v8["case"] = {k: v for k, v in v8["case"].items() if k not in V9_CASE}
    result = Result.from_dict(v8)
    assert result.resume is None and result.quality is None
    assert result.metrics.grad_spikes is None and result.metrics.clip_rate is None
    assert result.case.lr_schedule == "constant" and not result.case.resume_check
    assert result.to_dict() == written


def test_a_predicted_result_never_counts_as_ran() -> None:
    estimate = full_result().estimate
    assert estimate is not None
    fits = dataclasses.replace(estimate, verdict="fits", headroom_bytes=2**30)
    predicted = dataclasses.replace(
        full_result(), status="ok", predicted=True, estimate=fits, metrics=Metrics()
    )
    assert predicted.fits and not predicted.ran
    assert (
        "(predicted)" in predicted.describe() and "estimated peak 13.00 GiB" in predicted.describe()
    )
    assert Result.from_json(predicted.to_json()) == predicted


def test_an_estimate_verdict_must_be_one_of_the_three() -> None:
    estimate = full_result().estimate
    assert estimate is not None
    with pytest.raises(ValueError, match="verdict='ok'.*fits, over_capacity, oom"):
        dataclasses.replace(estimate, verdict="ok")


def test_every_part_round_trips() -> None:
    result = full_result()
    again = Result.from_json(result.to_json())
    assert again == result
    assert isinstance(again.estimate, Estimate) and again.estimate.breakdown == {
        "parameters": 2**30
    }
    assert isinstance(again.profile, HardwareProfile)


# -- one reading policy: an unknown key is refused by its full name ----------------------------


@pytest.mark.parametrize(
    ("path", "error"),
    [
        (("novelty",), SchemaError),
        (("metrics", "novelty"), SchemaError),
        (("metrics", "step_time_s", "novelty"), SchemaError),
        (("series", "novelty"), SchemaError),
        (("environment", "novelty"), SchemaError),
        (("error", "novelty"), SchemaError),
        (("estimate", "novelty"), SchemaError),
        (("profile", "novelty"), ProfileError),
        (("case", "novelty"), CaseError),
        (("case", "flags", "novelty"), CaseError),
    ],
)
def test_a_key_this_gpubench_does_not_know_is_refused_by_name(
    path: tuple[str, ...], error: type[Exception]
) -> None:
    record = full_result().to_dict()
    target = record
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = 1
    with pytest.raises(error) as info:
        Result.from_dict(record)
    assert ".".join(("result", *path)) in str(info.value)
    assert "newer gpubench" in str(info.value)


def test_derived_keys_are_read_as_derived() -> None:
    record = v1_record()
    assert {"loss_decreased", "noisy"} <= set(record["metrics"]) and "id" in record["case"]
    record["metrics"]["loss_decreased"] = not record["metrics"]["loss_decreased"]  # a lie
    record["case"]["id"] = "something-else"
    result = Result.from_dict(record)
    assert result.metrics.loss_decreased == (
        result.metrics.loss_end is not None
        and result.metrics.loss_start is not None
        and result.metrics.loss_end < result.metrics.loss_start
    )
    assert result.case.id == "gpt-tiny-fp32-b2-s16-n3-warm1"  # recomputed, not read


def test_a_missing_required_key_is_refused() -> None:
    record = v1_record()
    del record["status"]
    with pytest.raises(SchemaError, match="result lacks required field.*status"):
        Result.from_dict(record)
    record = v1_record()
    del record["metrics"]["tokens_per_s"]["median"]
    with pytest.raises(SchemaError, match=r"result\.metrics\.tokens_per_s lacks .*median"):
        Result.from_dict(record)


@pytest.mark.parametrize("version", [None, 0, SCHEMA_VERSION + 1, "1", True])
def test_a_schema_version_this_gpubench_cannot_read_is_refused(version: object) -> None:
    record = v1_record()
    record["schema_version"] = version
    with pytest.raises(SchemaError, match="schema_version"):
        Result.from_dict(record)


def test_an_earlier_version_is_read_through_its_upgrade(monkeypatch: pytest.MonkeyPatch) -> None:
    """The mechanism a schema change uses: bump the version, add the step from the last."""

    def v1_to_v2(record: dict[str, Any]) -> dict[str, Any]:
        record = copy.deepcopy(record)
        record["status"] = "diverged"  # stands for whatever the change rewrites
        return record

    monkeypatch.setattr(result_module, "UPGRADES", {**result_module.UPGRADES, 1: v1_to_v2})
    result = Result.from_dict(v1_record())
    assert result.status == "diverged"
    record = v1_record()
    record["schema_version"] = 10
    with pytest.raises(SchemaError, match="reads 1, 2, 3, 4, 5, 6, 7, 8, 9"):
        Result.from_dict(record)


def test_the_real_v1_to_v2_step_fills_repeat() -> None:
    assert result_module.UPGRADES[1]({"schema_version": 1})["repeat"] == 0


@pytest.mark.parametrize(
    ("status", "steps", "kept", "partial"),
    [
        ("ok", [0.1, 0.2], True, False),
        ("over_capacity", [0.1], True, False),
        ("diverged", [0.1, 0.2], False, True),
        ("oom", [], False, False),  # no step made: nothing partial to keep
        ("timeout", [], False, False),
    ],
)
def test_the_v2_to_v3_step_drops_the_throughput_of_a_case_that_stopped_early(
    status: str, steps: list[float], kept: bool, partial: bool
) -> None:
    stats = dataclasses.asdict(Stats.of([1.0, 2.0]))
    record = {
        "schema_version": 2,
        "status": status,
        "metrics": {name: stats for name in ("tokens_per_s", "samples_per_s", "step_time_s")},
        "series": {"step_time_s": steps},
    }
    upgraded = result_module.UPGRADES[2](record)
    assert (upgraded["metrics"]["tokens_per_s"] == stats) is kept
    assert (upgraded["metrics"]["step_time_s"] is None) is not kept
    assert upgraded["series"]["partial"] is partial
    assert record["metrics"]["tokens_per_s"] == stats  # the record read is not changed


# -- built once: frozen records ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "name"),
    [
        (full_result(), "status"),
        (full_result().metrics, "peak_allocated_bytes"),
        (full_result().series, "loss"),
        (full_result().environment, "hostname"),
        (full_result().error, "message"),
        (full_result().estimate, "peak_bytes"),
    ],
)
def test_records_are_frozen(record: object, name: str) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(record, name, None)


def test_a_profile_must_be_a_hardware_profile() -> None:
    with pytest.raises(TypeError, match="HardwareProfile"):
        Result(case=make_case(model="gpt-tiny"), profile={"name": "cpu"}, status="ok")  # type: ignore[arg-type]


# -- the peak is decided once --------------------------------------------------------------------


def test_the_peak_is_the_devices_largest_figure_else_the_hosts() -> None:
    gpu = Metrics(
        peak_allocated_bytes=5, peak_reserved_bytes=7, nvml_peak_used_bytes=6, peak_rss_bytes=99
    )
    assert (gpu.peak_memory_bytes, gpu.peak_memory_source) == (7, "cuda-reserved")
    assert gpu.exceeds(6) and not gpu.exceeds(7)
    cpu = Metrics(peak_rss_bytes=99)
    assert (cpu.peak_memory_bytes, cpu.peak_memory_source) == (99, "host-rss")
    assert not cpu.exceeds(1)  # a CPU case's capacity is the worker's cap, not a figure
    assert Metrics().peak_memory_source is None
    result = Result(case=make_case(model="gpt-tiny"), profile=CPU, status="ok", metrics=gpu)
    assert result.peak_memory_bytes == 7


def test_the_largest_rank_memory_is_taken_figure_by_figure() -> None:
    rank0 = Metrics(peak_allocated_bytes=5, peak_rss_bytes=3, tokens_per_step=10)
    rank1 = Metrics(peak_allocated_bytes=9, peak_rss_bytes=2, nvml_peak_used_bytes=None)
    merged = rank0.with_largest_memory([rank1])
    assert (merged.peak_allocated_bytes, merged.peak_rss_bytes) == (9, 3)
    assert merged.tokens_per_step == 10 and merged.nvml_peak_used_bytes is None


def test_an_error_from_an_exception_keeps_its_traceback() -> None:
    try:
        raise RuntimeError("x" * 5000)
    except RuntimeError as exc:
        error = ErrorInfo.from_exception(exc)
    assert error.type == "RuntimeError" and len(error.message) == 4000
    assert "test_an_error_from_an_exception_keeps_its_traceback" in error.traceback


def test_case_and_profile_read_by_the_same_policy() -> None:
    with pytest.raises(CaseError, match="case.novelty"):
        Case.from_dict({**make_case(model="gpt-tiny").to_dict(), "novelty": 1})
    with pytest.raises(ProfileError, match="profile.novelty"):
        HardwareProfile.from_dict({**CPU.to_dict(), "novelty": 1})
    with pytest.raises(ProfileError, match="lacks required field.*kind"):
        HardwareProfile.from_dict({k: v for k, v in CPU.to_dict().items() if k != "kind"})


def test_readings_all_zero_read_back() -> None:
    """An idle GPU's utilisation (every sample 0) varies by nothing: CV 0, not 0/0, which
    would be written as null and refuse the record on reading."""
    idle = Stats.of([0.0, 0.0, 0.0])
    assert idle.cv == 0.0
    result = Result(
        case=make_case(model="gpt-tiny"),
        profile=resolve_profile("cpu"),
        status="ok",
        metrics=Metrics(gpu_util=idle),
    )
    assert Result.from_json(result.to_json()).metrics.gpu_util == idle
