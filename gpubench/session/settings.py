"""A session's settings, and how they are made from option values.

:func:`session_options` reads the values by key (the plugin passes
``config.getoption("gpubench_<key>")``, see :mod:`gpubench.options`) and checks what
no single option can: a baseline save of predictions, the projection's pyproject table.
It raises :class:`SettingsError` (or the ValueError of the table that is wrong) naming
the options; the plugin turns that into pytest's usage error before any case runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpubench.baseline.gate import GateOptions
from gpubench.baseline.rules import GateRules
from gpubench.contracts.case import DEFAULT_PRECISION_TARGET
from gpubench.report.projection import ProjectionInputs, pyproject_projection
from gpubench.report.recommendation import DEFAULT_SAFETY_MARGIN
from gpubench.runner.launchers import Rendezvous
from gpubench.session.shard import Shard
from gpubench.storage import file_unwritable_reason, unwritable_reason

DEFAULT_PROFILE = "auto"
DEFAULT_TIMEOUT_S = 1800.0
DEFAULT_REPORTS_DIR = "reports"
REPORT_OFF = "none"  # --gpubench-report none: no report
REPORT_FILE = "report.html"
# projection inputs with a --gpubench-* option; in a pytest run checkpoints and a time
# limit are [tool.gpubench.projection]'s
PLUGIN_PROJECTION_KEYS = ("train_tokens", "epochs", "dataset_tokens", "price_per_hour")

OptionValue = Callable[[str], Any]  # option key -> its parsed value


class SettingsError(ValueError):
    """Options that cannot go together (the message names them)."""


@dataclass
class ReportOptions:
    enabled: bool = True
    html: Path | None = None  # None: <run dir>/report.html; report.md goes beside it
    projection: ProjectionInputs = field(default_factory=ProjectionInputs)
    safety_margin: float = DEFAULT_SAFETY_MARGIN
    tensorboard: Path | None = None  # also write each case's series as a TensorBoard run
    benchmark_json: Path | None = None  # also write the run in pytest-benchmark's format


@dataclass
class SessionOptions:
    profiles: str = DEFAULT_PROFILE  # the --gpu-profile value
    timeout_s: float = DEFAULT_TIMEOUT_S
    reports_dir: Path = Path(DEFAULT_REPORTS_DIR)
    run_id: str = ""
    session: str = ""  # the session's token (its xdist workers share it): RunStore's claim
    rootdir: Path | None = None  # where pyproject.toml's [tool.gpubench] is read
    profiles_file: Path | None = None
    keep_workdirs: bool = False
    estimate_only: bool = False  # answer every case with the estimator; run no worker
    # steps="auto" cases without a precision_target of their own aim at this (--gpubench-precision)
    precision_target: float = DEFAULT_PRECISION_TARGET
    gate: GateOptions = field(default_factory=GateOptions)
    report: ReportOptions = field(default_factory=ReportOptions)
    # scale (docs/scale.md): GPUs per xdist worker (None: shared out evenly), torchrun's
    # rendezvous (None: --standalone), this machine's slice of the collection (None: all)
    gpus_per_worker: int | None = None
    rendezvous: Rendezvous | None = None
    shard: Shard | None = None


def session_options(
    value: OptionValue, *, rootdir: Path, run_id: str, session: str = ""
) -> SessionOptions:
    """The session's options from the option values (``value(key)``), paths relative to
    ``rootdir``; SettingsError or a ValueError naming a bad combination or table."""
    estimate_only = bool(value("estimate_only"))
    if estimate_only and value("save_baseline"):
        raise SettingsError(
            "--gpubench-estimate-only with --gpubench-save-baseline: a predicted Result has no "
            "measurement to save as a baseline; drop one of the two"
        )
    options = SessionOptions(
        profiles=value("profiles") or DEFAULT_PROFILE,
        timeout_s=value("timeout"),
        reports_dir=reports_dir(value, rootdir),
        run_id=run_id,
        session=session,
        rootdir=rootdir,
        profiles_file=value("profiles_file"),
        keep_workdirs=bool(value("keep_workdirs")),
        estimate_only=estimate_only,
        precision_target=value("precision_target"),
        gate=_gate_options(value, rootdir, compare=not estimate_only),
        report=_report_options(value, rootdir),
        gpus_per_worker=value("gpus_per_worker"),
        rendezvous=_rendezvous(value),
        shard=value("shard"),
    )
    check_outputs(options)
    return options


def check_outputs(options: SessionOptions) -> None:
    """SettingsError naming the option of each output that could not be written at the
    end (a file or a folder in the way, a folder this user may not write in), before any
    case runs: a save of baselines, the benchmark file, the report, TensorBoard's folder.
    What cannot be checked now (a folder that turns read-only mid-run) is a warning at
    the end (:mod:`gpubench.session.finish`)."""
    report = options.report
    problems = []
    if options.gate.save:
        reason = unwritable_reason(options.gate.baseline_dir)
        if reason is not None:
            problems.append(f"--gpubench-save-baseline into {options.gate.baseline_dir}: {reason}")
    files = [("--gpubench-benchmark-json", report.benchmark_json)]
    if report.enabled and report.html is not None:
        files += [
            ("--gpubench-report", report.html),
            ("--gpubench-report", report.html.with_suffix(".md")),
        ]
    for option, path in files:
        reason = file_unwritable_reason(path) if path is not None else None
        if reason is not None:
            problems.append(f"{option} {path}: {reason}")
    if report.tensorboard is not None:
        reason = unwritable_reason(report.tensorboard)
        if reason is not None:
            problems.append(f"--gpubench-tensorboard {report.tensorboard}: {reason}")
    if problems:
        raise SettingsError("; ".join(problems) + " (checked before any case runs)")


def _rendezvous(value: OptionValue) -> Rendezvous | None:
    endpoint = value("rdzv_endpoint")
    if endpoint is None:
        if value("rdzv_id"):
            raise SettingsError(
                "--gpubench-rdzv-id without --gpubench-rdzv-endpoint: an id names a "
                "rendezvous at an endpoint; give the endpoint too (HOST:PORT)"
            )
        return None
    return Rendezvous(endpoint, value("rdzv_backend"), value("rdzv_id"))


def reports_dir(value: OptionValue, rootdir: Path) -> Path:
    """Where runs are written: ``--gpubench-dir`` or ``reports``, under ``rootdir``."""
    return _rooted(rootdir, Path(value("dir") or DEFAULT_REPORTS_DIR))


def _gate_options(value: OptionValue, rootdir: Path, *, compare: bool) -> GateOptions:
    # a prediction has no measurement to compare with a baseline
    return GateOptions(
        baseline_dir=_rooted(rootdir, Path(value("baseline_dir"))),
        compare=compare and not value("no_compare"),
        save=bool(value("save_baseline")),
        history=value("baseline_history"),
        rules=GateRules(any_env=bool(value("compare_any_env")), confirm=value("confirm")),
        thresholds=value("threshold") or {},
    )


def _report_options(value: OptionValue, rootdir: Path) -> ReportOptions:
    """The report's options; ``[tool.gpubench.projection]`` of the rootdir's pyproject.toml
    under the command line's values (a bad table is a ProjectionError, a ValueError)."""
    html = value("report")
    projection = ProjectionInputs.merged(
        pyproject_projection(rootdir), **{key: value(key) for key in PLUGIN_PROJECTION_KEYS}
    )
    tensorboard, benchmark_json = value("tensorboard"), value("benchmark_json")
    return ReportOptions(
        enabled=html != REPORT_OFF,
        html=_rooted(rootdir, html) if isinstance(html, Path) else None,
        projection=projection,
        safety_margin=value("safety_margin"),
        tensorboard=_rooted(rootdir, tensorboard) if tensorboard else None,
        benchmark_json=_rooted(rootdir, Path(benchmark_json)) if benchmark_json else None,
    )


def _rooted(rootdir: Path, path: Path) -> Path:
    return path if path.is_absolute() else rootdir / path
