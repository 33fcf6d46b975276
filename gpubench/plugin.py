"""pytest glue: options, markers, fixtures and session hooks, each a short hand-off.

The options are declared in :mod:`gpubench.options` (shared with the ``gpubench``
command), the session's settings made in :mod:`gpubench.session.settings`, the work
done by :class:`~gpubench.session.bench.BenchSession`, the cases parametrized by
:func:`~gpubench.session.collection.case_params`, the end of the session written by
:func:`~gpubench.session.finish.finish`, and pytest-xdist's controller served by
:mod:`gpubench.xdist_hooks`.

Registered through the ``pytest11`` entry point, so it is active in every pytest run
of an environment that has gpubench installed: nothing here may cost anything (no
NVML, no files but pyproject.toml's projection table) until a gpubench case is
collected.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gpubench.baseline.rules import GateError
from gpubench.baseline.store import BaselineError
from gpubench.contracts.case import Case, CaseError
from gpubench.contracts.profiles import HardwareProfile, ProfileError
from gpubench.contracts.result import Result
from gpubench.declaration import GO_NO_GO_MARKER, MARKER, Matrix
from gpubench.options import PYTEST_DEST_PREFIX, add_pytest_options
from gpubench.outcomes import resume_failure
from gpubench.probe import BatchProbe, probe_batch_size
from gpubench.runner.signals import interrupt_on_sigterm
from gpubench.session.bench import BenchSession
from gpubench.session.collection import case_params
from gpubench.session.devices import DeviceError, DevicePlan, XdistWorker
from gpubench.session.finish import finish
from gpubench.session.progress import LiveProgress, choose_display
from gpubench.session.properties import case_properties, test_outcome
from gpubench.session.quality import QualityRule, quality_failure
from gpubench.session.settings import reports_dir, session_options
from gpubench.session.shard import select
from gpubench.storage import Invocation, new_run_id, unwritable_reason
from gpubench.xdist_hooks import RUN_ID_KEY, SESSION_TOKEN_KEY, SHARD_RECORD_KEY, XdistHooks

SESSION_KEY = pytest.StashKey[BenchSession]()
VERDICT_KEY = pytest.StashKey[Any]()  # the case's CaseVerdict, for the call phase
# a go/no-go test's cases: (profile, case id) of each collected to run this session
GO_NO_GO_CASES_KEY = pytest.StashKey[list[tuple[str, str]]]()
UNDO_SIGTERM_KEY = pytest.StashKey[Callable[[], None]]()
QUALITY_RULE_KEY = pytest.StashKey[QualityRule]()  # a case's comparison with its reference
QUALITY_CHECK_KEY = pytest.StashKey[Any]()  # its QualityCheck, for the call phase
RESUME_CHECK_KEY = pytest.StashKey[Any]()  # its ResumeCheck, for the call phase
GATE_MARKER = "gpubench_gate"
RESULT_FIXTURE = "gpubench_result"
PROBE_FIXTURE = "gpubench_probe"  # runs workers too: counted with the cases


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gpubench", "gpubench: declarative GPU training benchmarks")
    add_pytest_options(group.addoption, pytest.UsageError)


def _option(config: pytest.Config) -> Callable[[str], Any]:
    return lambda key: config.getoption(PYTEST_DEST_PREFIX + key)


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
    config.addinivalue_line(
        "markers",
        f"{GO_NO_GO_MARKER}(matrix): a suite's go/no-go over a matrix's cases "
        "(use @gpubench.go_no_go(...)).",
    )
    workerinput = getattr(config, "workerinput", None)
    run_id = workerinput[RUN_ID_KEY] if workerinput else new_run_id()
    token = workerinput[SESSION_TOKEN_KEY] if workerinput else secrets.token_hex(16)
    if config.getoption("gpubench_dir") is not None:  # named explicitly: check it now
        _check_reports_dir(config)
    try:
        options = session_options(
            _option(config), rootdir=config.rootpath, run_id=run_id, session=token
        )
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    controller = workerinput is None and _xdist_controller(config)
    bench = BenchSession(
        options, _progress(config) if workerinput is None and not controller else None
    )
    if controller:
        bench.xdist_progress = _progress(config, xdist_controller=True)
    if workerinput and "workercount" in workerinput:  # one GPU (or k) per xdist worker,
        # worked out at the first GPU case
        worker = XdistWorker(workerinput["workerid"], int(workerinput["workercount"]))
        bench.devices = DevicePlan(worker, options.gpus_per_worker)
    config.stash[SESSION_KEY] = bench
    if config.getoption("gpubench_profiles"):  # named explicitly: check it now, not later
        _profiles(bench, to_run=not config.option.collectonly)
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(XdistHooks(run_id, bench), "gpubench-xdist")


def _check_reports_dir(config: pytest.Config) -> None:
    """Refuse a --gpubench-dir no run could write in (a file in the way, no permission)."""
    reason = unwritable_reason(reports_dir(_option(config), config.rootpath))
    if reason is not None:
        value = config.getoption("gpubench_dir") or "reports"
        raise pytest.UsageError(f"--gpubench-dir={value!r}: {reason}; give a folder to write in")


def _xdist_controller(config: pytest.Config) -> bool:
    """Whether this process hands tests to xdist workers (``-n N``, N > 0)."""
    return config.getoption("dist", "no") != "no" and bool(config.getoption("numprocesses", None))


def _progress(config: pytest.Config, xdist_controller: bool = False) -> LiveProgress | None:
    """The progress display ``--gpubench-progress`` asks for on this terminal."""
    reporter = config.pluginmanager.getplugin("terminalreporter")
    if reporter is None:
        return None
    display = choose_display(
        config.getoption("gpubench_progress"),
        terminal=bool(reporter.isatty()),  # a terminal, not colour: cursor movement
        verbosity=config.get_verbosity(),
        xdist_controller=xdist_controller,
    )
    if display is None:
        return None
    capture = config.pluginmanager.getplugin("capturemanager")

    def suspend_capture() -> contextlib.AbstractContextManager[None]:
        if capture is None:
            return contextlib.nullcontext()
        return capture.global_and_fixture_disabled()  # type: ignore[no-any-return]

    return LiveProgress(
        config.get_terminal_writer(),
        live=display.live,
        verbose=display.lines,
        suspend_capture=suspend_capture,
        write_line=reporter.write_line,
    )


def _profiles(bench: BenchSession, to_run: bool = False) -> list[HardwareProfile]:
    try:
        return bench.check_profiles(to_run=to_run)
    except ProfileError as exc:
        raise pytest.UsageError(f"--gpu-profile: {exc}") from None


# -- collection: cases × profiles -----------------------------------------------------------
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    go_no_go = metafunc.definition.get_closest_marker(GO_NO_GO_MARKER)
    if go_no_go is not None and "gpubench_profile" in metafunc.fixturenames:
        _parametrize_go_no_go(metafunc, go_no_go.args[0])
        return
    markers = list(metafunc.definition.iter_markers(MARKER))
    if not markers or "gpubench_case" not in metafunc.fixturenames:
        return
    matrix = Matrix(())
    for marker in markers:
        if len(marker.args) != 1 or not isinstance(marker.args[0], Matrix):
            pytest.fail(f"@{MARKER} takes one gpubench.matrix(...)", pytrace=False)
        matrix = matrix + marker.args[0]
    bench = metafunc.config.stash[SESSION_KEY]
    problem = None
    try:
        profiles = _profiles(bench)
        declared = [m.kwargs for m in metafunc.definition.iter_markers(GATE_MARKER)]
        suite = Path(metafunc.definition.path).stem
        bench.check_gate(declared, f"@pytest.mark.{GATE_MARKER}", suite)
        bench.case_owners.claim(suite, metafunc.definition.nodeid, matrix)
        matrix.check_quality()  # every case's quality reference found now, or a CaseError
        params = case_params(
            matrix,
            profiles,
            estimate_only=bench.options.estimate_only,
            devices=bench.devices,
            rendezvous=bench.options.rendezvous,
        )
    except (CaseError, GateError, BaselineError, DeviceError) as exc:
        problem = str(exc)
    if problem is not None:  # outside the except: one message, not a chained traceback
        pytest.fail(problem, pytrace=False)
    metafunc.parametrize(
        ["gpubench_case", "gpubench_profile"],
        [pytest.param(p.case, p.profile, id=p.id, marks=_marks(p.skip, p.gate)) for p in params],
    )


def _parametrize_go_no_go(metafunc: pytest.Metafunc, matrix: Matrix) -> None:
    """One go/no-go per profile; skipped on ``cpu`` when every case is declared for GPUs."""
    gpu_only = all(matrix.requires_gpu(case) for case in matrix)
    params = [
        pytest.param(
            profile,
            id=profile.name,
            marks=_marks(
                f"declared for GPU profiles; profile {profile.name!r} has no GPU"
                if gpu_only and profile.is_cpu
                else None,
                None,
            ),
        )
        for profile in _profiles(metafunc.config.stash[SESSION_KEY])
    ]
    metafunc.parametrize("gpubench_profile", params)


def _marks(skip: str | None, gate: Any) -> list[pytest.MarkDecorator]:
    marks = [pytest.mark.skip(reason=skip)] if skip is not None else []
    if gate:
        marks.append(getattr(pytest.mark, GATE_MARKER)(**gate))
    return marks


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With ``--gpubench-shard``, this machine's slice only (the rest deselected). Go/no-go
    tests run last, each knowing which of its cases this session runs (a
    deselected or skipped case is not waited for). Every xdist worker orders its items the
    same way, so a worker reaching a go/no-go test has no case of it still queued."""
    _shard(config, items)
    _quality_references_first(items)
    go_no_go = [item for item in items if item.get_closest_marker(GO_NO_GO_MARKER)]
    if not go_no_go:
        return
    runs = set()
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        case, profile = params.get("gpubench_case"), params.get("gpubench_profile")
        if isinstance(case, Case) and profile is not None and not item.get_closest_marker("skip"):
            runs.add((profile.name, case.id))
    for item in go_no_go:
        marker = item.get_closest_marker(GO_NO_GO_MARKER)
        profile = item.callspec.params["gpubench_profile"]  # type: ignore[attr-defined]
        matrix = marker.args[0] if marker else Matrix(())
        keys = [(profile.name, case.id) for case in matrix]
        item.stash[GO_NO_GO_CASES_KEY] = [key for key in keys if key in runs]
    items[:] = [item for item in items if item not in go_no_go] + go_no_go


def _quality_references_first(items: list[pytest.Item]) -> None:
    """Each case with a quality reference (``matrix(quality_reference=...)``) learns it and
    whether it runs in this session; within each test, its references move ahead of its
    other cases (in the places its items held), so a reference's Result is in before a case
    compares with it. Every xdist worker orders alike, so a worker reaching a case has run
    every reference queued before it, and waits only for another worker's."""
    found: dict[tuple[str, str, str], tuple[pytest.Item, Case]] = {}  # (test, profile, id)
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        case, profile = params.get("gpubench_case"), params.get("gpubench_profile")
        if isinstance(case, Case) and isinstance(profile, HardwareProfile):
            found[(item.nodeid.split("[", 1)[0], profile.name, case.id)] = (item, case)
    references = set()
    for (test, profile_name, _), (item, case) in found.items():
        matrix = sum((m.args[0] for m in item.iter_markers(MARKER)), Matrix(()))
        pair = matrix.quality_reference(case)
        if pair is None:
            continue
        reference = found.get((test, profile_name, pair[0]), (None, None))[0]
        runs = reference is not None and not reference.get_closest_marker("skip")
        item.stash[QUALITY_RULE_KEY] = QualityRule(pair[0], pair[1], reference_runs=runs)
        if reference is not None:
            references.add(reference)
    places: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        places.setdefault(item.nodeid.split("[", 1)[0], []).append(index)
    for indices in places.values():
        ordered = sorted((items[i] for i in indices), key=lambda item: item not in references)
        for index, item in zip(indices, ordered, strict=True):
            items[index] = item


def _is_case(item: pytest.Item) -> bool:
    return bool({RESULT_FIXTURE, PROBE_FIXTURE} & set(getattr(item, "fixturenames", ())))


def _shard(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep this shard's slice of ``items`` (:mod:`gpubench.session.shard`), the rest
    deselected through pytest's hook (the terminal counts them); the slice's record goes
    to invocation.json, from an xdist worker through its workeroutput."""
    bench = config.stash.get(SESSION_KEY, None)
    if bench is None or bench.options.shard is None:
        return
    cases = [item.nodeid for item in items if _is_case(item)]
    selection = select(
        bench.options.shard,
        cases,
        others=[item.nodeid for item in items if not _is_case(item)],
        whole_matrix=[item.nodeid for item in items if item.get_closest_marker(GO_NO_GO_MARKER)],
        skipped=[item.nodeid for item in items if item.get_closest_marker("skip")],
    )
    deselected = [item for item in items if item.nodeid not in selection.kept]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item.nodeid in selection.kept]
    bench.shard_record = selection.record
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput[SHARD_RECORD_KEY] = selection.record.to_dict()


def pytest_collection_finish(session: pytest.Session) -> None:
    bench = session.config.stash.get(SESSION_KEY, None)
    if bench is None:
        return
    cases = [
        item.nodeid
        for item in session.items
        if _is_case(item) and not item.get_closest_marker("skip")
    ]
    bench.cases_total = len(cases)
    for progress in (bench.case_progress, bench.xdist_progress):
        if progress is not None:
            progress.clock.total = bench.cases_total
            progress.clock.plan(cases)  # the time left: each case its test's mean
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
    quality = request.node.stash.get(QUALITY_RULE_KEY, None)
    if quality is not None and getattr(request.config, "workerinput", None) is not None:
        quality = dataclasses.replace(quality, wait_s=bench.options.timeout_s + 60)
    result = bench.run(
        gpubench_case, gpubench_profile, request.node.nodeid, thresholds=thresholds, quality=quality
    )
    request.node.stash[QUALITY_CHECK_KEY] = result.quality
    request.node.stash[RESUME_CHECK_KEY] = result.resume
    verdict = bench.judge(result, thresholds)
    request.node.stash[VERDICT_KEY] = verdict
    request.node.user_properties.extend(case_properties(result, verdict, bench.cases_total))
    yield result


@pytest.fixture
def gpubench_results(
    request: pytest.FixtureRequest, gpubench_profile: HardwareProfile
) -> list[Result]:
    """A go/no-go test's cases' Results on its profile, in the matrix's order, once every
    one of them has run (under pytest-xdist, on whichever worker)."""
    keys = request.node.stash.get(GO_NO_GO_CASES_KEY, [])
    if not keys:
        pytest.skip(f"no case of this go/no-go runs on {gpubench_profile.name} in this session")
    bench = request.config.stash[SESSION_KEY]
    in_xdist_worker = getattr(request.config, "workerinput", None) is not None
    found = bench.results_of(keys, wait_s=bench.options.timeout_s + 60 if in_xdist_worker else 0)
    missing = [case for profile, case in keys if (profile, case) not in found]
    if missing:
        pytest.fail(
            f"no Result for {len(missing)} case(s) of this go/no-go: {missing}", pytrace=False
        )
    return [found[key] for key in keys]


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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """A case that regressed against its baseline fails its test, after the test's own
    assertions (which keep their failure if they fail first), and also when the test
    called its result a finding (``pytest.xfail``)."""
    try:
        outcome = yield
    except pytest.xfail.Exception:  # a finding does not hide a regression (fitted, now oom)
        regression = _regression(item)
        if regression is None:
            raise
    else:
        regression = _regression(item)
    if regression is not None:
        pytest.fail(regression, pytrace=False)
    return outcome


def _regression(item: pytest.Item) -> str | None:
    """The case's regression against its baseline, its quality outside the threshold
    against its reference (:mod:`gpubench.session.quality`) and a failed resume check
    (the case asked for it: a checkpoint that does not resume fails whatever the test's
    body says); None when none."""
    quality = quality_failure(item.stash.get(QUALITY_CHECK_KEY, None))
    resume = resume_failure(item.stash.get(RESUME_CHECK_KEY, None))
    verdict = item.stash.get(VERDICT_KEY, None)
    if verdict is None or not verdict.regressed:
        return "\n".join(filter(None, [quality, resume])) or None
    from gpubench.baseline.table import describe_regression

    return "\n".join(filter(None, [describe_regression(verdict), quality, resume]))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    """pytest's outcome of a gpubench test, recorded where the test ran (an xdist worker
    too), so the report says what pytest said."""
    report = yield
    bench = item.config.stash.get(SESSION_KEY, None)
    params = getattr(getattr(item, "callspec", None), "params", {})
    profile = params.get("gpubench_profile")
    if bench is not None and isinstance(profile, HardwareProfile):
        outcome = test_outcome(
            report, profile, params.get("gpubench_case"), run_id=bench.store.run_id
        )
        if outcome is not None:
            bench.record_outcome(outcome)
    return report


# -- end of session ---------------------------------------------------------------------------
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    config = terminalreporter.config
    bench = config.stash.get(SESSION_KEY, None)
    if bench is None or getattr(config, "workerinput", None) is not None:
        return
    params = config.invocation_params
    args = tuple(str(a) for a in params.args)
    finish(bench, terminalreporter, Invocation(args, str(params.dir), shard=bench.shard_record))
