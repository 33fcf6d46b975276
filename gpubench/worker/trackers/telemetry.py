"""Telemetry: what the case's device and process tree did over the measured steps.

One :meth:`Telemetry.sample` is one row of readings, taken by the machine-load
tracker's sampler thread (:mod:`gpubench.worker.trackers.load`) from the first
measured step to the last; no thread or process of its own.

GPU, through NVML on the device this process trains on (under torchrun each rank
samples its own): utilisation (``nvmlDeviceGetUtilizationRates``), memory used
(``nvmlDeviceGetMemoryInfo``), power (``nvmlDeviceGetPowerUsage``), temperature
(``nvmlDeviceGetTemperature``), SM clock (``nvmlDeviceGetClockInfo``) and the
clock-event (throttle) reasons (``nvmlDeviceGetCurrentClocksEventReasons``, or the
older ``...ClocksThrottleReasons``) decoded to names. These are the whole device's,
not the process's: NVML has no per-process power. Energy is the device's total
energy counter (``nvmlDeviceGetTotalEnergyConsumption``, mJ) read at the window's
start and end; a device without the counter (NotSupported) gets the power samples
integrated over time instead (the trapezoid rule), and says which in
``energy_method``. Every NVML call is best effort: a reading that fails is left out
of that row, one the device does not support is not asked again, and none fails
the case.

CPU, on every case: the process tree's CPU utilisation between two rows (percent of
one core: 200 is two cores busy) from the tree's CPU ticks (``/proc/<pid>/stat``, as
:mod:`~gpubench.worker.trackers.load` reads them), and the tree's disk bytes since
the window's start (``/proc/<pid>/io`` ``read_bytes``/``write_bytes``: what reached
the block layer, not the page cache). A member that ended counts through its parent
once the parent waited for it (the kernel adds a reaped child's ticks and I/O to its
parent's); one that ended outside the tree's waiting (reparented) is lost from then
on, and the figures never go back down for it.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from gpubench.contracts.result import TELEMETRY_FIELDS, Metrics, Stats
from gpubench.worker.trackers.load import process_cpu_ticks, tree_pids

# The sampler's period (Metrics.telemetry_interval_s). A row costs 0.1-0.4 ms of CPU on
# the project's VM (benchmarks/telemetry_cost.py; docs/diagnostics.md): under 0.1 % of
# one core at this rate. NVML's utilisation is itself averaged over 1/6 s to 1 s, so a
# faster rate would repeat it.
TELEMETRY_INTERVAL_S = 0.5

ENERGY_COUNTER = "nvml-energy-counter"
POWER_INTEGRAL = "power-integral"

# nvml.h's values, the same as pynvml's constants (tests/test_telemetry.py compares them)
NVML_TEMPERATURE_GPU = 0  # nvmlTemperatureSensors_t
NVML_CLOCK_SM = 1  # nvmlClockType_t
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_FUNCTION_NOT_FOUND = 13  # a driver older than the binding's call

# nvml.h's clock-event reason bits (pynvml's nvmlClocksEventReason*; the last two only
# as nvmlClocksThrottleReason*), by the names a user reads them by
THROTTLE_REASONS: tuple[tuple[str, int], ...] = (
    ("gpu_idle", 0x1),
    ("applications_clocks_setting", 0x2),
    ("sw_power_cap", 0x4),
    ("hw_slowdown", 0x8),
    ("sync_boost", 0x10),
    ("sw_thermal_slowdown", 0x20),
    ("hw_thermal_slowdown", 0x40),
    ("hw_power_brake_slowdown", 0x80),
    ("display_clock_setting", 0x100),
    ("board_limit", 0x200),
    ("reliability", 0x400),
)
_KNOWN_REASON_BITS = functools.reduce(lambda a, b: a | b, (bit for _, bit in THROTTLE_REASONS))

# the rows' readings summarised as Stats: Metrics' TELEMETRY_FIELDS; "throttle_reasons" is
# the raw bitmask in the series and a share per name in Metrics
THROTTLE = "throttle_reasons"


def throttle_reason_names(mask: int) -> list[str]:
    """The reasons set in an NVML clock-event bitmask; a bit nvml.h did not name when this
    was written reads ``unknown_0x...``."""
    names = [name for name, bit in THROTTLE_REASONS if mask & bit]
    rest = mask & ~_KNOWN_REASON_BITS
    bit = 1
    while rest:
        if rest & bit:
            names.append(f"unknown_{bit:#x}")
            rest &= ~bit
        bit <<= 1
    return names


def _not_supported(exc: Exception) -> bool:
    return getattr(exc, "value", None) == NVML_ERROR_NOT_SUPPORTED


def _clocks_event_reasons(pynvml: Any, handle: Any) -> int:
    current = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
    if current is not None:
        try:
            return int(current(handle))
        except Exception as exc:  # a driver older than the binding: the older name
            if getattr(exc, "value", None) != NVML_ERROR_FUNCTION_NOT_FOUND:
                raise
    return int(pynvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle))


def nvml_readings(pynvml: Any) -> dict[str, Callable[[Any], float]]:
    """Each NVML reading of a row: name -> its call on a device handle, in Metrics' units."""
    return {
        "gpu_util": lambda h: float(pynvml.nvmlDeviceGetUtilizationRates(h).gpu),
        "gpu_memory_used_bytes": lambda h: float(pynvml.nvmlDeviceGetMemoryInfo(h).used),
        "power_w": lambda h: pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0,  # mW
        "temperature_c": lambda h: float(pynvml.nvmlDeviceGetTemperature(h, NVML_TEMPERATURE_GPU)),
        "sm_clock_mhz": lambda h: float(pynvml.nvmlDeviceGetClockInfo(h, NVML_CLOCK_SM)),
        THROTTLE: lambda h: float(_clocks_event_reasons(pynvml, h)),
    }


def disk_bytes(pids: list[int]) -> tuple[int, int] | None:
    """``(read_bytes, write_bytes)`` of ``pids`` together (``/proc/<pid>/io``); None when no
    one's can be read (not Linux, or not ours to read)."""
    read = write = 0
    seen = False
    for pid in pids:
        try:
            with open(f"/proc/{pid}/io", encoding="ascii") as fh:
                fields = dict(line.split(": ", 1) for line in fh.read().splitlines())
            read += int(fields["read_bytes"])
            write += int(fields["write_bytes"])
            seen = True
        except (OSError, ValueError, KeyError):
            continue  # ended since the listing, or no I/O accounting
    return (read, write) if seen else None


class Telemetry:
    """Rows of readings over one window: :meth:`start`, :meth:`sample` from the sampler
    thread, :meth:`stop`; then :meth:`series` and :func:`with_telemetry`.

    ``root`` is the process tree the CPU figures are of (as the machine-load tracker's);
    ``nvml_handle`` the device's (None: no GPU readings).
    """

    def __init__(
        self,
        root: int | None = None,
        nvml_handle: Any = None,
        interval_s: float = TELEMETRY_INTERVAL_S,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.root = os.getpid() if root is None else root
        self.nvml_handle = nvml_handle
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._readings: dict[str, Callable[[Any], float]] = {}
        self._unsupported: set[str] = set()
        self._rows: list[dict[str, float]] = []
        self._t0: float | None = None
        self._stopped = False
        self._cpu_last: tuple[float, int] = (0.0, 0)  # (time, tree ticks) of the last figure
        self._disk_start: tuple[int, int] | None = None
        self._disk_most = (0, 0)
        self._energy_start_mj: int | None = None
        self.energy_j: float | None = None
        self.energy_method = ""

    # -- the window --------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        return self._t0 is not None

    def start(self) -> None:
        """The window's first row, and the figures its differences are taken from."""
        if self.nvml_handle is not None:
            try:
                import pynvml

                self._readings = nvml_readings(pynvml)
            except ImportError:
                self._readings = {}
            self._energy_start_mj = self._energy_counter_mj()
        with self._lock:
            self._t0 = self._clock()
            pids = tree_pids(self.root)
            self._cpu_last = (self._t0, sum(process_cpu_ticks(pid) for pid in pids))
            self._disk_start = disk_bytes(pids)
        self.sample()

    def stop(self) -> None:
        """The window's last row and its energy; safe to call twice."""
        if self._t0 is None or self._stopped:
            return
        self._stopped = True
        self.sample(last=True)
        self._energy_over_window()

    def sample(self, last: bool = False) -> None:
        """One row: every reading that answers, at seconds since the window's start."""
        if self._t0 is None:
            return
        row = self._nvml_row()
        pids = tree_pids(self.root)  # listed once: a few reads per thread of the tree
        ticks, disk = sum(process_cpu_ticks(pid) for pid in pids), disk_bytes(pids)
        with self._lock:
            now = self._clock()
            row["t_s"] = round(now - self._t0, 4)  # 0.1 ms: the series stays small in JSON
            cpu = self._cpu_util(now, ticks, last)
            if cpu is not None:
                row["cpu_util"] = cpu
            if disk is not None and self._disk_start is not None:
                # a member lost outside the tree takes its bytes along: never count back
                self._disk_most = (
                    max(self._disk_most[0], disk[0] - self._disk_start[0]),
                    max(self._disk_most[1], disk[1] - self._disk_start[1]),
                )
                row["disk_read_bytes"], row["disk_write_bytes"] = map(float, self._disk_most)
            self._rows.append(row)

    def _nvml_row(self) -> dict[str, float]:
        row: dict[str, float] = {}
        for name, read in self._readings.items():
            if name in self._unsupported:
                continue
            try:
                row[name] = read(self.nvml_handle)
            except Exception as exc:  # best effort: a reading never fails the case
                if _not_supported(exc):
                    self._unsupported.add(name)
        return row

    def _cpu_util(self, now: float, ticks: int, last: bool) -> float | None:
        """Percent of one core the tree used since the last figure; None for less than half
        an interval (a tick is 10 ms: a short span's figure is mostly rounding), unless
        this is the window's last row and no figure came before it (a short window)."""
        since, before = self._cpu_last
        elapsed = now - since
        first = not any("cpu_util" in r for r in self._rows)
        if elapsed <= 0 or (elapsed < self.interval_s / 2 and not (last and first)):
            return None
        self._cpu_last = (now, ticks)
        return 100.0 * max(0, ticks - before) / os.sysconf("SC_CLK_TCK") / elapsed

    # -- energy ------------------------------------------------------------------------------
    def _energy_counter_mj(self) -> int | None:
        try:
            import pynvml

            return int(pynvml.nvmlDeviceGetTotalEnergyConsumption(self.nvml_handle))
        except Exception:  # NotSupported (before Volta, some virtual GPUs), or no NVML
            return None

    def _energy_over_window(self) -> None:
        if self.nvml_handle is None:
            return
        start = self._energy_start_mj
        end = self._energy_counter_mj() if start is not None else None
        if start is not None and end is not None and end >= start:
            self.energy_j = (end - start) / 1000.0
            self.energy_method = ENERGY_COUNTER
            return
        points = [(r["t_s"], r["power_w"]) for r in self.rows() if "power_w" in r]
        if len(points) >= 2:
            self.energy_j = sum(
                (t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in itertools.pairwise(points)
            )
            self.energy_method = POWER_INTEGRAL

    # -- what was measured -------------------------------------------------------------------
    def rows(self) -> list[dict[str, float]]:
        """The rows so far, oldest first (copies)."""
        with self._lock:
            return [dict(row) for row in self._rows]

    def series(self) -> dict[str, list[float]]:
        """``t_s`` and one list per reading any row holds, aligned with it (NaN, written as
        null, where that row has no such reading)."""
        rows = self.rows()
        names = ("t_s", *TELEMETRY_FIELDS, THROTTLE, "disk_read_bytes", "disk_write_bytes")
        return {
            name: [row.get(name, math.nan) for row in rows]
            for name in names
            if any(name in row for row in rows)
        }

    def summary(self) -> dict[str, Any]:
        """Metrics' telemetry fields, without the per-token ones (:func:`with_telemetry`)."""
        rows = self.rows()
        fields: dict[str, Any] = {}
        for name in TELEMETRY_FIELDS:
            values = [r[name] for r in rows if name in r and math.isfinite(r[name])]
            fields[name] = Stats.of(values) if values else None
        masks = [int(r[THROTTLE]) for r in rows if THROTTLE in r]
        if masks:  # every known reason, 0.0 when never active: measured and none is not unknown
            shares = dict.fromkeys((name for name, _ in THROTTLE_REASONS), 0.0)
            for mask in masks:
                for name in throttle_reason_names(mask):
                    shares[name] = shares.get(name, 0.0) + 1 / len(masks)
            fields["throttle_reasons"] = shares
        disk = [r for r in rows if "disk_read_bytes" in r]
        if disk:
            fields["disk_read_bytes"] = int(disk[-1]["disk_read_bytes"])
            fields["disk_write_bytes"] = int(disk[-1]["disk_write_bytes"])
        fields["energy_j"], fields["energy_method"] = self.energy_j, self.energy_method
        fields["telemetry_interval_s"] = self.interval_s
        return fields


def with_telemetry(
    metrics: Metrics,
    telemetry: Telemetry | None,
    *,
    world_size: int = 1,
    usd_per_hour: float | None = None,
) -> Metrics:
    """``metrics`` with the telemetry's summaries, energy per token and dollars per million
    tokens.

    ``energy_per_token_j`` is this device's energy over its share of the measured steps'
    tokens (``tokens_per_step / world_size`` each step: under torchrun each rank measures
    its own card); ``usd_per_million_tokens`` the price of ``world_size`` cards at
    ``usd_per_hour`` each over the median tokens/s. Both None without a throughput (a
    case that stopped early), and the price None without ``usd_per_hour``. The worker
    drops the price for an emulated capacity (it ran on a bigger card's speed).
    """
    if telemetry is None or not telemetry.started:
        return metrics
    fields = telemetry.summary()
    tokens_per_s = metrics.tokens_per_s.median if metrics.tokens_per_s else None
    tokens = metrics.tokens_per_step / max(1, world_size) * metrics.measured_steps
    energy = fields["energy_j"]
    if tokens_per_s and energy is not None and tokens > 0:
        fields["energy_per_token_j"] = energy / tokens
    if tokens_per_s and usd_per_hour is not None:
        fields["usd_per_million_tokens"] = usd_per_hour * world_size / 3600 / tokens_per_s * 1e6
    return dataclasses.replace(metrics, **fields)
