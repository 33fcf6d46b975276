"""The advice that reads the diagnostics (issue 19), each rule on a planted Result: the real
cpu run's fastest case (tests/data/report) with the figures the rule reads planted in
memory, as the gate's tests plant their slowdowns. Each rule fires with its evidence on
one, and says nothing on another that must not fire it."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from report_fixtures import statuses

from gpubench.contracts.case import Flags
from gpubench.contracts.profiles import resolve_profile
from gpubench.contracts.result import Result, Stats
from gpubench.report.advice import (
    clocks_throttled,
    input_bound,
    kernel_bound,
    optimizer_bound,
    precision_not_reached,
)
from gpubench.report.document import Report, ReportData, build_report
from gpubench.report.recommendation import profile_verdicts
from gpubench.report.render import matrix_cell


@pytest.fixture(scope="module")
def ok() -> Result:
    """A real cpu case that trained to the end, with enough steps for a spread."""
    return max(
        (r for r in statuses() if r.profile.name == "cpu" and r.fits and r.metrics.step_time_s),
        key=lambda r: r.metrics.step_time_s.n if r.metrics.step_time_s else 0,
    )


def _planted(result: Result, **metrics: Any) -> Result:
    return dataclasses.replace(result, metrics=dataclasses.replace(result.metrics, **metrics))


def _phases(step_s: float, **shares: float) -> dict[str, Stats]:
    """Per-phase Stats whose medians are the given shares of ``step_s``."""
    return {name: Stats.of([share * step_s] * 8) for name, share in shares.items()}


def _on_gpu(result: Result, **metrics: Any) -> Result:
    return dataclasses.replace(
        _planted(result, **metrics), profile=resolve_profile("l4"), case=result.case
    )


def test_input_bound_fires_on_a_long_data_phase_with_the_gpu_idle(ok: Result) -> None:
    step = ok.metrics.step_time_s
    assert step is not None
    slow_loader = _phases(step.median, data=0.40, forward=0.3, backward=0.3)
    idle = _on_gpu(ok, phases=slow_loader, gpu_util=Stats.of([20.0, 25.0, 30.0, 22.0, 28.0]))
    advice = input_bound([idle])
    assert advice is not None and advice.title.startswith("Input-bound")
    (finding,) = advice.findings
    assert "(40.0 %)" in finding.figures and "GPU utilisation median 25 %" in finding.figures
    assert "num_workers" in advice.title and "pin_memory" in advice.title
    # the same data share with the GPU busy is not input-bound (the loader overlaps it)
    busy = _on_gpu(ok, phases=slow_loader, gpu_util=Stats.of([97.0] * 5))
    assert input_bound([busy]) is None
    # a fast loader: nothing to say
    assert input_bound([_planted(ok, phases=_phases(step.median, data=0.01))]) is None


def test_input_bound_on_a_cpu_reads_the_data_share_alone(ok: Result) -> None:
    step = ok.metrics.step_time_s
    assert step is not None and ok.metrics.gpu_util is None
    fired = input_bound([_planted(ok, phases=_phases(step.median, data=0.25))])
    assert fired is not None and fired.findings[0].figures.endswith("(25.0 %)")
    # a record before v7: no phases, no judgement
    assert input_bound([ok]) is None and ok.metrics.phases == {}


def test_throttled_clocks_name_the_reason_with_power_and_temperature(ok: Result) -> None:
    hot = _on_gpu(
        ok,
        throttle_reasons={"sw_power_cap": 0.64, "sw_thermal_slowdown": 0.2, "gpu_idle": 0.9},
        power_w=Stats.of([70.0, 72.0, 71.0]),
        temperature_c=Stats.of([78.0, 83.0, 80.0]),
        sm_clock_mhz=Stats.of([1410.0, 1200.0, 1500.0]),
    )
    advice = clocks_throttled([hot])
    assert advice is not None
    figures = advice.findings[0].figures
    assert figures.startswith("sw_power_cap in 64 % of samples, sw_thermal_slowdown in 20 %")
    assert "gpu_idle" not in figures  # idle is not a power or thermal limit
    assert "power median 71 W (max 72 W)" in figures
    assert "temperature median 80 °C (max 83)" in figures and "min 1,200" in figures
    # idle and application clocks, or a power cap in 5 % of samples: not throttled
    cool = _on_gpu(ok, throttle_reasons={"gpu_idle": 0.9, "sw_power_cap": 0.05})
    assert clocks_throttled([cool]) is None


def test_a_dominant_optimizer_phase_is_offload_bound_when_offloaded(ok: Result) -> None:
    step = ok.metrics.step_time_s
    assert step is not None
    heavy = _phases(step.median, forward=0.2, backward=0.3, optimizer=0.45)
    offloaded = dataclasses.replace(
        _planted(ok, phases=heavy),
        case=ok.case.replace(engine="deepspeed", flags=Flags(zero_stage=2, offload_optimizer=True)),
    )
    advice = optimizer_bound([offloaded])
    assert advice is not None and advice.title.startswith("Offload-bound")
    assert advice.findings[0].figures.endswith("(45.0 %) (optimizer states offloaded to the CPU)")
    plain = optimizer_bound([_planted(ok, phases=heavy)])
    assert plain is not None and plain.title.startswith("Optimizer-bound")
    assert "fused_adamw=True" in plain.title
    light = _phases(step.median, forward=0.4, backward=0.5, optimizer=0.05)
    assert optimizer_bound([_planted(ok, phases=light)]) is None


def test_low_mfu_on_a_busy_gpu_is_kernel_bound_and_names_the_switches_not_tried(
    ok: Result,
) -> None:
    busy = Stats.of([95.0, 97.0, 96.0])
    slow = _on_gpu(ok, mfu=0.08, gpu_util=busy)
    advice = kernel_bound([slow])
    assert advice is not None and advice.title.startswith("Kernel-bound")
    figures = advice.findings[0].figures
    assert figures.startswith("MFU 8.0 % with GPU utilisation median 96 %")
    assert "compile=True" in figures and "fused_adamw=True" in figures
    # an idle GPU at a low MFU is not kernel-bound (input-bound's question); a good MFU is fine
    assert kernel_bound([_on_gpu(ok, mfu=0.08, gpu_util=Stats.of([30.0] * 3))]) is None
    assert kernel_bound([_on_gpu(ok, mfu=0.45, gpu_util=busy)]) is None


def _auto(result: Result, reached: bool, achieved: float, stop: str) -> Result:
    tps = result.tokens_per_s
    assert tps is not None
    return dataclasses.replace(
        _planted(
            result,
            precision_achieved=achieved,
            precision_target=0.01,
            precision_confidence=0.95,
            precision_reached=reached,
            tokens_per_s_low=tps * (1 - achieved),
            tokens_per_s_high=tps * (1 + achieved),
            stop_reason=stop,
        ),
        case=result.case.replace(steps="auto", max_steps=200),
    )


def test_a_precision_target_not_reached_says_the_achieved_and_target_figures(
    ok: Result,
) -> None:
    short = _auto(ok, reached=False, achieved=0.034, stop="max_steps")
    advice = precision_not_reached([short])
    assert advice is not None and "raise max_steps or max_seconds" in advice.title
    figures = advice.findings[0].figures
    assert "known to ±3.4 %" in figures and "target ±1.0 %" in figures
    assert "stopped at max_steps=200 after" in figures
    # the target reached, or a fixed step count (no target): nothing to advise
    assert precision_not_reached([_auto(ok, True, 0.008, "precision")]) is None
    assert precision_not_reached([ok]) is None


def test_the_pick_compares_intervals_where_they_exist(ok: Result) -> None:
    """With intervals: a case short of its target wins only when its interval lies above the
    settled winner's; a record without one keeps the p10/p90 rule."""
    tps = ok.tokens_per_s
    assert tps is not None
    settled = _auto(ok, reached=True, achieved=0.008, stop="precision")
    faster = dataclasses.replace(
        _auto(ok, reached=False, achieved=0.05, stop="max_seconds"),
        case=ok.case.replace(steps="auto", max_steps=200, name="faster-unsettled"),
        metrics=dataclasses.replace(
            _auto(ok, reached=False, achieved=0.05, stop="max_seconds").metrics,
            tokens_per_s=dataclasses.replace(ok.metrics.tokens_per_s, median=tps * 1.03),
            tokens_per_s_low=tps * 0.98,
            tokens_per_s_high=tps * 1.08,
        ),
    )
    (verdict,) = profile_verdicts([settled, faster])
    assert verdict.recommendations == (settled,)
    reason = next(s.reason for s in verdict.standings if s.result is faster)
    assert reason.startswith("precision target not reached: ±5.0 % > ±1.0 %")
    assert "interval's low end" in reason and "interval's high end" in reason
    # its whole interval above the settled one's: no noise explains that, it wins
    clear = dataclasses.replace(
        faster,
        metrics=dataclasses.replace(
            faster.metrics, tokens_per_s_low=tps * 1.02, tokens_per_s_high=tps * 1.2
        ),
    )
    (verdict,) = profile_verdicts([settled, clear])
    assert verdict.recommendations == (clear,)


@pytest.fixture(scope="module")
def diagnosed_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Report, str, str]:
    from report_fixtures import diagnosed

    from gpubench.report.write import write_report

    out = tmp_path_factory.mktemp("diagnosed")
    data = ReportData([*statuses(), diagnosed()])
    write_report(data, out / "report.html", out / "report.md")
    return build_report(data), (out / "report.html").read_text(), (out / "report.md").read_text()


def test_the_report_shows_the_interval_phases_telemetry_and_energy(
    diagnosed_report: tuple[Report, str, str],
) -> None:
    report, html, markdown = diagnosed_report
    row = next(r for r in report.matrix if r["case"] == "planted-diagnostics")
    assert matrix_cell(row, "precision_achieved") == "±3.4 (target ±1.0 not reached)"
    assert (
        matrix_cell(row, "energy_per_token_j") == "12.3"
        and matrix_cell(row, "usd_per_million_tokens") == "0.42"
    )
    headings = [heading for _, heading, _ in report.matrix_columns]
    assert {"interval, ±%", "GPU util, %", "energy, mJ/token", "$/Mtok"} <= set(headings)
    # the phase chart, a stacked bar per case that has phases; the others are counted
    phases = report.charts["Time per phase"]
    assert "ms per optimizer step" in phases.svg and "optimizer" in phases.svg
    assert "without a phase split are not drawn" in phases.caption
    detail = next(d for d in report.details if d.result.case.name == "planted-diagnostics")
    assert [p.phase for p in detail.phases] == [
        "data",
        "forward",
        "backward",
        "clip",
        "optimizer",
        "rest",
    ]
    assert detail.phases[0].share == "40.0"
    assert detail.interval.endswith(
        "target ±1.0 % NOT reached after "
        f"{detail.result.metrics.measured_steps} measured steps "
        "(max_steps was reached first)"
    )
    assert detail.telemetry_svg is not None and "GPU utilisation, %" in detail.telemetry_svg
    assert "power, W" in detail.telemetry_svg and "temperature, °C" in detail.telemetry_svg
    assert ("energy per token", "12.3 mJ") in detail.energy
    assert 'data-chart="telemetry ' in html and "How sure: median" in html
    section = markdown.split("### planted-diagnostics", 1)[1].split("\n### ", 1)[0]
    assert "| data | " in section and "| power, W | " in section
    assert "- cost per million tokens: $0.42 at the profile's $" in section
    # the advice reads the same figures: input-bound, throttled, precision not reached
    titles = [a.title.split(":")[0] for a in report.advice]
    assert {
        "Input-bound",
        "Clocks throttled by power or temperature",
        "Precision target not reached",
    } <= set(titles)


def test_a_record_without_the_diagnostics_renders_as_before() -> None:
    report = build_report(ReportData(statuses()))
    headings = {heading for _, heading, _ in report.matrix_columns}
    assert not headings & {"interval, ±%", "GPU util, %", "energy, mJ/token", "$/Mtok"}
    assert "Time per phase" not in report.charts
    for detail in report.details:
        assert not (detail.interval or detail.phases or detail.readings or detail.energy)
        assert detail.telemetry_svg is None


def test_an_auto_case_with_too_few_steps_for_an_interval_says_so(ok: Result) -> None:
    """The worker computes no interval from fewer than 10 measured steps; a steps="auto"
    case cut that short by max_seconds reads "no interval", not a precision figure."""
    cut = dataclasses.replace(
        _planted(
            ok,
            precision_target=0.01,
            precision_reached=False,
            stop_reason="max_seconds",
            measured_steps=7,
        ),
        case=ok.case.replace(steps="auto", max_seconds=10.0),
    )
    advice = precision_not_reached([cut])
    assert advice is not None and advice.span == ""
    assert advice.findings[0].figures == (
        "no interval: stopped at max_seconds=10 after 7 measured steps, too few for one; "
        "target ±1.0 %"
    )
