"""The report rendered from saved results: every status, several profiles, with and without a
baseline, markup in a case name, projections, advice and recommended.json."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import pytest
from report_fixtures import MARKUP, QUIET, RUN_CPU, RUN_SUITES, diagnosed, statuses

import gpubench.session.summary  # noqa: F401  (numpy under pandas: import once, before pytester)
from gpubench.baseline.offline import judge_runs
from gpubench.baseline.rules import GateRules
from gpubench.baseline.sources import load_histories
from gpubench.baseline.store import save_runs
from gpubench.contracts.case import Case
from gpubench.contracts.plausibility import implausible_reasons
from gpubench.contracts.profiles import resolve_profile
from gpubench.contracts.result import Estimate, Metrics
from gpubench.report.advice import advise, implausible_measurement, loss_not_falling
from gpubench.report.document import Report, ReportData, build_report
from gpubench.report.load import load_runs
from gpubench.report.projection import (
    ProjectionError,
    ProjectionInputs,
    parse_count,
    projection_frame,
    projection_from_table,
)
from gpubench.report.recommendation import (
    GO,
    NOT_RANKED,
    PREDICTED_FIT,
    PREDICTED_NO_GO,
    profile_verdicts,
)
from gpubench.report.render import markdown_code, markdown_text, render_html, render_markdown
from gpubench.report.trust import distrust, has_spread
from gpubench.report.write import write_report
from gpubench.session.summary import summary_frame
from gpubench.storage import read_results

ALL_STATUSES = ("ok", "over_capacity", "oom", "diverged", "timeout", "crashed")


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, dict]:
    out = tmp_path_factory.mktemp("report")
    paths = write_report(ReportData(statuses()), out / "report.html", out / "report.md")
    assert paths.recommended is not None
    return (
        (out / "report.html").read_text(),
        (out / "report.md").read_text(),
        json.loads(paths.recommended.read_text()),
    )


def test_the_fixtures_hold_every_status_on_three_profiles() -> None:
    results = statuses()
    assert {r.status for r in results} == set(ALL_STATUSES)
    assert {r.profile.name for r in results} == {"cpu", "small-cpu", "l4"}


def test_every_case_and_status_is_in_the_matrix_and_the_details(
    written: tuple[str, str, dict],
) -> None:
    html, markdown, _ = written
    matrix = html.split('id="matrix"', 1)[1].split("</section>", 1)[0]
    for label in ("PASS", "PASS*", "OOM", "diverged", "timeout", "crashed"):
        assert f">{label}</td>" in matrix, label
        assert f"| {label.replace('*', chr(92) + '*')} |" in markdown, label
    for result in statuses():
        assert html.count(f'<details id="case-{result.profile.name}') >= 1
    assert "RuntimeError" in html and "forward raises on purpose" in html  # the crash
    assert "Timeout" in html  # the timeout's error type
    assert "out of memory under" in html  # why the OOM case lost


def test_markup_in_a_case_name_is_text_in_html_and_markdown(
    written: tuple[str, str, dict],
) -> None:
    html, markdown, _ = written
    assert any(r.case.id == MARKUP for r in statuses())
    assert MARKUP not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # Markdown shows a code block verbatim (the rerun command quotes the pytest id there);
    # everywhere else the name is text: entities, not a tag
    fenced = re.findall(r"^(`{3,})(?:bash)?\n(.*?)\n\1$", markdown, flags=re.S | re.M)
    outside = re.sub(r"^(`{3,})(?:bash)?\n.*?\n\1$", "", markdown, flags=re.S | re.M)
    assert any(MARKUP in block for _, block in fenced)
    assert MARKUP not in outside
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in outside
    assert html.count("<script") == 1  # the page's own sorting script, nothing else


def test_each_profile_has_a_verdict_and_the_recommendation_is_the_fastest_that_fits() -> None:
    verdicts = {v.profile: v for v in profile_verdicts(statuses())}
    assert set(verdicts) == {"cpu", "small-cpu", "l4"}
    assert not verdicts["l4"].go  # its only case is over capacity
    cpu = verdicts["cpu"]
    (best,) = cpu.recommendations  # gpt-tiny; the broken model's workload is a NO-GO
    assert cpu.go and best.metrics.tokens_per_s is not None
    # the fixture's batch-8 case is noisy (the machine was busy), but even its p10 beats the
    # steady cases' p90: no noise explains that gap, so it wins, and the page says it is noisy
    steady = [r for r in statuses() if r.profile.name == "cpu" and r.fits and not r.metrics.noisy]
    assert best.case.batch_size == 8 and best.metrics.noisy and steady
    assert all(best.metrics.tokens_per_s.p10 > (r.metrics.tokens_per_s.p90) for r in steady)
    # a noisy case whose p10 does not beat the steady winner's p90 loses, and says why
    slow = dataclasses.replace(
        best,
        metrics=dataclasses.replace(
            best.metrics,
            tokens_per_s=dataclasses.replace(best.metrics.tokens_per_s, p10=1.0),
        ),
    )
    verdict = profile_verdicts([slow, *steady])[0]
    assert verdict.recommendations[0] in steady
    assert next(s.reason for s in verdict.standings if s.result is slow).startswith("noisy: ")
    reasons = {s.result.status: s.reason for s in cpu.standings if s.reason}
    assert reasons["diverged"].startswith("diverged")
    assert reasons["timeout"] == "timeout"
    assert reasons["crashed"] == "crashed (RuntimeError)"
    small = {s.result.status: s.reason for s in verdicts["small-cpu"].standings}
    assert small["oom"] == "out of memory under 0.06 GiB"


def test_a_case_inside_the_safety_margin_is_not_recommended() -> None:
    """On a GPU profile: peak at 95 % of capacity fits, but not with a 10 % margin. (On a cpu
    profile the kernel's cap counts above the worker's imports, so a PASS fits it.)"""
    ok = next(r for r in statuses() if r.profile.name == "cpu" and r.fits)
    l4 = resolve_profile("l4")
    tight = dataclasses.replace(
        ok,
        profile=l4,
        metrics=dataclasses.replace(
            ok.metrics,
            capacity_bytes=l4.memory_bytes,
            peak_reserved_bytes=int(0.95 * l4.memory_bytes),
        ),
    )
    verdict = profile_verdicts([tight], margin=0.10)[0]
    assert not verdict.go
    assert verdict.standings[0].reason.startswith("inside the 10 % safety margin: peak 21.")
    assert profile_verdicts([tight], margin=0.04)[0].go
    assert profile_verdicts([ok], margin=0.99)[0].go  # cpu: the margin is not checked


def test_recommended_json_loads_back_into_the_case_and_its_figures(
    written: tuple[str, str, dict],
) -> None:
    _, _, record = written
    assert record["format"] == "gpubench-recommended" and record["version"] == 2
    by_profile = {entry["profile"]: entry for entry in record["recommended"]}
    assert set(by_profile) == {"cpu", "small-cpu"}
    entry = by_profile["cpu"]
    assert entry["workload"] == {
        "model": "gpt-tiny",
        "seq_len": 32,
        "data": "learnable",
        "model_config": {},
        "vocab_size": None,
    }
    (best,) = profile_verdicts(statuses())[0].recommendations
    assert Case.from_dict(entry["case"]) == best.case
    assert (entry["model"], entry["batch_size"], entry["precision"], entry["engine"]) == (
        best.case.model,
        best.case.batch_size,
        best.case.flags.precision,
        best.case.engine,
    )
    assert entry["measured"]["tokens_per_s_median"] == best.tokens_per_s
    assert entry["measured"]["peak_memory_bytes"] == best.peak_memory_bytes


def test_a_figure_reads_the_same_in_the_terminal_markdown_and_html(
    written: tuple[str, str, dict],
) -> None:
    html, markdown, _ = written
    fast = [r for r in statuses() if r.tokens_per_s and r.tokens_per_s >= 1000]
    assert fast  # a figure with a thousands separator
    row = summary_frame(fast).iloc[0]
    assert "," in row["tok/s"]
    assert f">{row['tok/s']}</td>" in html
    assert f"| {row['tok/s']} |" in markdown
    assert f">{row['peak GiB']}</td>" in html or f"{row['peak GiB']}</td>" in html


def test_the_matrix_shows_mfu_and_flags_the_implausible(
    written: tuple[str, str, dict], tmp_path: Path
) -> None:
    html, markdown, _ = written
    # no case of the fixtures has an MFU (cpu profiles, an emulated card): no column of -
    assert "MFU, %" not in markdown and "MFU, %" not in html
    # the planted over_capacity case, a cpu run's gpt-mini on an emulated l4: no MFU against
    # the l4's peak (it ran at another device's speed), and a small model is not held to
    # the GPU floor either
    planted = next(r for r in statuses() if r.status == "over_capacity")
    assert implausible_reasons(planted) == []
    # a planted defect: a run whose declared size is not what it built is flagged
    ok = next(r for r in statuses() if r.status == "ok" and r.metrics.n_params)
    wrong = dataclasses.replace(
        ok,
        case=ok.case.replace(name="planted-wrong-model"),
        metrics=dataclasses.replace(ok.metrics, declared_params=10 * ok.metrics.n_params),
    )
    (reason,) = implausible_reasons(wrong)
    assert "the benchmark would measure a different model than declared" in reason
    paths = write_report(ReportData([wrong]), tmp_path / "r.html", tmp_path / "r.md")
    assert paths.html.exists()
    flagged_md, flagged_html = (tmp_path / "r.md").read_text(), (tmp_path / "r.html").read_text()
    assert "(implausible)" in flagged_md and "| MFU, % |" in flagged_md  # the flag's column
    assert "a different model than declared" in flagged_html


def test_without_a_baseline_or_projection_inputs_those_sections_are_absent(
    written: tuple[str, str, dict],
) -> None:
    html, markdown, _ = written
    assert 'id="baseline"' not in html and "## Baseline comparison" not in markdown
    assert 'id="projections"' not in html and "## Projections" not in markdown


@pytest.fixture(scope="module")
def smoke_with_baseline(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, list]:
    """quiet-8 judged against a baseline file holding quiet-3..7, as `gpubench report
    --baseline` does it."""
    tmp = tmp_path_factory.mktemp("baseline")
    for path in QUIET[2:7]:
        save_runs(tmp / "cpu" / "test_cpu_smoke.json", read_results(path))
    histories = load_histories(tmp)
    verdicts = judge_runs(histories, load_histories(QUIET[7]), GateRules())
    report = build_report(ReportData(read_results(QUIET[7]), verdicts, histories))
    return render_html(report), render_markdown(report), verdicts


def test_a_run_with_a_baseline_shows_one_table_and_each_trend_in_the_case(
    smoke_with_baseline: tuple[str, str, list],
) -> None:
    html, markdown, verdicts = smoke_with_baseline
    section = html.split('id="baseline"', 1)[1].split("</section>", 1)[0]
    assert len(verdicts) == 10
    assert section.count("<table") == 1  # one table across cases, not one per case
    for verdict in verdicts:
        assert f'{verdict.case_id}</a><br><span class="decision-{verdict.decision}">' in section
    assert "<th>threshold</th>" in section  # the gate's rows carry one: it is shown
    assert "vs the spread of 5 baseline runs" in section  # the gate's own rule text
    cases = html.split('id="cases"', 1)[1]
    assert cases.count('data-chart="trend ') == 10  # a trend per case: 5 baseline runs + this
    table = markdown.split("## Baseline comparison", 1)[1].split("\n## ", 1)[0]
    assert table.count("| tokens\\_per\\_s |") == 10  # Markdown-escaped underscores
    assert sum(line.startswith("| ---") for line in table.splitlines()) == 1


def test_the_baseline_table_shows_the_columns_the_gate_rows_have() -> None:
    """A column is there when some row has a value in it: a threshold the gate's rows do
    not carry leaves no empty column, one they carry is shown."""
    from gpubench.report.comparison import CaseComparison, columns

    verdict = judge_runs(load_histories(QUIET[2]), load_histories(QUIET[3]), GateRules())[0]
    with_threshold = CaseComparison(verdict, ({"metric": "m", "threshold": "10%"},), None, None)
    without = CaseComparison(verdict, ({"metric": "m", "old": "1"},), None, None)
    assert [key for key, _, _ in columns([with_threshold])] == ["metric", "threshold"]
    assert [key for key, _, _ in columns([without])] == ["metric", "old"]


def test_regressions_come_first_in_the_comparison() -> None:
    """quiet-1 (a slower stretch of the machine) judged against quiet-4..8."""
    histories: dict = {}
    for path in QUIET[3:8]:
        for key, runs in load_histories(path).items():
            histories.setdefault(key, []).extend(runs)
    verdicts = judge_runs(histories, load_histories(QUIET[0]), GateRules(confirm=0))
    html = render_html(build_report(ReportData(read_results(QUIET[0]), verdicts, histories)))
    section = html.split('id="baseline"', 1)[1]
    decisions = re.findall(r'<span class="decision-(\w+)">', section)
    assert len(decisions) == 10
    assert decisions == sorted(decisions, key=["regression", "improvement", "unchanged"].index)


def test_projections_from_measured_tokens_per_s_with_checkpoints_and_a_limit() -> None:
    results = [r for r in statuses() if r.profile.name == "small-cpu" and r.ran]
    inputs = ProjectionInputs(
        train_tokens=1e10,
        epochs=(3, 5),
        dataset_tokens=1e8,
        checkpoint_interval_steps=1000,
        checkpoint_save_s=30,
        max_hours=72,
    )
    report = build_report(ReportData(results, projection=inputs))
    rows = {row["target"]: row for row in report.projections}
    assert set(rows) == {"10B tokens", "3 epochs", "5 epochs"}
    row, result = rows["10B tokens"], results[0]
    steps = 1e10 / result.metrics.tokens_per_step
    expected = 1e10 / (result.tokens_per_s or 1) / 3600 + math.floor(steps / 1000) * 30 / 3600
    assert row["hours"] == pytest.approx(expected)
    assert row["cost_usd"] == pytest.approx(expected * 0.05)  # small-cpu's usd_per_hour
    assert row["over_limit"] and expected > 72  # a CPU's tokens/s: far beyond three days
    html = render_html(report)
    assert 'id="projections"' in html and "(exceeds 72.0 h)" in html


def test_a_case_on_two_gpus_rents_two_for_its_projected_cost() -> None:
    """A profile prices one card; a case with nproc=2 runs on two (Metrics'
    usd_per_million_tokens charges them the same way)."""
    one = next(r for r in statuses() if r.profile.name == "small-cpu" and r.ran)
    two = dataclasses.replace(one, case=one.case.replace(nproc=2))
    inputs = ProjectionInputs(train_tokens=1e9)
    rows = projection_frame([one, two], inputs).to_dict("records")
    assert rows[1]["usd_per_hour"] == pytest.approx(2 * rows[0]["usd_per_hour"])
    assert rows[1]["cost_usd"] == pytest.approx(2 * rows[0]["cost_usd"])


def test_projection_inputs_are_checked_at_the_edge() -> None:
    assert parse_count("2.5B", "x") == 2.5e9
    assert parse_count("3e8", "x") == 3e8
    assert parse_count(300_000, "x") == 300_000
    with pytest.raises(ProjectionError, match=r"x='lots': expected a number of tokens"):
        parse_count("lots", "x")
    with pytest.raises(ProjectionError, match="need the data set's size"):
        ProjectionInputs(epochs=(3,))
    with pytest.raises(ProjectionError, match="checkpoint_interval_steps and checkpoint_save_s"):
        ProjectionInputs(train_tokens=1e9, checkpoint_save_s=30)
    with pytest.raises(ProjectionError, match=r"unknown key\(s\) tokens; valid: train_tokens"):
        projection_from_table({"tokens": 5}, "[tool.gpubench.projection]")


def test_advice_names_its_rule_and_figures() -> None:
    results = [r for r in statuses() if r.profile.name == "cpu"]
    headroom = {a.title: a for a in advise(results)}["Memory is under-used: a larger batch fits"]
    small = next(
        f for f in headroom.findings if f.result.case.batch_size == 2 and not f.result.case.name
    )
    assert "batch 8 measured to fit" in small.figures
    assert headroom.rule == "peak memory below 50 % of the profile's capacity"

    ok = next(r for r in results if r.fits)
    assert implausible_measurement([ok]) is None  # the cpu profile states no peak FLOP/s
    slow_chip = dataclasses.replace(ok, profile=dataclasses.replace(ok.profile, fp32_flops=1e3))
    fired = implausible_measurement([slow_chip])  # a record without reasons: derived now
    assert fired is not None and "above the card's peak" in fired.findings[0].figures
    recorded = dataclasses.replace(ok, implausible=["a reason the worker recorded."])
    fired = implausible_measurement([recorded])  # what the worker recorded is what is shown
    assert fired is not None and fired.findings[0].figures == "a reason the worker recorded."

    assert loss_not_falling([ok]) is None
    flat = dataclasses.replace(ok, metrics=dataclasses.replace(ok.metrics, loss_end=99.0))
    fired = loss_not_falling([flat])
    assert fired is not None and fired.findings[0].figures.endswith("->99.000")


def test_markdown_text_cannot_inject_markup_or_break_a_table() -> None:
    assert markdown_text("a|b <i>*x*</i>") == "a\\|b &lt;i&gt;\\*x\\*&lt;/i&gt;"
    assert markdown_text("two\nlines") == "two lines"
    block = markdown_code("a ``` fence\ninside")
    assert block.startswith("````\n") and block.endswith("\n````")


def test_loading_refuses_what_is_not_a_run(tmp_path: Path) -> None:
    from gpubench.report.load import ReportInputError

    (tmp_path / "notes.jsonl").write_text('{"hello": 1}\n')
    with pytest.raises(ReportInputError, match=r"notes.jsonl: not a results file, no Result"):
        load_runs([tmp_path / "notes.jsonl"])
    with pytest.raises(ReportInputError, match="a directory without results.jsonl"):
        load_runs([tmp_path])
    loaded = load_runs([RUN_CPU])
    assert loaded.invocations and loaded.invocations[0].args  # the recorded command line


def test_the_templates_ship_as_package_data() -> None:
    """Every template matches pyproject's package-data globs (an editable install finds them
    in the tree either way; a wheel only when they are listed)."""
    import fnmatch

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    root = Path(__file__).resolve().parent.parent
    config = tomllib.loads((root / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["gpubench.report"]
    package = root / "gpubench" / "report"
    templates = [p.relative_to(package).as_posix() for p in (package / "templates").iterdir()]
    assert templates
    for name in templates:
        assert any(fnmatch.fnmatch(name, g) for g in globs), name


def test_the_rerun_command_is_the_recorded_one_or_made_from_the_pytest_ids() -> None:
    from gpubench.report.provenance import rerun_command

    loaded = load_runs([RUN_CPU])
    recorded = rerun_command(loaded.results, loaded.invocations)
    assert recorded is not None and recorded.recorded
    assert recorded.commands[0].startswith("cd ") and "--gpu-profile cpu" in recorded.commands[0]
    made = rerun_command(loaded.results, [])  # a results file alone: no invocation.json
    assert made is not None and not made.recorded
    command = made.commands[0]
    assert command.startswith("pytest ") and command.endswith("--gpu-profile cpu")
    for result in loaded.results:
        assert result.nodeid is not None and result.nodeid.split("::")[-1] in command
    assert "'" in command  # the <script> id is quoted for the shell


def test_charts_drawn_by_several_processes_are_the_ones_drawn_by_one() -> None:
    from gpubench.report.charts import case_charts

    results = statuses()[:4]
    assert case_charts(results, parallel_from=2) == case_charts(results, parallel_from=10**9)


def _markdown_tables(text: str) -> list[list[int]]:
    """Every table CommonMark + GFM tables finds in ``text``: the cells of each of its rows,
    the header's as parsed, the others counted in the source (the parser pads or cuts a
    body row to the header's count, so its tokens cannot show a row with a cell too many)."""
    from markdown_it import MarkdownIt

    lines = text.splitlines()
    tables: list[list[int]] = []
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    for index, token in enumerate(tokens):
        if token.type != "table_open" or token.map is None:
            continue
        start, end = token.map
        header = 0
        for later in tokens[index:]:
            if later.type == "th_open":
                header += 1
            elif later.type == "thead_close":
                break
        source = [len(re.split(r"(?<!\\)\|", line.strip())) - 2 for line in lines[start:end]]
        tables.append([header, *source[:1], *source[2:]])  # the separator row aside
    return tables


def test_every_markdown_table_parses_with_as_many_cells_in_each_row(tmp_path: Path) -> None:
    """report.md through a Markdown library: each pipe table is a table (a header whose cell
    count differs from its separator's is not one, and reads as a paragraph of pipes), and
    each row has the header's cells. The report has every section, an MFU figure, several
    profiles and workloads, a baseline comparison, projections, folded advice and a case with
    the diagnostics (interval, phases, telemetry, energy)."""
    ok = next(r for r in statuses() if r.status == "ok" and r.metrics.n_params)
    gpu = dataclasses.replace(
        ok,
        case=ok.case.replace(name="on-a-gpu"),
        profile=resolve_profile("a100-80gb"),
        metrics=dataclasses.replace(
            ok.metrics, mfu=0.41, peak_reserved_bytes=2**30, capacity_bytes=80 * 2**30
        ),
    )
    histories = load_histories(QUIET[2])
    new = load_histories(QUIET[3])
    smoke = [r for runs in new.values() for r in runs]
    data = ReportData(
        results=[*statuses(), gpu, *smoke, diagnosed()],
        verdicts=judge_runs(histories, new, GateRules(confirm=0)),
        histories=histories,
        projection=ProjectionInputs(train_tokens=1e9, epochs=(3,), dataset_tokens=1e8),
    )
    paths = write_report(data, tmp_path / "report.html", tmp_path / "report.md")
    text = (tmp_path / "report.md").read_text()
    assert "| 41.0 |" in text  # the MFU column has a figure
    assert "| ±3.4 (target ±1.0 not reached) |" in text and "| optimizer | " in text
    report = build_report(data)
    assert any(a.widespread for a in report.advice) and report.comparisons
    separators = [line for line in text.splitlines() if line.startswith("| ---")]
    tables = _markdown_tables(text)
    assert len(tables) == len(separators) >= 6
    for rows in tables:
        assert len(set(rows)) == 1 and len(rows) >= 2, rows
    assert paths.markdown is not None


@pytest.fixture(scope="module")
def suites_report() -> Report:
    """The shipped suites run on cpu: 30 cases of five workloads (tests/data/report)."""
    return build_report(ReportData(read_results(RUN_SUITES)))


def test_a_mixed_run_is_ranked_per_workload_among_trustworthy_cases(
    suites_report: Report,
) -> None:
    (cpu,) = suites_report.verdicts
    assert cpu.kind is None and len(cpu.workloads) == 6  # a verdict per workload
    by_label = {w.workload.label: w for w in cpu.workloads}
    main = by_label["gpt-mini, 128 tokens, learnable data"]
    assert main.kind == GO and main.recommended is not None
    for best in cpu.recommendations:  # enough steps, learnable data, a falling loss
        assert not distrust(best) and best.case.data == "learnable" and has_spread(best)
    # the estimator's checks: 2 steps on random data, not ranked against anything, and why
    checks = by_label["gpt-mini, 256 tokens, random data"]
    assert checks.kind == NOT_RANKED and checks.recommended is None
    assert "10 too few steps, 10 random data" in checks.summary
    # the batch probe's 2-step run, in the main workload, is not ranked either
    probe = next(s for s in main.standings if s.result.case.id.endswith("-n2-warm1"))
    assert probe.reason.startswith("not ranked: too few steps: 2 measured steps, fewer than 5")
    assert all(s.result.case.data == "learnable" for s in main.standings)


def test_a_prediction_says_what_it_supports_and_no_go_is_not_said_above_a_pass() -> None:
    ok = next(r for r in read_results(RUN_SUITES) if r.case.data == "learnable" and r.fits)
    estimate = Estimate(2**30, 12 * 2**30, "fits", 11 * 2**30, "formulas")
    l4 = resolve_profile("l4")
    fits = dataclasses.replace(ok, profile=l4, predicted=True, metrics=Metrics(), estimate=estimate)
    big = dataclasses.replace(
        fits,
        case=ok.case.replace(batch_size=512),
        status="oom",
        estimate=dataclasses.replace(estimate, peak_bytes=40 * 2**30, verdict="oom"),
    )
    (verdict,) = profile_verdicts([fits, big])
    assert verdict.kind == PREDICTED_FIT and not verdict.go
    assert verdict.workloads[0].summary.startswith(
        "Of 2 case(s), 1 predicted to fit, 1 predicted out of memory. Nothing ran"
    )
    (none_fit,) = profile_verdicts([big])
    assert none_fit.kind == PREDICTED_NO_GO


def test_advice_that_fires_on_most_cases_is_one_line_with_its_exceptions(
    tmp_path: Path,
) -> None:
    results = read_results(RUN_SUITES)
    smoke = next(r for r in results if has_spread(r))
    big = dataclasses.replace(
        smoke,
        case=smoke.case.replace(name="uses-most-of-the-cap"),
        metrics=dataclasses.replace(smoke.metrics, peak_rss_bytes=6 * 2**30),
    )
    report = build_report(ReportData([*results, big]))
    advice = {a.title: a for a in report.advice}
    headroom = advice["Memory is under-used: a larger batch fits"]
    assert headroom.widespread and len(headroom.findings) == 30
    assert headroom.exceptions == (big,)
    assert headroom.headline.startswith("30 of 31 cases examined: peak ")
    markdown = render_markdown(report)
    section = markdown.split("### Memory is under-used", 1)[1].split("\n### ", 1)[0]
    assert "30 of 31 cases examined" in section and "; not on uses-most-of-the-cap." in section
    assert "<details><summary>The figures of each of the 30 cases</summary>" in section
    # records before v7 have no interval: no precision advice (it replaced the bare "noisy"
    # advice that fired on every CPU case; tests/test_report_advice.py plants the fields)
    assert not any(title.startswith(("Noisy", "Precision")) for title in advice)


def test_the_charts_of_a_30_case_run_are_small_multiples_with_axes(
    suites_report: Report,
) -> None:
    charts = suites_report.charts
    (cpu,) = suites_report.verdicts
    throughput = charts["Throughput"].svg
    for judged in cpu.workloads:  # a panel per workload, each with its axis label
        assert judged.workload.label in throughput
    assert throughput.count("tokens/s (median of the measured steps") == 6
    assert "recommended" in throughput and "&lt; 5 measured steps" in throughput  # legend
    memory = charts["Peak memory"]
    assert "capacity" in memory.svg and "GiB: peak host RSS above the runtime" in memory.svg
    assert "the bar is close to what the cap holds" in memory.caption
    loss = charts["Loss"]
    assert loss.svg.count("loss (cross-entropy, nats)") == 2  # the two learnable workloads
    assert "(recommended)" in loss.svg and "4 other case(s)" in loss.svg  # 14 curves: 10 named
    assert "14 case(s) on random data are not drawn" in loss.caption


def test_a_cpu_record_without_the_runtime_s_size_says_why_it_has_no_capacity_line() -> None:
    from gpubench.report.charts import memory_chart

    ok = next(r for r in read_results(RUN_SUITES) if r.fits)
    older = dataclasses.replace(ok, metrics=dataclasses.replace(ok.metrics, runtime_rss_bytes=None))
    chart = memory_chart([older])
    assert chart is not None and "(no line: the cap counts above the runtime" in chart.svg
    assert "cpu: no capacity line: its cap counts the data size above the runtime's" in (
        chart.caption
    )
