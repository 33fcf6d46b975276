"""The end-of-session summary table: which figures its columns show."""

from __future__ import annotations

import dataclasses

from gpubench.contracts.case import make_case
from gpubench.contracts.conditions import MachineLoad
from gpubench.contracts.profiles import resolve_profile
from gpubench.contracts.result import Metrics, Result, Stats
from gpubench.session.summary import format_summary, summary_frame

CPU = resolve_profile("cpu")


def _result(step_times: list[float], tokens_per_s: list[float]) -> Result:
    return Result(
        case=make_case(model="gpt-tiny"),
        profile=CPU,
        status="ok",
        metrics=Metrics(step_time_s=Stats.of(step_times), tokens_per_s=Stats.of(tokens_per_s)),
    )


def test_cv_column_is_the_step_time_cv_the_noisy_marker_judges() -> None:
    # step times with a CV of 10 % beside tokens/s with none: the column must show the
    # step time's (the "!" is Metrics.noisy, which judges the step time), not 0.0
    noisy = _result([0.9, 1.1, 0.9, 1.1], [1000.0, 1000.0, 1000.0, 1000.0])
    steps = noisy.metrics.step_time_s
    assert steps is not None and noisy.metrics.noisy
    assert summary_frame([noisy])["cv%"].tolist() == [f"{100 * steps.cv:.1f}!"]

    steady = _result([1.0, 1.0, 1.0, 1.0], [900.0, 1100.0, 900.0, 1100.0])
    assert not steady.metrics.noisy
    assert summary_frame([steady])["cv%"].tolist() == ["0.0"]

    text = format_summary([noisy, steady])
    assert "cv% = step-time coefficient of variation" in text
    assert "! = above 5 %: a noisy measurement" in text
    assert "! =" not in format_summary([steady])  # no marker, no footnote for it
    assert "cv% = step-time" in format_summary([steady])


def test_a_case_that_never_measured_shows_dashes_and_no_footnote() -> None:
    oom = Result(case=make_case(model="gpt-tiny"), profile=CPU, status="oom")
    assert summary_frame([oom])["cv%"].tolist() == ["-"]
    assert "cv% =" not in format_summary([oom])


def test_an_oom_written_by_v2_with_a_throughput_shows_none() -> None:
    import json
    from pathlib import Path

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
