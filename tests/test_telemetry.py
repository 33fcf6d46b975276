"""Telemetry: NVML readings against a fake NVML (a device with the energy counter and one
without, throttle reasons decoded to names, readings that fail left out), energy per token
and dollars per million tokens from planted figures, and the CPU readings of a real case.

The fake stands at the process boundary NVML is: a module named ``pynvml`` in
``sys.modules`` whose calls answer from a scripted device.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import textwrap
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from in_process import CPU_TEST, train

from gpubench.contracts.case import make_case
from gpubench.contracts.protocol import ProgressWriter
from gpubench.contracts.result import Metrics, Result, Series, Stats
from gpubench.worker.trackers import telemetry as T
from gpubench.worker.trackers.load import MachineLoadTracker
from gpubench.worker.trackers.telemetry import Telemetry, throttle_reason_names, with_telemetry

CPU = dataclasses.replace(CPU_TEST, usd_per_hour=3.6)


# -- a fake NVML ----------------------------------------------------------------------------------


class NVMLError(Exception):
    """pynvml's error: ``value`` is nvml.h's return code."""

    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


NOT_SUPPORTED, UNKNOWN, FUNCTION_NOT_FOUND = 3, 999, 13


class Device:
    """A scripted device: each reading answers the next of its list (the last repeats), or
    raises when that entry is an NVMLError code wrapped in a tuple."""

    def __init__(self, energy_mj: list[Any] | None = None, **readings: list[Any]) -> None:
        self.energy_mj = energy_mj  # None: the device has no energy counter
        self.readings = readings
        self.calls: dict[str, int] = {}

    def read(self, name: str) -> Any:
        n = self.calls.get(name, 0)
        self.calls[name] = n + 1
        script = self.readings.get(name)
        if script is None:
            raise NVMLError(NOT_SUPPORTED)
        value = script[min(n, len(script) - 1)]
        if isinstance(value, tuple):
            raise NVMLError(value[0])
        return value

    def energy(self) -> int:
        if self.energy_mj is None:
            raise NVMLError(NOT_SUPPORTED)
        n = self.calls.get("energy", 0)
        self.calls["energy"] = n + 1
        return int(self.energy_mj[min(n, len(self.energy_mj) - 1)])


def fake_pynvml(*, events: bool = True) -> types.ModuleType:
    """pynvml whose calls take the handle as the :class:`Device` itself. ``events``: the
    binding has ``nvmlDeviceGetCurrentClocksEventReasons`` (else only the older name)."""
    module = types.ModuleType("pynvml")
    ns = types.SimpleNamespace
    module.NVMLError = NVMLError  # type: ignore[attr-defined]
    module.nvmlDeviceGetUtilizationRates = lambda d: ns(gpu=d.read("gpu"), memory=0)  # type: ignore[attr-defined]
    module.nvmlDeviceGetMemoryInfo = lambda d: ns(used=d.read("used"), total=80 * 2**30)  # type: ignore[attr-defined]
    module.nvmlDeviceGetPowerUsage = lambda d: d.read("power_mw")  # type: ignore[attr-defined]

    def temperature(d: Device, sensor: int) -> Any:
        assert sensor == T.NVML_TEMPERATURE_GPU
        return d.read("temperature")

    def clock(d: Device, kind: int) -> Any:
        assert kind == T.NVML_CLOCK_SM
        return d.read("sm_clock")

    module.nvmlDeviceGetTemperature = temperature  # type: ignore[attr-defined]
    module.nvmlDeviceGetClockInfo = clock  # type: ignore[attr-defined]
    module.nvmlDeviceGetTotalEnergyConsumption = lambda d: d.energy()  # type: ignore[attr-defined]
    module.nvmlDeviceGetCurrentClocksThrottleReasons = lambda d: d.read("throttle")  # type: ignore[attr-defined]
    if events:
        module.nvmlDeviceGetCurrentClocksEventReasons = lambda d: d.read("events")  # type: ignore[attr-defined]
    return module


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def sampled(device: Device, seconds: list[float], *, events: bool = True) -> Telemetry:
    """A window over ``device``: a row at each of ``seconds`` since its start (the first at
    start, the last at stop)."""
    clock = Clock()
    telemetry = Telemetry(os.getpid(), nvml_handle=device, interval_s=1.0, clock=clock)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "pynvml", fake_pynvml(events=events))
        clock.now = 100.0 + seconds[0]
        telemetry.start()
        for t in seconds[1:-1]:
            clock.now = 100.0 + t
            telemetry.sample()
        clock.now = 100.0 + seconds[-1]
        telemetry.stop()
    return telemetry


def busy_device(**overrides: Any) -> Device:
    readings: dict[str, Any] = dict(
        gpu=[97, 99, 98],
        used=[40 * 2**30],
        power_mw=[350_000, 400_000, 450_000],
        temperature=[61, 63, 64],
        sm_clock=[1980, 1755, 1980],
        events=[0x0],
    )
    readings.update(overrides)
    energy = readings.pop("energy_mj", [1_000_000, 1_250_000])
    return Device(energy_mj=energy, **readings)


# -- the constants are nvml.h's -------------------------------------------------------------------


def test_the_bits_and_codes_are_pynvml_s() -> None:
    """The table is checked against the installed binding, not guessed."""
    pynvml = pytest.importorskip("pynvml")
    for name, bit in T.THROTTLE_REASONS:
        camel = "".join(part.capitalize() for part in name.split("_"))
        constant = getattr(pynvml, f"nvmlClocksEventReason{camel}", None)
        if constant is None:
            constant = getattr(pynvml, f"nvmlClocksThrottleReason{camel}")
        assert constant == bit, name
    assert pynvml.NVML_TEMPERATURE_GPU == T.NVML_TEMPERATURE_GPU
    assert pynvml.NVML_CLOCK_SM == T.NVML_CLOCK_SM
    assert pynvml.NVML_ERROR_NOT_SUPPORTED == T.NVML_ERROR_NOT_SUPPORTED
    assert pynvml.NVML_ERROR_FUNCTION_NOT_FOUND == T.NVML_ERROR_FUNCTION_NOT_FOUND


def test_throttle_bitmasks_decode_to_names_several_at_once() -> None:
    assert throttle_reason_names(0) == []
    assert throttle_reason_names(0x4 | 0x20 | 0x40) == [
        "sw_power_cap",
        "sw_thermal_slowdown",
        "hw_thermal_slowdown",
    ]
    assert throttle_reason_names(0x1 | 0x80 | 0x100) == [
        "gpu_idle",
        "hw_power_brake_slowdown",
        "display_clock_setting",
    ]
    assert throttle_reason_names(0x8 | 0x1000) == ["hw_slowdown", "unknown_0x1000"]


# -- NVML readings --------------------------------------------------------------------------------


def test_a_device_with_the_energy_counter() -> None:
    telemetry = sampled(busy_device(), [0.0, 1.0, 2.0])
    fields = telemetry.summary()
    assert telemetry.energy_method == T.ENERGY_COUNTER == "nvml-energy-counter"
    assert telemetry.energy_j == pytest.approx(250.0)  # 1,250,000 - 1,000,000 mJ
    assert fields["gpu_util"].median == 98 and fields["gpu_util"].max == 99
    assert fields["power_w"].median == pytest.approx(400.0)  # mW read, W kept
    assert fields["temperature_c"].max == 64
    assert fields["sm_clock_mhz"].min == 1755
    assert fields["gpu_memory_used_bytes"].median == 40 * 2**30
    assert fields["throttle_reasons"]["sw_power_cap"] == 0.0
    series = telemetry.series()
    assert series["t_s"] == [0.0, 1.0, 2.0]
    assert series["power_w"] == [350.0, 400.0, 450.0]


def test_a_device_without_the_counter_integrates_power() -> None:
    """NotSupported for the energy counter: the trapezoid of the power samples, said so."""
    device = busy_device(energy_mj=None, power_mw=[100_000, 200_000, 300_000])
    telemetry = sampled(device, [0.0, 1.0, 3.0])
    assert telemetry.energy_method == T.POWER_INTEGRAL == "power-integral"
    # (100 + 200) / 2 x 1 s + (200 + 300) / 2 x 2 s
    assert telemetry.energy_j == pytest.approx(150.0 + 500.0)


def test_a_counter_that_fails_at_the_end_falls_back_to_the_power_integral() -> None:
    device = busy_device(power_mw=[100_000])
    device.energy_mj = [5_000, 4_000]  # went backwards (a reset): not an energy
    telemetry = sampled(device, [0.0, 2.0])
    assert telemetry.energy_method == T.POWER_INTEGRAL
    assert telemetry.energy_j == pytest.approx(200.0)


def test_throttle_reasons_are_a_share_of_samples_per_name() -> None:
    device = busy_device(events=[0x4 | 0x40, 0x4, 0x0, 0x4 | 0x1000])
    fields = sampled(device, [0.0, 1.0, 2.0, 3.0]).summary()
    reasons = fields["throttle_reasons"]
    assert reasons["sw_power_cap"] == pytest.approx(0.75)
    assert reasons["hw_thermal_slowdown"] == pytest.approx(0.25)
    assert reasons["unknown_0x1000"] == pytest.approx(0.25)
    assert reasons["gpu_idle"] == 0.0  # measured, never active
    assert set(reasons) >= {name for name, _ in T.THROTTLE_REASONS}


def test_an_older_binding_reads_the_throttle_reasons() -> None:
    device = busy_device(throttle=[0x20])
    fields = sampled(device, [0.0, 1.0], events=False).summary()
    assert fields["throttle_reasons"]["sw_thermal_slowdown"] == 1.0


def test_a_driver_older_than_the_binding_reads_the_throttle_reasons() -> None:
    device = busy_device(events=[(FUNCTION_NOT_FOUND,)], throttle=[0x8])
    fields = sampled(device, [0.0, 1.0]).summary()
    assert fields["throttle_reasons"]["hw_slowdown"] == 1.0


def test_readings_that_raise_are_left_out() -> None:
    """A reading that fails is missing from its row (null in the series, not in the summary);
    one the device does not support is asked once and never again; none fails the window."""
    device = busy_device(
        temperature=[(UNKNOWN,)],  # always fails
        sm_clock=[1980, (UNKNOWN,), 1500],  # fails once
        events=[(NOT_SUPPORTED,)],
    )
    del device.readings["gpu"]  # NotSupported
    telemetry = sampled(device, [0.0, 1.0, 2.0, 3.0])
    fields = telemetry.summary()
    assert fields["temperature_c"] is None and fields["gpu_util"] is None
    assert "throttle_reasons" not in fields
    assert device.calls["gpu"] == 1 and device.calls["events"] == 1
    assert device.calls["temperature"] == 4  # another error: asked again each row
    assert fields["sm_clock_mhz"].n == 3 and fields["sm_clock_mhz"].min == 1500
    series = telemetry.series()
    assert "temperature_c" not in series and "gpu_util" not in series
    assert math.isnan(series["sm_clock_mhz"][1]) and series["sm_clock_mhz"][2] == 1500
    assert fields["power_w"] is not None and telemetry.energy_method == T.ENERGY_COUNTER


def test_no_nvml_module_leaves_the_gpu_readings_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    telemetry = Telemetry(os.getpid(), nvml_handle=object())
    telemetry.start()
    telemetry.stop()
    fields = telemetry.summary()
    assert fields["gpu_util"] is None and fields["energy_j"] is None
    assert fields["energy_method"] == ""


# -- into Metrics and Series ----------------------------------------------------------------------


def planted_metrics(tokens_per_s: float = 1000.0) -> Metrics:
    return Metrics(
        tokens_per_s=Stats.of([tokens_per_s] * 5),
        tokens_per_step=1000,
        measured_steps=50,
    )


def test_energy_per_token_and_dollars_per_million_tokens() -> None:
    telemetry = sampled(busy_device(), [0.0, 1.0, 2.0])  # 250 J
    metrics = with_telemetry(planted_metrics(), telemetry, usd_per_hour=3.6)
    assert metrics.energy_j == pytest.approx(250.0)
    assert metrics.energy_per_token_j == pytest.approx(250.0 / 50_000)
    # $3.6/h at 1000 tokens/s: 3.6 M tokens an hour, $1 a million
    assert metrics.usd_per_million_tokens == pytest.approx(1.0)
    assert metrics.telemetry_interval_s == 1.0
    # two ranks: this device did half the tokens; the price is of both cards
    two = with_telemetry(planted_metrics(), telemetry, world_size=2, usd_per_hour=3.6)
    assert two.energy_per_token_j == pytest.approx(250.0 / 25_000)
    assert two.usd_per_million_tokens == pytest.approx(2.0)


def test_no_price_or_no_throughput_leaves_the_per_token_figures_out() -> None:
    telemetry = sampled(busy_device(), [0.0, 1.0])
    unpriced = with_telemetry(planted_metrics(), telemetry, usd_per_hour=None)
    assert unpriced.usd_per_million_tokens is None and unpriced.energy_per_token_j is not None
    stopped = dataclasses.replace(planted_metrics(), tokens_per_s=None)
    early = with_telemetry(stopped, telemetry, usd_per_hour=3.6)
    assert early.energy_j == pytest.approx(250.0)  # the device's energy is still measured
    assert early.energy_per_token_j is None and early.usd_per_million_tokens is None
    assert with_telemetry(planted_metrics(), None) == planted_metrics()
    never = Telemetry(os.getpid())
    assert with_telemetry(planted_metrics(), never) == planted_metrics()


def test_the_summaries_and_series_survive_the_result_s_json() -> None:
    device = busy_device(sm_clock=[1980, (UNKNOWN,), 1500], events=[0x4])
    telemetry = sampled(device, [0.0, 1.0, 2.0])
    metrics = with_telemetry(planted_metrics(), telemetry, usd_per_hour=3.6)
    result = Result(
        case=make_case(model="gpt-tiny"),
        profile=CPU,
        status="ok",
        metrics=metrics,
        series=Series(telemetry=telemetry.series()),
    )
    back = Result.from_json(result.to_json())
    assert back.metrics.power_w == metrics.power_w
    assert back.metrics.throttle_reasons["sw_power_cap"] == 1.0
    assert back.metrics.energy_method == "nvml-energy-counter"
    assert back.series.telemetry["sm_clock_mhz"] == [1980, None, 1500]  # a failed reading: null
    assert back.series.telemetry["t_s"] == [0.0, 1.0, 2.0]


# -- the CPU readings -----------------------------------------------------------------------------


def test_cpu_util_of_a_busy_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    telemetry = Telemetry(os.getpid(), interval_s=0.1)
    telemetry.start()
    for _ in range(4):
        end = time.perf_counter() + 0.1
        while time.perf_counter() < end:
            pass
        telemetry.sample()
    telemetry.stop()
    fields = telemetry.summary()
    assert fields["cpu_util"] is not None and fields["cpu_util"].n >= 3
    # a spinning thread is ~100 % of a core; this machine is shared, so only "clearly busy"
    assert fields["cpu_util"].max > 30.0
    assert fields["gpu_util"] is None and fields["energy_method"] == ""


def _io_accounted(directory: Path) -> bool:
    """Whether ``directory``'s file system reaches the block layer (tmpfs does not)."""
    before = T.disk_bytes([os.getpid()])
    probe = directory / "probe"
    with open(probe, "wb") as fh:
        fh.write(os.urandom(64 * 1024))
        fh.flush()
        os.fsync(fh.fileno())
    after = T.disk_bytes([os.getpid()])
    probe.unlink()
    return before is not None and after is not None and after[1] > before[1]


WRITER = """
import os, sys
with open(sys.argv[1], "wb") as fh:
    fh.write(os.urandom(int(sys.argv[2])))
    fh.flush()
    os.fsync(fh.fileno())
"""


def test_disk_write_bytes_grow_when_the_tree_writes(tmp_path: Path) -> None:
    """Bytes written by this process and by a child it waited for (counted through its
    parent once reaped)."""
    if not _io_accounted(tmp_path):
        pytest.skip(f"{tmp_path}'s file system does not account block I/O")
    telemetry = Telemetry(os.getpid(), interval_s=0.1)
    telemetry.start()
    with open(tmp_path / "mine", "wb") as fh:
        fh.write(os.urandom(2**20))
        fh.flush()
        os.fsync(fh.fileno())
    telemetry.sample()
    subprocess.run(
        [sys.executable, "-c", WRITER, str(tmp_path / "child"), str(2 * 2**20)], check=True
    )
    telemetry.stop()
    fields = telemetry.summary()
    assert fields["disk_write_bytes"] >= 3 * 2**20
    assert fields["disk_read_bytes"] is not None
    written = telemetry.series()["disk_write_bytes"]
    assert written == sorted(written) and written[1] >= 2**20  # cumulative, never back


def test_the_load_tracker_s_thread_takes_the_rows_on_a_cpu_case() -> None:
    """No NVML handle, yet the sampler runs: the telemetry's rows come from its thread."""
    telemetry = Telemetry(os.getpid(), interval_s=0.05)
    with MachineLoadTracker(os.getpid(), interval_s=0.05, telemetry=telemetry) as tracker:
        assert telemetry.started
        time.sleep(0.5)
    assert tracker.load() is not None
    rows = telemetry.rows()
    assert len(rows) >= 5  # the start, the thread's, the stop
    assert rows[-1]["t_s"] >= 0.45


# -- a real CPU case, end to end ------------------------------------------------------------------

WRITING_MODEL = """
import os
import time

from torch import nn


class WritingLM(nn.Module):
    '''A tiny LM whose every forward appends 256 KiB to a file and syncs it (a stand-in for
    a step that logs or checkpoints) and spins 20 ms (a CPU-bound input pipeline).'''

    vocab_size = 64

    def __init__(self, path):
        super().__init__()
        self.emb = nn.Embedding(64, 8)
        self.head = nn.Linear(8, 64)
        self.path = path

    def forward(self, idx):
        with open(self.path, "ab") as fh:
            fh.write(os.urandom(256 * 1024))
            fh.flush()
            os.fsync(fh.fileno())
        end = time.perf_counter() + 0.02
        while time.perf_counter() < end:
            pass
        return self.head(self.emb(idx))


def writing():
    return WritingLM(PATH)
"""


@pytest.fixture
def writing_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = "gpubench_test_telemetry_models"
    source = textwrap.dedent(WRITING_MODEL) + f"\nPATH = {str(tmp_path / 'steps.bin')!r}\n"
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield f"{name}:writing"
    sys.modules.pop(name, None)


def run_cpu_case(**case: Any) -> Result:
    return train(make_case(**case), CPU)


def test_a_cpu_case_gets_its_cpu_telemetry() -> None:
    result = run_cpu_case(model="gpt-tiny", batch_size=4, seq_len=32, steps=6, warmup=1)
    m, telemetry = result.metrics, result.series.telemetry
    assert result.status == "ok"
    assert m.cpu_util is not None and m.cpu_util.max > 0
    assert m.disk_read_bytes is not None and m.disk_write_bytes is not None
    assert m.telemetry_interval_s == T.TELEMETRY_INTERVAL_S
    assert 0 <= telemetry["t_s"][0] < 0.1 and len(telemetry["cpu_util"]) == len(telemetry["t_s"])
    # no GPU: no NVML reading, no energy, no price of a token's energy
    assert m.gpu_util is None and m.power_w is None and m.throttle_reasons == {}
    assert m.energy_j is None and m.energy_method == "" and m.energy_per_token_j is None
    assert m.usd_per_million_tokens is not None  # the cpu-test profile's $3.6/h


def test_a_cpu_case_that_writes_shows_its_disk_bytes(writing_model: str, tmp_path: Path) -> None:
    if not _io_accounted(tmp_path):
        pytest.skip(f"{tmp_path}'s file system does not account block I/O")
    result = run_cpu_case(model=writing_model, batch_size=2, seq_len=8, steps=8, warmup=1)
    m = result.metrics
    assert result.status == "ok" and m.measured_steps == 8
    # every measured step appended and synced 256 KiB
    assert m.disk_write_bytes is not None and m.disk_write_bytes >= 8 * 256 * 1024
    assert m.cpu_util is not None and m.cpu_util.max > 10.0  # 20 ms of spinning a step


def test_the_cost_benchmark_runs() -> None:
    """benchmarks/telemetry_cost.py, the figure the interval was chosen by (no timing asserted)."""
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "telemetry_cost.py"
    done = subprocess.run(
        [sys.executable, str(script), "--samples", "20", "--children", "0", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.splitlines()[-1])
    assert [row["children"] for row in figures["rows"]] == [0, 1]
    assert all(row["cpu_s"] > 0 for row in figures["rows"])


def test_an_emulated_capacity_has_no_price_per_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """A smaller card emulated on a bigger one runs at the bigger one's speed: the profile's
    price at that speed means nothing (as its MFU); the energy measured is still the card's."""
    from gpubench.worker import job
    from gpubench.worker.capacity import CapacityLimit
    from gpubench.worker.engines.base import Measurement

    measured = dataclasses.replace(
        planted_metrics(), usd_per_million_tokens=1.0, energy_per_token_j=0.005, mfu=0.4
    )
    for emulated, price in ((True, None), (False, 1.0)):
        capacity = CapacityLimit(capacity_bytes=12 * 2**30, emulated=emulated)
        monkeypatch.setattr(
            job,
            "measure_under_cap",
            lambda *a, c=capacity: (Measurement("ok", metrics=measured), c),
        )
        case = make_case(model="gpt-tiny")
        result = job.run_job(
            {"case": case.to_dict(), "profile": CPU.to_dict()}, ProgressWriter(None)
        )
        assert result.metrics.usd_per_million_tokens == price
        assert result.metrics.energy_per_token_j == 0.005
