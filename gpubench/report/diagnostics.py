"""A case's diagnostics as its detail shows them: how sure (the median tokens/s's interval,
and whether steps="auto" reached its target), why (time per phase) and what the machine did
meanwhile (telemetry, energy and cost). Rows of written figures, the same for the HTML and
the Markdown; empty where the Result has none of them (a record before schema v7, a
prediction), so such a case renders as before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gpubench.contracts.result import Result, Stats
from gpubench.report import figures
from gpubench.report.charts import PHASE_ORDER

STOP_REASONS = {
    "precision": "the precision target was reached",
    "max_steps": "max_steps was reached first",
    "max_seconds": "max_seconds was reached first",
    "steps": "the fixed step count",
}


@dataclass(frozen=True)
class PhaseRow:
    phase: str
    median_ms: str
    p90_ms: str
    share: str  # the phase's median over the median step, per cent


@dataclass(frozen=True)
class ReadingRow:
    reading: str  # what and its unit: "power, W"
    median: str
    p90: str
    max: str


def interval_sentence(result: Result) -> str:
    """``median 4,870 tok/s, 95 % interval 4,820-4,910 (±0.9 %); target ±1.0 % reached
    after 240 measured steps``; "" without an interval."""
    m = result.metrics
    if m.precision_achieved is None or m.tokens_per_s_low is None or m.tokens_per_s is None:
        return ""
    level = figures.percent(m.precision_confidence, 0) if m.precision_confidence else "-"
    text = (
        f"median {figures.rate(m.tokens_per_s.median)} tok/s, {level} % interval "
        f"{figures.rate_range(m.tokens_per_s_low, m.tokens_per_s_high)} "
        f"(±{figures.percent(m.precision_achieved)} %)"
    )
    if m.precision_reached is not None and m.precision_target is not None:
        reached = "reached" if m.precision_reached else "NOT reached"
        text += f"; target ±{figures.percent(m.precision_target)} % {reached}"
    text += f" after {m.measured_steps} measured steps"
    if m.stop_reason in STOP_REASONS and m.stop_reason != "steps":
        text += f" ({STOP_REASONS[m.stop_reason]})"
    return text


def phase_rows(result: Result) -> tuple[PhaseRow, ...]:
    """Each phase's median and p90 ms per step and its share of the median step, in the
    order a step runs them."""
    m = result.metrics
    step = m.step_time_s.median if m.step_time_s else None
    names = [p for p in PHASE_ORDER if p in m.phases] + [
        p for p in m.phases if p not in PHASE_ORDER
    ]
    return tuple(
        PhaseRow(
            name,
            figures.milliseconds(m.phases[name].median),
            figures.milliseconds(m.phases[name].p90),
            figures.percent(m.phases[name].median / step) if step else figures.MISSING,
        )
        for name in names
    )


def _plain(value: float) -> str:
    return f"{value:,.0f}"


# (Metrics field, reading and unit, how a value is written)
READINGS: tuple[tuple[str, str, Callable[[float], str]], ...] = (
    ("gpu_util", "GPU utilisation, %", _plain),
    ("gpu_memory_used_bytes", "GPU memory used (device), GiB", figures.gib),
    ("power_w", "power, W", _plain),
    ("temperature_c", "temperature, °C", _plain),
    ("sm_clock_mhz", "SM clock, MHz", _plain),
    ("cpu_util", "CPU utilisation (process tree; 100 = one core), %", _plain),
)


def reading_rows(result: Result) -> tuple[ReadingRow, ...]:
    """The telemetry's summaries over the measured steps: median, p90, max."""
    rows = []
    for name, reading, write in READINGS:
        stats: Stats | None = getattr(result.metrics, name)
        if stats is not None:
            rows.append(
                ReadingRow(reading, write(stats.median), write(stats.p90), write(stats.max))
            )
    return tuple(rows)


def energy_facts(result: Result) -> tuple[tuple[str, str], ...]:
    """Energy, cost, throttling and disk figures, each (what, value), where measured."""
    m = result.metrics
    facts = []
    if m.energy_j is not None:
        facts.append(("energy over the measured steps", f"{m.energy_j:,.0f} J ({m.energy_method})"))
    if m.energy_per_token_j is not None:
        facts.append(("energy per token", f"{figures.number(1000 * m.energy_per_token_j)} mJ"))
    if m.usd_per_million_tokens is not None:
        facts.append(
            (
                "cost per million tokens",
                f"${m.usd_per_million_tokens:,.4g} at the profile's "
                f"${figures.usd(result.profile.usd_per_hour)}/h",
            )
        )
    active = {k: v for k, v in m.throttle_reasons.items() if v > 0}
    if active:
        facts.append(
            (
                "clock-event reasons (share of samples)",
                ", ".join(
                    f"{k} {figures.percent(v, 0)} %"
                    for k, v in sorted(active.items(), key=lambda kv: -kv[1])
                ),
            )
        )
    for name, what in (("disk_read_bytes", "disk read"), ("disk_write_bytes", "disk written")):
        value = getattr(m, name)
        if value is not None:
            facts.append((what, f"{value / 2**20:,.1f} MiB"))
    if m.telemetry_interval_s:
        facts.append(("telemetry sampled every", f"{1000 * m.telemetry_interval_s:,.0f} ms"))
    return tuple(facts)
