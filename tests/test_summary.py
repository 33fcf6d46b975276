"""The end-of-session summary table: which figures its columns show, and that it fits the
terminal."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from report_fixtures import QUIET, statuses

from gpubench.contracts.case import make_case
from gpubench.contracts.conditions import MachineLoad
from gpubench.contracts.profiles import resolve_profile
from gpubench.contracts.result import Estimate, Metrics, Result, Stats
from gpubench.session.summary import format_summary, summary_frame
from gpubench.storage import read_results

CPU = resolve_profile("cpu")


def _result(step_times: list[float], tokens_per_s: list[float]) -> Result:
    return Result(
        case=make_case(model="gpt-tiny"),
        profile=CPU,
        status="ok",
        metrics=Metrics(step_time_s=Stats.of(step_times), tokens_per_s=Stats.of(tokens_per_s)),
    )


def test_cv_column_is_the_step_time_cv_without_a_noisy_marker() -> None:
    # step times with a CV of 10 % beside tokens/s with none: the column shows the step
    # time's CV, not 0.0, and no "!": how sure the median is, the ±% column says
    noisy = _result([0.9, 1.1, 0.9, 1.1, 0.9, 1.1], [1000.0] * 6)
    steps = noisy.metrics.step_time_s
    assert steps is not None and noisy.metrics.noisy  # still derived, for readers of the JSON
    assert summary_frame([noisy])["cv%"].tolist() == [f"{100 * steps.cv:.1f}"]
    text = format_summary([noisy], width=200)
    assert "cv% = step-time coefficient of variation" in text
    assert "noisy" not in text


def test_precision_column_and_an_unreached_target_said_below_the_table() -> None:
    base = _result([1.0] * 30, [1000.0] * 30)
    fixed = dataclasses.replace(
        base,
        metrics=dataclasses.replace(
            base.metrics, precision_achieved=0.004, precision_confidence=0.95, stop_reason="steps"
        ),
    )
    missed = dataclasses.replace(
        base,
        case=base.case.replace(steps="auto", max_steps=300, name="noisy-auto"),
        metrics=dataclasses.replace(
            base.metrics,
            measured_steps=300,
            precision_achieved=0.0234,
            precision_target=0.01,
            precision_reached=False,
            stop_reason="max_steps",
        ),
    )
    assert summary_frame([fixed, missed])["±%"].tolist() == ["±0.4", "±2.3!"]
    text = format_summary([fixed, missed], width=120)
    assert all(len(line) <= 120 for line in text.splitlines())
    flat = " ".join(text.split())
    assert "±% = how sure tok/s is: the half-width of its 95 % confidence interval" in flat
    assert '! = the steps="auto" target not reached' in flat
    assert (
        "precision: noisy-auto: tok/s known to ±2.3 %, target ±1 % not reached in 300 steps "
        "(stopped at max_steps=300)" in flat
    )
    assert "not reached" not in format_summary([fixed], width=120)
    assert "±2.3 % (target ±1 % not reached)" in missed.describe()


def test_no_spread_from_fewer_than_five_measured_steps() -> None:
    """Two steps whose CV is 10 % show no CV, no p10-p90 and no "!": a spread from two
    steps is not a figure."""
    few = _result([0.9, 1.1], [900.0, 1100.0])
    assert not few.metrics.noisy  # the record itself judges no CV from 2 steps
    row = summary_frame([few]).iloc[0]
    assert (row["cv%"], row["p10-p90"], row["steps"]) == ("-", "-", "2")
    assert "! =" not in format_summary([few], width=200)


def test_a_case_that_never_measured_shows_dashes_and_no_footnote() -> None:
    oom = Result(case=make_case(model="gpt-tiny"), profile=CPU, status="oom")
    assert summary_frame([oom])["cv%"].tolist() == ["-"]
    assert "cv% =" not in format_summary([oom])


def test_an_oom_written_by_v2_with_a_throughput_shows_none() -> None:
    record = json.loads((Path(__file__).parent / "data" / "result-v2-c5105cf-oom.json").read_text())
    assert record["metrics"]["tokens_per_s"]["median"] > 0  # what v2 put in the summary
    row = summary_frame([Result.from_dict(record)]).iloc[0]
    assert (row["status"], row["tok/s"], row["p10-p90"], row["step ms"]) == ("oom", "-", "-", "-")


def test_mfu_column_shows_the_worker_s_figure_and_a_dash_without_one() -> None:
    without = _result([1.0], [1000.0])  # a cpu profile: no peak, no MFU
    measured = Result(
        case=without.case,
        profile=resolve_profile("a100-80gb"),
        status="ok",
        metrics=Metrics(tokens_per_s=Stats.of([1000.0]), mfu=0.4123),
    )
    assert summary_frame([measured, without])["mfu%"].tolist() == ["41.2", "-"]


def _wide_run() -> list[Result]:
    """Every status on three profiles, a smoke run, long ids (a DeepSpeed case's is 55
    characters), an estimate error and a prediction: the widest a table gets."""
    results = [*statuses(), *read_results(QUIET[7])]
    ok = next(r for r in results if r.status == "ok")
    estimate = Estimate(2**30, 2**33, "fits", 2**33 - 2**30, "formulas", error_pct=12.5)
    predicted = dataclasses.replace(
        ok,
        case=ok.case.replace(name="predicted-" + "x" * 60),
        status="over_capacity",
        predicted=True,
        estimate=dataclasses.replace(estimate, verdict="over_capacity"),
    )
    return [*results, dataclasses.replace(ok, estimate=estimate), predicted]


@pytest.mark.parametrize("width", [120, 100, 80])
def test_the_table_fits_the_terminal_width(width: int) -> None:
    results = _wide_run()
    text = format_summary(results, width=width)
    assert max(len(line) for line in text.splitlines()) <= width
    # every case id is whole, on the row's line or on a line of its own
    for result in results:
        assert any(line.startswith(result.case.id) for line in text.splitlines()), result.case.id


def test_at_columns_120_no_line_is_longer_and_the_main_figures_stay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "120")  # what pytest's terminal writer reads too
    text = format_summary(_wide_run())
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 120
    header = lines[0].split()
    for column in ("case", "profile", "status", "flag", "tok/s", "peak", "loss", "time"):
        assert column in header, column
    assert "not shown at 120 columns:" in text  # what it left out, it says


def test_a_short_run_keeps_every_column_where_they_fit() -> None:
    results = read_results(QUIET[7])
    text = format_summary(results, width=400)
    assert "not shown" not in text
    assert "p10-p90" in text.splitlines()[0] and "test" in text.splitlines()[0]


def test_a_session_s_summary_at_columns_120(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The table as the plugin writes it at the end of a session (estimate only: no worker)."""
    monkeypatch.setenv("COLUMNS", "120")
    pytester.makepyfile(
        test_wide="""
        import gpubench

        @gpubench.matrix(model="gpt2-small", precision="bf16", seq_len=1024, steps=50,
                         max_warmup_steps=100, batch_size=[4, 8, 16], attention=["sdpa", "math"],
                         grad_ckpt=[False, True], requires_gpu=True)
        def test_cell(gpubench_result):
            pass
        """
    )
    result = pytester.runpytest("--gpu-profile", "rtx3060,h100-sxm", "--gpubench-estimate-only")
    result.assert_outcomes(passed=24)
    lines = result.stdout.lines
    start = next(i for i, line in enumerate(lines) if "gpubench summary" in line)
    end = next(i for i, line in enumerate(lines) if line.startswith("results: "))
    table = lines[start + 1 : end]
    assert len(table) > 24
    assert max(len(line) for line in table) <= 120, "\n".join(table)


def test_a_busy_or_cold_case_is_said_below_the_table_and_a_quiet_one_is_not() -> None:
    quiet = dataclasses.replace(
        _result([1.0, 1.0], [1000.0, 1000.0]),
        machine_load=MachineLoad(window_s=1, cpu_count=2, case_cpu_cores=1.9, other_cpu_cores=0.1),
    )
    busy = dataclasses.replace(
        quiet,
        machine_load=MachineLoad(
            window_s=1,
            cpu_count=2,
            case_cpu_cores=1.0,
            other_cpu_cores=1.0,
            case_cpu_wait_cores=0.9,
        ),
    )
    cold = dataclasses.replace(quiet, cold_start=["built DeepSpeed op(s) cpu_adam into /x"])
    assert "busy" not in format_summary([quiet]) and "cold" not in format_summary([quiet])
    text = " ".join(format_summary([busy, cold]).split())
    assert "gpt-tiny-fp32: machine busy during the measured steps: 1.0 of 2 cores busy" in text
    assert "a tokens/s drop here is not called a regression" in text
    assert "cold start: built DeepSpeed op(s) cpu_adam into /x; not saved as a baseline" in text
    assert all(len(line) <= 120 for line in format_summary([busy, cold]).splitlines()[3:])
