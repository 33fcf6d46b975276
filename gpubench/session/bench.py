"""BenchSession: the work behind the plugin's hooks, importable and testable without pytest.

It resolves the hardware profiles, runs each case in its own worker process
(or, with ``estimate_only``, answers it with the memory estimator and runs
nothing: :mod:`gpubench.estimate`), sets the case's memory estimate beside what
was measured, appends the Result to ``results.jsonl`` as soon as the case ends, compares it
with its baseline and appends the verdict to ``verdicts.jsonl`` (saving it to
the baseline when asked: :class:`~gpubench.baseline.gate.Gate`), feeds the
progress display, and reads the run's records back for the summaries and the
report (``report.html``, ``report.md``, ``recommended.json``: :mod:`gpubench.report`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
import time
import warnings
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpubench.baseline.compare import CaseVerdict
from gpubench.baseline.gate import Gate
from gpubench.baseline.rules import check_thresholds, gate_rules
from gpubench.baseline.store import BaselineError, read_baseline, suite_name
from gpubench.contracts.case import STEPS_AUTO, Case
from gpubench.contracts.profiles import (
    HardwareProfile,
    check_runnable_here,
    load_user_profiles,
    parse_profile_list,
)
from gpubench.contracts.protocol import write_text_atomic
from gpubench.contracts.result import QualityCheck, Result
from gpubench.contracts.text import safe_text
from gpubench.estimate import formulas_model_exactly
from gpubench.estimate.isolated import ESTIMATE_TIMEOUT_S, estimate_safely
from gpubench.estimate.measured import compared
from gpubench.estimate.predicted import predicted_result
from gpubench.runner import run_case
from gpubench.runner.launchers import launcher_for
from gpubench.runner.resume import ResumePlan
from gpubench.session.collection import CaseOwners
from gpubench.session.devices import DevicePlan
from gpubench.session.progress import LiveProgress
from gpubench.session.quality import QualityRule, compare_quality
from gpubench.session.settings import REPORT_FILE, SessionOptions
from gpubench.storage import (
    Invocation,
    RunStore,
    ShardRecord,
    TestOutcome,
    append_json_line,
    read_json_lines,
)

if TYPE_CHECKING:
    from gpubench.report.write import WrittenReport

RESULTS_POLL_S = 0.5  # how often a go/no-go test looks for the Results other workers append


class BenchSession:
    def __init__(self, options: SessionOptions, case_progress: LiveProgress | None = None) -> None:
        self.options = options
        # draws the cases this process runs, while they run
        self.case_progress = case_progress
        self.store = RunStore(options.reports_dir, options.run_id, options.session or None)
        self._gate: Gate | None = None
        self._profiles: list[HardwareProfile] | None = None
        self._store_ready = False
        self.cases_total = 0  # gpubench cases collected to run (skips excluded)
        # the xdist controller's: a line per case its workers report (see the plugin)
        self.xdist_progress: LiveProgress | None = None
        self.case_owners = CaseOwners()  # one test per case id and suite: one baseline entry
        self.devices = DevicePlan()  # the GPUs this process's cases see (the plugin's, xdist)
        self.shard_record: ShardRecord | None = None  # the slice this run ran (--gpubench-shard)

    @property
    def profiles(self) -> list[HardwareProfile]:
        """Resolved on first use (``auto`` asks NVML), so a pytest run without
        gpubench cases pays nothing. Raises ProfileError on a bad name."""
        if self._profiles is None:
            user = load_user_profiles(self.options.rootdir, self.options.profiles_file)
            self._profiles = parse_profile_list(self.options.profiles, user_profiles=user)
        return self._profiles

    @property
    def gate(self) -> Gate:
        """Built on first use, with ``[tool.gpubench.gate]`` thresholds under the command
        line's; raises GateError for a bad table."""
        if self._gate is None:
            options = self.options.gate
            rules = gate_rules(self.options.rootdir, options.thresholds, options.rules)
            self._gate = Gate(dataclasses.replace(options, rules=rules))
        return self._gate

    def check_profiles(self, *, to_run: bool) -> list[HardwareProfile]:
        """The run's profiles, resolved now; with ``to_run``, each one checked to be
        runnable on this machine (a GPU profile needs a big enough GPU). ProfileError."""
        profiles = self.profiles
        if to_run and not self.options.estimate_only:
            for profile in profiles:
                check_runnable_here(profile)
        return profiles

    def check_gate(self, declared: Iterable[Mapping[str, Any]], where: str, suite: str) -> None:
        """Refuse, before any case runs, thresholds a test declares (``declared``, named by
        ``where``), a bad ``[tool.gpubench.gate]`` table, or a baseline file of ``suite``
        that cannot be read (never overwritten by saving): GateError or BaselineError."""
        for thresholds in declared:
            check_thresholds(thresholds, where)
        if self.gate.active:
            for profile in self.profiles:
                self.gate.baseline(profile.name, suite)

    @functools.cached_property
    def saved_results(self) -> tuple[Result, ...]:
        """The measured Results the user already has, that a predicted tokens/s is
        calibrated from (:func:`gpubench.estimate.throughput.calibrate`): every run of every
        saved baseline, of every profile, under the baseline directory (read once; a file
        that cannot be read costs only itself, with a warning)."""
        found: list[Result] = []
        root = self.options.gate.baseline_dir
        for path in sorted(root.glob("*/*.json")) if root.is_dir() else []:
            try:
                baseline = read_baseline(path)
            except BaselineError as exc:
                warnings.warn(f"not calibrating from {path}: {exc}", stacklevel=2)
                continue
            found += [r for history in baseline.histories.values() for r in history if r.ran]
        return tuple(found)

    def run(
        self,
        case: Case,
        profile: HardwareProfile,
        nodeid: str | None = None,
        repeat: int = 0,
        thresholds: Mapping[str, float] | None = None,
        quality: QualityRule | None = None,
    ) -> Result:
        """Run (or, estimate-only, predict) one case and append its Result, which records
        the gate thresholds it is judged by: the session's under the test's ``thresholds``
        (``gpubench compare`` reads them back), and with ``quality`` its held-out loss
        against its reference's (:mod:`gpubench.session.quality`)."""
        if not self._store_ready:
            self.store.create()
            self._store_ready = True
        if self.case_progress:
            self.case_progress.case_started(case, profile)
        if self.options.estimate_only:
            # where the formulas decide, the trace only checks them: a whole matrix is
            # answered without tracing those (gpubench estimate shows both)
            trace = not formulas_model_exactly(case)
            result = predicted_result(
                case,
                profile,
                nodeid=nodeid,
                run_id=self.store.run_id,
                trace=trace,
                measured=self.saved_results,
            )
        else:
            launch = functools.partial(
                run_case,
                with_precision_target(case, self.options.precision_target),
                profile,
                timeout_s=case.timeout_s or self.options.timeout_s,
                nodeid=nodeid,
                run_id=self.store.run_id,
                repeat=repeat,
                launcher=launcher_for(
                    case, self.options.rendezvous, profile=profile.name, repeat=repeat
                ),
                env=self.devices.env(case, profile),  # this xdist worker's GPUs
            )
            resume = ResumePlan.for_case(case, profile.name, self.store.dir, repeat)
            result = launch(
                on_progress=self.case_progress.update if self.case_progress else None,
                keep_workdir=self.options.keep_workdirs,
                workdir=(
                    self.store.workdir_for(case.id, profile.name, repeat)
                    if self.options.keep_workdirs
                    else None
                ),
                resume=resume.save_job() if resume else None,
            )
            if resume is not None:  # a fresh worker resumes the checkpoint: not a case run
                keep = self.options.keep_workdirs
                result = resume.check(result, lambda job: launch(resume=job), keep=keep)
            limit = min(ESTIMATE_TIMEOUT_S, case.timeout_s or self.options.timeout_s)
            result = with_estimate(result, limit)
        gate_thresholds = self.gate.rules_for(thresholds).resolved()
        result = dataclasses.replace(result, gate_thresholds=gate_thresholds)
        if quality is not None:  # before the append: results.jsonl holds the check
            result = dataclasses.replace(result, quality=self.compare_quality(result, quality))
        self.store.append(result)
        if self.case_progress:
            self.case_progress.case_finished(result)
        return result

    def judge(
        self, result: Result, thresholds: Mapping[str, float] | None = None
    ) -> CaseVerdict | None:
        """Compare ``result`` with its baseline, running the case again to confirm a
        suspected regression (the verdict goes to verdicts.jsonl), then add it to the
        baseline when this run saves one."""

        def rerun(repeat: int) -> Result:
            return self.run(result.case, result.profile, result.nodeid, repeat, thresholds)

        verdict, reruns = self.gate.judge(result, thresholds, rerun)
        if verdict is not None:
            append_json_line(self.store.verdicts_path, verdict.to_dict())
        self.gate.record(result, reruns)
        return verdict

    def results(self) -> list[Result]:
        """Every result of this run (all xdist workers'), read back from results.jsonl."""
        if not self.store.results_path.exists():
            return []
        return self.store.read()

    def record_outcome(self, outcome: TestOutcome) -> None:
        """pytest's outcome of a gpubench test, to ``outcomes.jsonl`` (the report shows it)."""
        if not self._store_ready:
            self.store.create()
            self._store_ready = True
        append_json_line(self.store.outcomes_path, outcome.to_dict())

    def outcomes(self) -> list[TestOutcome]:
        """Every test outcome of this run (all xdist workers')."""
        if not self.store.outcomes_path.exists():
            return []
        return read_json_lines(self.store.outcomes_path, TestOutcome.from_dict, "outcome")

    def results_of(
        self, keys: Collection[tuple[str, str]], *, wait_s: float = 0.0
    ) -> dict[tuple[str, str], Result]:
        """This run's Result (the first run, not a confirmation rerun) of each (profile, case
        id) in ``keys``. With ``wait_s``, while some are missing it waits for other
        processes (pytest-xdist's workers) to append them: until all are in, or nothing new
        has arrived for ``wait_s`` seconds."""
        found: dict[tuple[str, str], Result] = {}
        seen, idle_since = -1, time.monotonic()
        while True:
            results = self.results()
            for result in results:
                key = (result.profile.name, result.case.id)
                if key in keys and result.repeat == 0:
                    found[key] = result
            if len(found) == len(set(keys)) or wait_s <= 0:
                return found
            if len(results) != seen:
                seen, idle_since = len(results), time.monotonic()
            elif time.monotonic() - idle_since > wait_s:
                return found
            time.sleep(RESULTS_POLL_S)

    def compare_quality(self, result: Result, rule: QualityRule) -> QualityCheck:
        """``result``'s held-out loss against its reference's Result in this run, waiting
        ``rule.wait_s`` for another xdist worker to append it (the collection orders a
        reference before the cases compared with it)."""
        key = (result.profile.name, rule.reference)
        wait_s = rule.wait_s if rule.reference_runs else 0.0
        reference = self.results_of({key}, wait_s=wait_s).get(key)
        return compare_quality(result, reference, rule)

    def gate_summary_text(self, verdicts: list[CaseVerdict]) -> str:
        """The gate's Markdown summary of this run."""
        from gpubench.baseline.table import markdown_summary

        text = markdown_summary(verdicts, title=f"gpubench gate, run {self.store.run_id}")
        return safe_text(text)  # case ids are the user's text

    def write_gate_summary(self, text: str) -> Path:
        """The gate's Markdown summary to ``<run>/summary.md``."""
        write_text_atomic(self.store.summary_path, text)
        return self.store.summary_path

    @staticmethod
    def append_step_summary(path: str, text: str) -> None:
        """Append to ``$GITHUB_STEP_SUMMARY`` (a GitHub Actions job's summary): GitHub's
        file, appended to as GitHub documents, not replaced."""
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text + "\n")

    def write_benchmark_json(self, path: Path, results: list[Result]) -> None:
        """The run in pytest-benchmark's saved-run format."""
        from gpubench.report.pytest_benchmark import pytest_benchmark_json

        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(pytest_benchmark_json(results), indent=1))

    def verdicts(self) -> list[CaseVerdict]:
        """Every verdict of this run (all xdist workers'), read back from verdicts.jsonl."""
        if not self.store.verdicts_path.exists():
            return []
        return read_json_lines(self.store.verdicts_path, CaseVerdict.from_dict, "verdict")

    def baseline_histories(self, results: list[Result]) -> dict[tuple[str, str], list[Result]]:
        """Each case's baseline history as the gate holds it, without this run's own runs
        (an xdist controller reads the files after its workers saved to them)."""
        if not self.options.gate.compare:
            return {}
        histories = {}
        for result in results:
            baseline = self.gate.baseline(result.profile.name, suite_name(result.nodeid))
            history = [h for h in baseline.history(result.case.id) if h.run_id != self.store.run_id]
            if history:
                histories[(result.profile.name, result.case.id)] = history
        return histories

    def write_report(
        self, results: list[Result], verdicts: list[CaseVerdict], invocation: Invocation
    ) -> WrittenReport | None:
        """The run's command line to ``invocation.json`` (one that cannot be written is a
        warning: it costs only itself), then, unless turned off, the report:
        ``report.html`` (or the chosen path), ``report.md`` beside it and
        ``recommended.json`` when a profile has a recommended case."""
        from gpubench.report.document import ReportData
        from gpubench.report.write import write_report

        try:
            self.store.write_invocation(invocation)
        except OSError as exc:
            warnings.warn(
                f"invocation.json not written to {self.store.invocation_path} "
                f"({type(exc).__name__}: {exc}); the rest of the run's outputs are",
                stacklevel=2,
            )
        options = self.options.report
        if not options.enabled:
            return None
        html = options.html or self.store.dir / REPORT_FILE
        data = ReportData(
            results=results,
            verdicts=verdicts,
            histories=self.baseline_histories(results),
            invocations=[invocation],
            projection=options.projection,
            safety_margin=options.safety_margin,
            outcomes=self.outcomes(),
        )
        return write_report(data, html, html.with_suffix(".md"))

    def export_tensorboard(self, results: list[Result]) -> list[Path]:
        """Each case's per-step series as a TensorBoard run under ``--gpubench-tensorboard``;
        TensorBoardMissing when it cannot be written here."""
        from gpubench.report.tensorboard import export_tensorboard

        root = self.options.report.tensorboard
        return export_tensorboard(results, root) if root is not None else []


def with_precision_target(case: Case, target: float) -> Case:
    """``case`` as its worker runs it: a ``steps="auto"`` case without a precision target of
    its own aims at the session's (``--gpubench-precision``). Not part of the id, so set
    here, not at collection: ids and baseline keys stay as declared."""
    if case.steps == STEPS_AUTO and case.precision_target is None:
        return case.replace(precision_target=target)
    return case


def with_estimate(result: Result, timeout_s: float = ESTIMATE_TIMEOUT_S) -> Result:
    """``result`` with its case's memory estimate set beside what was measured. A case
    that crashed or timed out gets none: what failed may be its model's own code, which
    estimating runs again. An estimate that cannot be made never costs the measurement:
    the Result is kept as it is and the reason printed."""
    if result.status in ("crashed", "timeout"):
        return result
    try:
        estimate = estimate_safely(result.case, result.profile, timeout_s=timeout_s)
    except Exception as exc:  # the estimator's defect must not lose a measured case
        print(f"gpubench: no memory estimate for {result.case.id}: {exc}", file=sys.stderr)
        return result
    return dataclasses.replace(result, estimate=compared(estimate, result))
