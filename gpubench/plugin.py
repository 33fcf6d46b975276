"""pytest glue: options, the marker, fixtures and session hooks. The work is in
:mod:`gpubench.session.bench`; every hook here is a short hand-off.

Registered through the ``pytest11`` entry point, so it is active in every
pytest run of an environment that has gpubench installed: nothing here may
cost anything (no NVML, no files) until a gpubench case is collected.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gpubench.baseline.compare import CaseVerdict
from gpubench.baseline.gate import GateOptions
from gpubench.baseline.rules import (
    DEFAULT_CONFIRM,
    GateError,
    GateRules,
    check_thresholds,
    parse_thresholds,
)
from gpubench.baseline.store import DEFAULT_BASELINE_DIR, DEFAULT_HISTORY, BaselineError
from gpubench.contracts.case import Case, CaseError
from gpubench.contracts.profiles import HardwareProfile, ProfileError, check_runnable_here
from gpubench.contracts.result import Result
from gpubench.declaration import MARKER, Matrix
from gpubench.probe import BatchProbe, probe_batch_size
from gpubench.report.projection import (
    PROJECTION_OPTIONS,
    ProjectionError,
    ProjectionInputs,
    pyproject_projection,
)
from gpubench.report.recommendation import DEFAULT_SAFETY_MARGIN, parse_margin
from gpubench.runner.signals import interrupt_on_sigterm
from gpubench.session.bench import (
    DEFAULT_PROFILE,
    DEFAULT_TIMEOUT_S,
    BenchSession,
    ReportOptions,
    SessionOptions,
)
from gpubench.session.collection import (
    check_case_on_profile,
    check_hf_model_type,
    check_model_importable,
    missing_requirement,
)
from gpubench.session.progress import LiveProgress
from gpubench.storage import Invocation, new_run_id, unwritable_reason

SESSION_KEY = pytest.StashKey[BenchSession]()
# projection inputs with a --gpubench-* option; checkpoints and a time limit are pyproject's
PLUGIN_PROJECTION_KEYS = ("train_tokens", "epochs", "dataset_tokens", "price_per_hour")
VERDICT_KEY = pytest.StashKey[Any]()  # the case's CaseVerdict, for the call phase
UNDO_SIGTERM_KEY = pytest.StashKey[Callable[[], None]]()
DEFAULT_REPORTS_DIR = "reports"
GATE_MARKER = "gpubench_gate"
PROGRESS_MODES = ("auto", "live", "lines", "off")
RESULT_FIXTURE = "gpubench_result"
PROBE_FIXTURE = "gpubench_probe"  # runs workers too: counted with the cases


# -- options (validated at the edge) ---------------------------------------------------------
def _positive_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not seconds > 0 or math.isinf(seconds):
        raise pytest.UsageError(
            f"--gpubench-timeout={value!r}: expected a positive number of seconds"
        )
    return seconds


def _thresholds(value: str) -> dict[str, float]:
    try:
        return parse_thresholds(value)
    except GateError as exc:
        raise pytest.UsageError(str(exc)) from None


def _history(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise pytest.UsageError(
            f"--gpubench-baseline-history={value!r}: expected a whole number of runs >= 1"
        )
    return int(value)


def _confirm(value: str) -> int:
    if not value.isdigit():
        raise pytest.UsageError(f"--gpubench-confirm={value!r}: expected a whole number >= 0")
    return int(value)


def _usage(parse: Any, option: str) -> Any:
    """A ``type=`` function from a parser that raises ValueError: pytest's UsageError."""

    def parse_option(value: str) -> Any:
        try:
            return parse(value, option)
        except ValueError as exc:
            raise pytest.UsageError(str(exc)) from None

    return parse_option


REPORT_OFF = "none"


def _report_path(value: str) -> Path | str:
    """An HTML path, or ``none`` (:data:`REPORT_OFF`): no report."""
    if not value.strip():
        raise pytest.UsageError(f"--gpubench-report='': expected an HTML path or {REPORT_OFF}")
    return REPORT_OFF if value.strip().lower() == REPORT_OFF else Path(value)


def _profile_list(value: str) -> str:
    items = [item.strip() for item in value.split(",")]
    if not value.strip() or any(not item for item in items):
        raise pytest.UsageError(
            f"--gpu-profile={value!r}: expected NAME[,NAME...] (see `gpubench profiles`)"
        )
    return ",".join(items)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gpubench", "gpubench: declarative GPU training benchmarks")
    group.addoption(
        "--gpu-profile",
        dest="gpubench_profiles",
        metavar="NAME[,NAME...]",
        type=_profile_list,
        default=None,
        help="hardware profile(s) every case runs against: a built-in name (`gpubench "
        "profiles`), a user profile, NAME:MEMORY to cap memory (cpu:4GiB), or auto "
        f"(default: {DEFAULT_PROFILE}).",
    )
    group.addoption(
        "--gpubench-timeout",
        type=_positive_seconds,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help=f"wall-clock limit per case; the worker's process group is killed "
        f"(default: {DEFAULT_TIMEOUT_S:.0f}).",
    )
    group.addoption(
        "--gpubench-dir",
        default=None,
        metavar="DIR",
        help="where runs write <run-id>/results.jsonl and the `latest` link, relative to "
        f"the rootdir (default: {DEFAULT_REPORTS_DIR}).",
    )
    group.addoption(
        "--gpubench-profiles-file",
        default=None,
        metavar="TOML",
        help="extra user profiles ([profiles.NAME] tables), besides pyproject's "
        "[tool.gpubench.profiles.NAME].",
    )
    group.addoption(
        "--gpubench-estimate-only",
        action="store_true",
        help="run no case: answer each with the memory estimator (fits, over_capacity or "
        "oom on its profile, no GPU needed); Results are marked predicted, with no metrics.",
    )
    group.addoption(
        "--gpubench-keep-workdirs",
        action="store_true",
        help="keep each case's worker directory (job, logs, progress) for debugging.",
    )
    group.addoption(
        "--gpubench-baseline-dir",
        default=DEFAULT_BASELINE_DIR,
        metavar="DIR",
        help="where baselines are read and saved: DIR/<profile>/<suite>.json, relative to "
        f"the rootdir (default: {DEFAULT_BASELINE_DIR}).",
    )
    group.addoption(
        "--gpubench-save-baseline",
        action="store_true",
        help="add this run to the baseline history of every case that ran (after comparing).",
    )
    group.addoption(
        "--gpubench-no-compare",
        action="store_true",
        help="do not compare with baselines (a regression fails nothing).",
    )
    group.addoption(
        "--gpubench-compare-any-env",
        action="store_true",
        help="let a baseline taken on another device, driver, torch or gpubench major "
        "version decide the verdict (by default it is only shown).",
    )
    group.addoption(
        "--gpubench-threshold",
        type=_thresholds,
        default=None,
        metavar="METRIC=VALUE[,...]",
        help="regression thresholds, relative changes in (0, 1), for tokens_per_s, "
        "peak_memory, host_rss, loss (under a test's own gate=/marker; over "
        "[tool.gpubench.gate]).",
    )
    group.addoption(
        "--gpubench-baseline-history",
        type=_history,
        default=DEFAULT_HISTORY,
        metavar="N",
        help=f"runs a baseline entry keeps (default: {DEFAULT_HISTORY}).",
    )
    group.addoption(
        "--gpubench-confirm",
        type=_confirm,
        default=DEFAULT_CONFIRM,
        metavar="N",
        help="run a case that looks regressed N more times and judge all its runs "
        f"(median); 0: judge the one run (default: {DEFAULT_CONFIRM}).",
    )
    group.addoption(
        "--gpubench-benchmark-json",
        default=None,
        metavar="PATH",
        help="also write the run in pytest-benchmark's saved-run format "
        "(`pytest-benchmark compare PATH` reads it).",
    )
    group.addoption(
        "--gpubench-report",
        type=_report_path,
        default=None,
        metavar="PATH|none",
        help="where the run's HTML report goes (report.md and recommended.json beside it; "
        "default: <gpubench-dir>/<run-id>/report.html); none: no report.",
    )
    for key in PLUGIN_PROJECTION_KEYS:  # the rest are read from [tool.gpubench.projection]
        option = PROJECTION_OPTIONS[key]
        flag = "--gpubench-" + key.replace("_", "-")
        group.addoption(
            flag,
            type=_usage(option.parse, flag),
            default=None,
            metavar=option.metavar,
            help=f"{option.help} (also [tool.gpubench.projection] {key}).",
        )
    group.addoption(
        "--gpubench-safety-margin",
        type=_usage(parse_margin, "--gpubench-safety-margin"),
        default=DEFAULT_SAFETY_MARGIN,
        metavar="FRACTION",
        help="share of capacity the recommended case must leave free "
        f"(default: {DEFAULT_SAFETY_MARGIN:g}).",
    )
    group.addoption(
        "--gpubench-tensorboard",
        default=None,
        metavar="DIR",
        help="also write each case's per-step series as a TensorBoard run under DIR "
        "(needs the tensorboard package).",
    )
    group.addoption(
        "--gpubench-progress",
        choices=PROGRESS_MODES,
        default="auto",
        help="live: redraw a status line while each case runs; lines: one line per finished "
        "case; off: nothing; auto (default): live on a terminal, lines with -v otherwise.",
    )


@pytest.hookimpl(trylast=True)  # after the terminal reporter and capture manager exist
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(matrix): the gpubench cases of a test (use @gpubench.matrix(...)).",
    )
    config.addinivalue_line(
        "markers",
        f"{GATE_MARKER}(**thresholds): regression thresholds of a test's gpubench cases, "
        "e.g. tokens_per_s=0.05, peak_memory=0.03.",
    )
    workerinput = getattr(config, "workerinput", None)
    run_id = workerinput["gpubench_run_id"] if workerinput else new_run_id()
    reports_dir = _reports_dir(config)
    if config.getoption("gpubench_dir") is not None:  # named explicitly: check it now
        _check_reports_dir(config)
    profiles_file = config.getoption("gpubench_profiles_file")
    options = SessionOptions(
        profiles=config.getoption("gpubench_profiles") or DEFAULT_PROFILE,
        timeout_s=config.getoption("gpubench_timeout"),
        reports_dir=reports_dir,
        run_id=run_id,
        rootdir=config.rootpath,
        profiles_file=Path(profiles_file) if profiles_file else None,
        keep_workdirs=config.getoption("gpubench_keep_workdirs"),
        estimate_only=_estimate_only(config),
        gate=_gate_options(config),
        report=_report_options(config),
    )
    session = BenchSession(
        options, case_progress=_make_case_progress(config, workerinput is not None)
    )
    if workerinput is None and _xdist_controller(config):
        session.xdist_progress = _make_xdist_progress(config)
    config.stash[SESSION_KEY] = session
    if config.getoption("gpubench_profiles"):  # named explicitly: check it now, not later
        profiles = _resolve_profiles(session)
        # listing cases needs no GPU, nor does estimating them; running them does
        if not config.option.collectonly and not options.estimate_only:
            for profile in profiles:
                try:
                    check_runnable_here(profile)
                except ProfileError as exc:
                    raise pytest.UsageError(f"--gpu-profile: {exc}") from None
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(run_id, session), "gpubench-xdist")


def _reports_dir(config: pytest.Config) -> Path:
    reports_dir = Path(config.getoption("gpubench_dir") or DEFAULT_REPORTS_DIR)
    return reports_dir if reports_dir.is_absolute() else config.rootpath / reports_dir


def _check_reports_dir(config: pytest.Config) -> None:
    """Refuse a --gpubench-dir no run could write in (a file in the way, no permission)."""
    reason = unwritable_reason(_reports_dir(config))
    if reason is not None:
        value = config.getoption("gpubench_dir") or DEFAULT_REPORTS_DIR
        raise pytest.UsageError(f"--gpubench-dir={value!r}: {reason}; give a folder to write in")


def _estimate_only(config: pytest.Config) -> bool:
    """``--gpubench-estimate-only``; refused with a baseline save (a prediction is not a
    measurement a later run could be judged against)."""
    estimate_only = bool(config.getoption("gpubench_estimate_only"))
    if estimate_only and config.getoption("gpubench_save_baseline"):
        raise pytest.UsageError(
            "--gpubench-estimate-only with --gpubench-save-baseline: a predicted Result has no "
            "measurement to save as a baseline; drop one of the two"
        )
    return estimate_only


def _gate_options(config: pytest.Config) -> GateOptions:
    baseline_dir = Path(config.getoption("gpubench_baseline_dir"))
    if not baseline_dir.is_absolute():
        baseline_dir = config.rootpath / baseline_dir
    return GateOptions(
        baseline_dir=baseline_dir,
        # a prediction has no measurement to compare with a baseline
        compare=not config.getoption("gpubench_no_compare") and not _estimate_only(config),
        save=config.getoption("gpubench_save_baseline"),
        history=config.getoption("gpubench_baseline_history"),
        rules=GateRules(
            any_env=config.getoption("gpubench_compare_any_env"),
            confirm=config.getoption("gpubench_confirm"),
        ),
        thresholds=config.getoption("gpubench_threshold") or {},
    )


def _report_options(config: pytest.Config) -> ReportOptions:
    """The report's options; ``[tool.gpubench.projection]`` of the rootdir's pyproject.toml
    under the command line's values (a bad table stops the run here, before any case)."""
    html = config.getoption("gpubench_report")
    tensorboard = config.getoption("gpubench_tensorboard")
    try:
        projection = ProjectionInputs.merged(
            pyproject_projection(config.rootpath),
            **{key: config.getoption(f"gpubench_{key}") for key in PLUGIN_PROJECTION_KEYS},
        )
    except ProjectionError as exc:
        raise pytest.UsageError(str(exc)) from None
    return ReportOptions(
        enabled=html != REPORT_OFF,
        html=_rooted(config, html) if isinstance(html, Path) else None,
        projection=projection,
        safety_margin=config.getoption("gpubench_safety_margin"),
        tensorboard=_rooted(config, Path(tensorboard)) if tensorboard else None,
    )


def _rooted(config: pytest.Config, path: Path) -> Path:
    return path if path.is_absolute() else config.rootpath / path


def _xdist_controller(config: pytest.Config) -> bool:
    """Whether this process hands tests to xdist workers (``-n N``, N > 0)."""
    return config.getoption("dist", "no") != "no" and bool(config.getoption("numprocesses", None))


def _make_case_progress(config: pytest.Config, in_xdist_worker: bool) -> LiveProgress | None:
    if in_xdist_worker or _xdist_controller(config):
        return None  # workers have no terminal; the controller runs no case itself
    reporter = config.pluginmanager.getplugin("terminalreporter")
    if reporter is None:
        return None
    writer = config.get_terminal_writer()
    capture = config.pluginmanager.getplugin("capturemanager")

    def suspend_capture() -> contextlib.AbstractContextManager[None]:
        if capture is None:
            return contextlib.nullcontext()
        return capture.global_and_fixture_disabled()  # type: ignore[no-any-return]

    mode = config.getoption("gpubench_progress")
    if mode == "off":
        return None
    # A terminal, not colour, decides: cursor movement is what a log file cannot take.
    live = mode == "live" or (mode == "auto" and bool(reporter.isatty()))
    return LiveProgress(
        writer,
        live=live,
        verbose=mode == "lines" or (mode == "auto" and config.get_verbosity() > 0),
        suspend_capture=suspend_capture,
        write_line=reporter.write_line,
    )


def _make_xdist_progress(config: pytest.Config) -> LiveProgress | None:
    """The xdist controller's progress: a line per case as the workers report them
    (``live`` and ``auto`` on a terminal included: see gpubench.session.progress); ``auto``
    without a terminal writes them with ``-v``; ``-q`` and ``off`` write none."""
    reporter = config.pluginmanager.getplugin("terminalreporter")
    mode = config.getoption("gpubench_progress")
    if reporter is None or mode == "off":
        return None
    if mode == "auto" and not (
        config.get_verbosity() > 0 or (reporter.isatty() and config.get_verbosity() == 0)
    ):
        return None
    return LiveProgress(
        config.get_terminal_writer(), live=False, verbose=True, write_line=reporter.write_line
    )


def _resolve_profiles(session: BenchSession) -> list[HardwareProfile]:
    try:
        return session.profiles
    except ProfileError as exc:
        raise pytest.UsageError(f"--gpu-profile: {exc}") from None


class _XdistHooks:
    """The controller's side of xdist: every worker gets the controller's run id (one
    results.jsonl per run), and each finished case reported back is counted for progress."""

    def __init__(self, run_id: str, session: BenchSession) -> None:
        self.run_id = run_id
        self.session = session
        self.workers = 0

    def pytest_configure_node(self, node: object) -> None:
        node.workerinput["gpubench_run_id"] = self.run_id  # type: ignore[attr-defined]
        self.workers += 1

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        progress = self.session.xdist_progress
        if progress is None or report.when != "teardown":
            return  # once per test; the fixture's properties are on every phase's report
        props: dict[str, Any] = dict(report.user_properties)  # JSON values, from the fixture
        if "gpubench_status" not in props:
            return  # not a gpubench case, or skipped before it ran
        progress.clock.parallel = max(1, self.workers)
        progress.case_reported(
            str(props.get("gpubench_summary", report.nodeid)),
            float(props.get("gpubench_duration_s") or 0.0),
            total=int(props.get("gpubench_cases_total") or 0),
        )


# -- collection: cases × profiles -----------------------------------------------------------
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    markers = list(metafunc.definition.iter_markers(MARKER))
    if not markers or "gpubench_case" not in metafunc.fixturenames:
        return
    matrix = Matrix(())
    for marker in markers:
        if len(marker.args) != 1 or not isinstance(marker.args[0], Matrix):
            pytest.fail(f"@{MARKER} takes one gpubench.matrix(...)", pytrace=False)
        matrix = matrix + marker.args[0]
    bench = metafunc.config.stash[SESSION_KEY]
    profiles = _resolve_profiles(bench)
    _check_gate(bench, metafunc, profiles)
    params = []
    for case in matrix:
        for profile in profiles:
            marks = []
            if matrix.requires_gpu(case) and profile.is_cpu:
                marks.append(
                    pytest.mark.skip(
                        reason=f"declared for GPU profiles; profile {profile.name!r} has no GPU"
                    )
                )
            else:
                problem = _declaration_problem(case, profile)
                if problem is not None:  # outside the except: one message, not a chain
                    pytest.fail(problem, pytrace=False)
                missing = missing_requirement(case, to_run=not bench.options.estimate_only)
                if missing is not None:
                    marks.append(pytest.mark.skip(reason=missing))
            if matrix.gate(case):
                marks.append(getattr(pytest.mark, GATE_MARKER)(**matrix.gate(case)))
            params.append(pytest.param(case, profile, id=f"{case.id}-{profile.name}", marks=marks))
    metafunc.parametrize(["gpubench_case", "gpubench_profile"], params)


def _declaration_problem(case: Case, profile: HardwareProfile) -> str | None:
    """Why collection refuses ``case`` on ``profile``, or None."""
    try:
        check_case_on_profile(case, profile)
        check_model_importable(case)
        check_hf_model_type(case)
    except CaseError as exc:
        return str(exc)
    return None


def _check_gate(
    bench: BenchSession, metafunc: pytest.Metafunc, profiles: list[HardwareProfile]
) -> None:
    """Refuse at collection a bad gate marker, a bad [tool.gpubench.gate] table, or a
    baseline file of this module that cannot be read (never overwritten by saving)."""
    problem = None
    try:
        for marker in metafunc.definition.iter_markers(GATE_MARKER):
            check_thresholds(marker.kwargs, f"@pytest.mark.{GATE_MARKER}")
        if bench.gate.active:
            suite = Path(metafunc.definition.path).stem
            for profile in profiles:
                bench.gate.baseline(profile.name, suite)
    except (GateError, BaselineError) as exc:
        problem = str(exc)
    if problem is not None:  # outside the except: one message, not a chained traceback
        pytest.fail(problem, pytrace=False)


def pytest_collection_finish(session: pytest.Session) -> None:
    bench = session.config.stash.get(SESSION_KEY, None)
    if bench is None:
        return
    bench.cases_total = sum(
        1
        for item in session.items
        if {RESULT_FIXTURE, PROBE_FIXTURE} & set(getattr(item, "fixturenames", ()))
        and not item.get_closest_marker("skip")
    )
    if bench.case_progress is not None:
        bench.case_progress.clock.total = bench.cases_total
    if bench.cases_total and not session.config.option.collectonly:
        _check_reports_dir(session.config)  # the default folder too, before any case runs
        undo = interrupt_on_sigterm()  # SIGTERM ends the session as Ctrl-C does
        if undo is not None:
            session.config.stash[UNDO_SIGTERM_KEY] = undo


def pytest_unconfigure(config: pytest.Config) -> None:
    undo = config.stash.get(UNDO_SIGTERM_KEY, None)
    if undo is not None:
        undo()


# -- fixtures ---------------------------------------------------------------------------------
@pytest.fixture
def gpubench_case() -> Case:
    """The Case of this test (set by @gpubench.matrix)."""
    pytest.fail("no gpubench case: decorate the test with @gpubench.matrix(...)", pytrace=False)


@pytest.fixture
def gpubench_profile() -> HardwareProfile:
    """The HardwareProfile of this test (from --gpu-profile)."""
    pytest.fail("no gpubench profile: decorate the test with @gpubench.matrix(...)", pytrace=False)


@pytest.fixture
def gpubench_result(
    request: pytest.FixtureRequest, gpubench_case: Case, gpubench_profile: HardwareProfile
) -> Iterator[Result]:
    """Run the case in its own worker process and hand its Result to the test.

    An OOM, a timeout or a crash is a Result with that status, not an error:
    the test decides what passes."""
    bench = request.config.stash[SESSION_KEY]
    marker = request.node.get_closest_marker(GATE_MARKER)
    thresholds = marker.kwargs if marker else None
    result = bench.run(gpubench_case, gpubench_profile, request.node.nodeid, thresholds=thresholds)
    verdict = bench.judge(result, thresholds)
    request.node.stash[VERDICT_KEY] = verdict
    for name, value in (
        ("gpubench_status", result.status),
        ("gpubench_tokens_per_s", result.tokens_per_s),
        ("gpubench_peak_memory_bytes", result.peak_memory_bytes),
        ("gpubench_run_id", result.run_id),
        # for the xdist controller's progress lines (see _XdistHooks)
        ("gpubench_summary", result.describe()),
        ("gpubench_duration_s", result.duration_s),
        ("gpubench_cases_total", bench.cases_total),
        *_verdict_properties(verdict),
    ):
        request.node.user_properties.append((name, value))
    yield result


@pytest.fixture
def gpubench_probe(
    request: pytest.FixtureRequest, gpubench_case: Case, gpubench_profile: HardwareProfile
) -> Callable[..., BatchProbe]:
    """:func:`gpubench.probe.probe_batch_size` for this test's case and profile
    (``gpubench_probe(max_batch=64)``), each probe and curve run through the session, so
    it lands in results.jsonl, the progress display and the report like any case. Under
    ``--gpubench-estimate-only`` the probes are predictions and there is no tokens/s
    curve to draw (``curve=False``)."""
    bench = request.config.stash[SESSION_KEY]

    def run(case: Case, profile: HardwareProfile) -> Result:
        return bench.run(case, profile, nodeid=request.node.nodeid)

    probe = functools.partial(probe_batch_size, gpubench_case, gpubench_profile, run=run)
    return functools.partial(probe, curve=False) if bench.options.estimate_only else probe


def _verdict_properties(verdict: CaseVerdict | None) -> list[tuple[str, Any]]:
    """The gate's figures as JUnit XML properties (``--junitxml`` carries them)."""
    if verdict is None:
        return []
    properties: list[tuple[str, Any]] = [
        ("gpubench_verdict", verdict.decision),
        ("gpubench_status_baseline", verdict.status_old),
    ]
    for m in verdict.metrics:
        properties += [
            (f"gpubench_{m.metric}_baseline", m.old),
            (f"gpubench_{m.metric}_change", m.change),
            (f"gpubench_{m.metric}_verdict", m.decision),
            (f"gpubench_{m.metric}_threshold", m.threshold),  # as applied
            (f"gpubench_{m.metric}_threshold_rule", m.threshold_text),  # and how
        ]
    return properties


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """A case that regressed against its baseline fails its test, after the test's own
    assertions (which keep their failure if they fail first)."""
    outcome = yield
    verdict = item.stash.get(VERDICT_KEY, None)
    if verdict is not None and verdict.regressed:
        from gpubench.baseline.table import describe_regression

        pytest.fail(describe_regression(verdict), pytrace=False)
    return outcome


# -- end of session ---------------------------------------------------------------------------
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    config = terminalreporter.config
    if getattr(config, "workerinput", None) is not None:
        return
    bench = config.stash.get(SESSION_KEY, None)
    if bench is None:
        return
    results = bench.results()
    if not results:
        return
    from gpubench.session.summary import format_summary  # pandas: only when there is a table

    terminalreporter.write_sep("=", "gpubench summary")
    for line in format_summary(results).splitlines():
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"results: {bench.store.results_path}")
    benchmark_json = config.getoption("gpubench_benchmark_json")
    if benchmark_json:
        path = Path(benchmark_json)
        bench.write_benchmark_json(path if path.is_absolute() else config.rootpath / path, results)
        terminalreporter.write_line(f"pytest-benchmark json: {benchmark_json}")
    verdicts = bench.verdicts()
    if verdicts:
        from gpubench.baseline.table import format_verdicts

        terminalreporter.write_sep("=", "gpubench gate (against baselines)")
        for line in format_verdicts(verdicts).splitlines():
            terminalreporter.write_line(line)
        terminalreporter.write_line(f"gate summary: {bench.write_gate_summary(verdicts)}")
    _write_report(terminalreporter, bench, results, verdicts)


def _write_report(
    terminalreporter: pytest.TerminalReporter,
    bench: BenchSession,
    results: list[Result],
    verdicts: list[CaseVerdict],
) -> None:
    """The run's report and TensorBoard export. A failure here costs the report, not the
    run: it is said, with the command that renders the report again."""
    params = terminalreporter.config.invocation_params
    invocation = Invocation(tuple(str(a) for a in params.args), str(params.dir))
    try:
        written = bench.write_report(results, verdicts, invocation)
    except Exception as exc:
        terminalreporter.write_line(
            f"gpubench report: not written ({type(exc).__name__}: {exc}); "
            f"render it with `gpubench report {bench.store.dir}`",
            red=True,
        )
    else:
        for path in written.paths if written else []:
            terminalreporter.write_line(f"report: {path}")
    if bench.options.report.tensorboard is not None:
        from gpubench.report.tensorboard import TensorBoardMissing

        try:
            bench.export_tensorboard(results)
        except TensorBoardMissing as exc:
            terminalreporter.write_line(f"gpubench: {exc}", yellow=True)
        else:
            terminalreporter.write_line(f"tensorboard: {bench.options.report.tensorboard}")
