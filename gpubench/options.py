"""Every command-line option gpubench has, declared once for the pytest plugin and the
``gpubench`` command (as pytest-benchmark's ``add_*_options(addoption, prefix=...)``
serve both its plugin and its CLI).

An :class:`Option` holds the flag each tool spells it with (``--gpubench-threshold``
in pytest, ``--threshold`` in ``gpubench compare``), one help text, and a parser
``(text, where) -> value`` that raises :class:`ValueError` naming the option, the
bad value and the valid ones. Each tool wraps the parser in its own usage error
(pytest's ``UsageError``, argparse's ``ArgumentTypeError``), so a bad value stops
either before anything runs, with the same sentence.

The plugin reads a value as ``config.getoption("gpubench_<key>")``, the command as
``args.<key>``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpubench.baseline.rules import DEFAULT_CONFIRM, parse_thresholds
from gpubench.baseline.store import DEFAULT_BASELINE_DIR, DEFAULT_HISTORY
from gpubench.contracts.case import DEFAULT_PRECISION_TARGET
from gpubench.report.projection import PROJECTION_OPTIONS
from gpubench.report.recommendation import DEFAULT_SAFETY_MARGIN, parse_margin
from gpubench.runner.launchers import DEFAULT_RDZV_BACKEND
from gpubench.session.settings import (
    DEFAULT_REPORTS_DIR,
    DEFAULT_TIMEOUT_S,
    PLUGIN_PROJECTION_KEYS,
    REPORT_OFF,
)
from gpubench.session.shard import Shard, parse_shard

Parse = Callable[[str, str], Any]  # (text, the flag as the user typed it) -> value
PROGRESS_MODES = ("auto", "live", "lines", "off")
RDZV_BACKENDS = ("c10d", "etcd", "etcd-v2", "static")  # torchrun's --rdzv-backend values
PYTEST_DEST_PREFIX = "gpubench_"


@dataclass(frozen=True)
class Option:
    """One option: its flags in pytest and in the ``gpubench`` command (None: that tool has
    no such option), its help, and how its value is read."""

    key: str  # pytest dest: gpubench_<key>; the command's dest: <key>
    pytest_flag: str | None
    cli_flag: str | None
    help: str
    parse: Parse | None = None  # None: the value is the text (or a switch: see action)
    action: str | None = None  # "store_true" for a switch
    default: Any = None
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    cli_aliases: tuple[str, ...] = ()  # older spellings the command still takes

    @property
    def dest(self) -> str:
        return PYTEST_DEST_PREFIX + self.key

    def arguments(self, flag: str, error: type[Exception]) -> dict[str, Any]:
        """The keyword arguments of ``addoption``/``add_argument`` for ``flag``."""
        kwargs: dict[str, Any] = {"help": self.help, "default": self.default}
        if self.action is not None:
            kwargs["action"] = self.action
        if self.metavar is not None:
            kwargs["metavar"] = self.metavar
        if self.choices is not None:
            kwargs["choices"] = self.choices
        if self.parse is not None:
            kwargs["type"] = _typed(self.parse, flag, error)
        return kwargs


def _typed(parse: Parse, flag: str, error: type[Exception]) -> Callable[[str], Any]:
    """A ``type=`` function: ``parse`` with its ValueError re-raised as ``error``."""

    def parse_option(text: str) -> Any:
        try:
            return parse(text, flag)
        except ValueError as exc:
            raise error(str(exc)) from None

    parse_option.__name__ = flag.lstrip("-").replace("-", "_")  # argparse names it on errors
    return parse_option


# -- parsers: (text, flag) -> value, ValueError naming both ---------------------------------
def positive_seconds(text: str, flag: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not seconds > 0 or math.isinf(seconds):
        raise ValueError(f"{flag}={text!r}: expected a positive number of seconds")
    return seconds


def whole_number(minimum: int, what: str) -> Parse:
    def parse(text: str, flag: str) -> int:
        if not text.isdigit() or int(text) < minimum:
            raise ValueError(f"{flag}={text!r}: expected {what} >= {minimum}")
        return int(text)

    return parse


def precision_target(text: str, flag: str) -> float:
    """A fraction of the median, ``0.01``, or a percentage, ``1%``: in (0, 1)."""
    number = text.strip().removesuffix("%")
    try:
        value = float(number) / (100 if text.strip().endswith("%") else 1)
    except ValueError:
        value = math.nan
    if not 0 < value < 1:
        raise ValueError(
            f"{flag}={text!r}: expected the confidence interval's half-width over the median, "
            "a fraction in (0, 1) such as 0.01 or a percentage such as 1%"
        )
    return value


def profile_list(text: str, flag: str) -> str:
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or any(not item for item in items):
        raise ValueError(f"{flag}={text!r}: expected NAME[,NAME...] (see `gpubench profiles`)")
    return ",".join(items)


def report_path(text: str, flag: str) -> Path | str:
    """An HTML path, or ``none`` (:data:`REPORT_OFF`): no report. A ``.md`` path is
    refused: the Markdown goes beside the page with the page's name, so it would be
    written over the HTML."""
    if not text.strip():
        raise ValueError(f"{flag}='': expected an HTML path or {REPORT_OFF}")
    if text.strip().lower() == REPORT_OFF:
        return REPORT_OFF
    if Path(text).suffix.lower() == ".md":
        raise ValueError(
            f"{flag}={text!r}: expected the HTML page's path, e.g. "
            f"{Path(text).with_suffix('.html')}; the Markdown report is written beside it, "
            "named as the page with .md"
        )
    return Path(text)


def thresholds(text: str, flag: str) -> dict[str, float]:
    return parse_thresholds(text, flag)  # GateError is a ValueError


def endpoint(text: str, flag: str) -> str:
    """``HOST:PORT`` (an IPv6 host in brackets), the port in 1..65535."""
    host, colon, port = text.strip().rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"{flag}={text!r}: expected HOST:PORT, the same on every node, e.g. node001:29400 "
            "or [fd00::1]:29400"
        )
    return text.strip()


def rendezvous_id(text: str, flag: str) -> str:
    """A job's name for its rendezvous: letters, digits, ``.``, ``_``, ``-``."""
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", text):
        raise ValueError(
            f"{flag}={text!r}: expected 1 to 64 letters, digits, '.', '_' or '-', e.g. "
            "$SLURM_JOB_ID"
        )
    return text


def shard(text: str, flag: str) -> Shard:
    return parse_shard(text, flag)


def path(text: str, flag: str) -> Path:
    if not text.strip():
        raise ValueError(f"{flag}='': expected a path")
    return Path(text)


# -- the options ----------------------------------------------------------------------------
PROFILE = Option(
    "profiles",
    "--gpu-profile",
    "--profile",
    "hardware profile(s): a built-in name (`gpubench profiles`), a user profile, "
    "NAME:MEMORY to cap memory (cpu:4GiB), or auto; a comma list runs each case on each "
    "(default: auto; gpubench estimate: cpu)",
    parse=profile_list,
    metavar="NAME[,NAME...]",
)
PROFILES_FILE = Option(
    "profiles_file",
    "--gpubench-profiles-file",
    "--profiles-file",
    "extra user profiles ([profiles.NAME] tables), besides pyproject's "
    "[tool.gpubench.profiles.NAME]",
    parse=path,
    metavar="TOML",
    cli_aliases=("--file",),
)
ROOTDIR = Option(
    "rootdir",
    None,  # pytest has its own --rootdir, whose pyproject.toml the plugin reads
    "--rootdir",
    "read [tool.gpubench] (profiles, gate, projection) from DIR/pyproject.toml "
    "(default: the current directory)",
    parse=path,
    default=Path("."),
    metavar="DIR",
)
THRESHOLD = Option(
    "threshold",
    "--gpubench-threshold",
    "--threshold",
    "regression thresholds, relative changes in (0, 1), for tokens_per_s, peak_memory, "
    "host_rss, loss (under a test's own gate=/marker; over [tool.gpubench.gate])",
    parse=thresholds,
    metavar="METRIC=VALUE[,...]",
)
ANY_ENV = Option(
    "compare_any_env",
    "--gpubench-compare-any-env",
    "--any-env",
    "let a baseline taken on another device, driver, torch or gpubench major version "
    "decide the verdict (by default it is only shown)",
    action="store_true",
    default=False,
)
SAFETY_MARGIN = Option(
    "safety_margin",
    "--gpubench-safety-margin",
    "--safety-margin",
    f"share of capacity the recommended case must leave free (default: {DEFAULT_SAFETY_MARGIN:g})",
    parse=parse_margin,
    default=DEFAULT_SAFETY_MARGIN,
    metavar="FRACTION",
)
TENSORBOARD = Option(
    "tensorboard",
    "--gpubench-tensorboard",
    "--tensorboard",
    "also write each case's per-step series as a TensorBoard run under DIR "
    "(needs the tensorboard package)",
    parse=path,
    metavar="DIR",
)
PROJECTION = tuple(
    Option(
        key,
        "--gpubench-" + key.replace("_", "-") if key in PLUGIN_PROJECTION_KEYS else None,
        "--" + key.replace("_", "-"),
        f"{spec.help} (also [tool.gpubench.projection] {key})",
        parse=spec.parse,
        metavar=spec.metavar,
    )
    for key, spec in PROJECTION_OPTIONS.items()
)

RUN = (
    PROFILE,
    Option(
        "timeout",
        "--gpubench-timeout",
        None,
        "wall-clock limit per case; the worker's process group is killed "
        f"(default: {DEFAULT_TIMEOUT_S:.0f})",
        parse=positive_seconds,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
    ),
    Option(
        "dir",
        "--gpubench-dir",
        None,
        "where runs write <run-id>/results.jsonl and the `latest` link, relative to "
        f"the rootdir (default: {DEFAULT_REPORTS_DIR})",
        metavar="DIR",
    ),
    PROFILES_FILE,
    Option(
        "estimate_only",
        "--gpubench-estimate-only",
        None,
        "run no case: answer each with the memory estimator (fits, over_capacity or oom "
        "on its profile, no GPU needed); Results are marked predicted, with no metrics",
        action="store_true",
        default=False,
    ),
    Option(
        "precision_target",
        "--gpubench-precision",
        None,
        'steps="auto" cases measure until the median tokens/s is known to this: the 95 %% '
        "interval's half-width over the median, 0.01 or 1%% for ±1 %% (a case's own "
        f"precision_target wins; default: {DEFAULT_PRECISION_TARGET:g})",
        parse=precision_target,
        default=DEFAULT_PRECISION_TARGET,
        metavar="FRACTION",
    ),
    Option(
        "keep_workdirs",
        "--gpubench-keep-workdirs",
        None,
        "keep each case's worker directory (job, logs, progress) in <run-id>/work/ for debugging",
        action="store_true",
        default=False,
    ),
    Option(
        "progress",
        "--gpubench-progress",
        None,
        "live: redraw a status line while each case runs; lines: one line per finished "
        "case; off: nothing; auto (default): live on a terminal, lines otherwise",
        default="auto",
        choices=PROGRESS_MODES,
    ),
)
GATE = (
    Option(
        "baseline_dir",
        "--gpubench-baseline-dir",
        None,
        "where baselines are read and saved: DIR/<profile>/<suite>.json, relative to "
        f"the rootdir (default: {DEFAULT_BASELINE_DIR})",
        default=DEFAULT_BASELINE_DIR,
        metavar="DIR",
    ),
    Option(
        "save_baseline",
        "--gpubench-save-baseline",
        None,
        "add this run to the baseline history of every case that ran (after comparing)",
        action="store_true",
        default=False,
    ),
    Option(
        "no_compare",
        "--gpubench-no-compare",
        None,
        "do not compare with baselines (a regression fails nothing)",
        action="store_true",
        default=False,
    ),
    ANY_ENV,
    THRESHOLD,
    Option(
        "baseline_history",
        "--gpubench-baseline-history",
        None,
        f"runs a baseline entry keeps (default: {DEFAULT_HISTORY})",
        parse=whole_number(1, "a whole number of runs"),
        default=DEFAULT_HISTORY,
        metavar="N",
    ),
    Option(
        "confirm",
        "--gpubench-confirm",
        None,
        "run a case that looks regressed N more times and judge all its runs (median); "
        f"0: judge the one run (default: {DEFAULT_CONFIRM})",
        parse=whole_number(0, "a whole number"),
        default=DEFAULT_CONFIRM,
        metavar="N",
    ),
)
OUTPUT = (
    Option(
        "benchmark_json",
        "--gpubench-benchmark-json",
        None,
        "also write the run in pytest-benchmark's saved-run format "
        "(`pytest-benchmark compare PATH` reads it)",
        metavar="PATH",
    ),
    Option(
        "report",
        "--gpubench-report",
        None,
        "where the run's HTML report goes (report.md and recommended.json beside it; "
        f"default: <gpubench-dir>/<run-id>/report.html); {REPORT_OFF}: no report",
        parse=report_path,
        metavar=f"PATH|{REPORT_OFF}",
    ),
    *PROJECTION,
    SAFETY_MARGIN,
    TENSORBOARD,
)
SCALE = (
    Option(
        "gpus_per_worker",
        "--gpubench-gpus-per-worker",
        None,
        "under pytest-xdist (-n N), the GPUs each worker holds, through CUDA_VISIBLE_DEVICES "
        "in its cases' environment (default: the visible GPUs divided evenly over the "
        "workers, at least 1; 0: pin nothing)",
        parse=whole_number(0, "a whole number of GPUs"),
        metavar="K",
    ),
    Option(
        "rdzv_endpoint",
        "--gpubench-rdzv-endpoint",
        None,
        "torchrun's rendezvous for torchrun cases, needed by cases with nnodes > 1: HOST:PORT, "
        "the same on every node (default: --standalone, one machine)",
        parse=endpoint,
        metavar="HOST:PORT",
    ),
    Option(
        "rdzv_backend",
        "--gpubench-rdzv-backend",
        None,
        "torchrun's --rdzv-backend with --gpubench-rdzv-endpoint "
        f"(default: {DEFAULT_RDZV_BACKEND})",
        default=DEFAULT_RDZV_BACKEND,
        choices=RDZV_BACKENDS,
    ),
    Option(
        "rdzv_id",
        "--gpubench-rdzv-id",
        None,
        "a name for this job's rendezvous, the same on every node (e.g. $SLURM_JOB_ID); each "
        "case meets under it and a digest of the case (default: the digest alone)",
        parse=rendezvous_id,
        metavar="ID",
    ),
    Option(
        "shard",
        "--gpubench-shard",
        None,
        "run slice INDEX of COUNT of the collected tests, INDEX from 1 (SLURM: --array=1-COUNT "
        "with $SLURM_ARRAY_TASK_ID/COUNT); the same slice on every machine; join the runs "
        "with `gpubench merge`",
        parse=shard,
        metavar="INDEX/COUNT",
    ),
)
PLUGIN_OPTIONS = tuple(o for o in (*RUN, *GATE, *OUTPUT, *SCALE) if o.pytest_flag is not None)


def add_pytest_options(addoption: Callable[..., Any], error: type[Exception]) -> None:
    """Every plugin option, through a pytest option group's ``addoption``."""
    for option in PLUGIN_OPTIONS:
        assert option.pytest_flag is not None
        addoption(
            option.pytest_flag, dest=option.dest, **option.arguments(option.pytest_flag, error)
        )


def add_cli_options(
    add_argument: Callable[..., Any],
    options: Iterable[Option],
    error: type[Exception],
    **overrides: Any,
) -> None:
    """``options`` as a ``gpubench`` subcommand's arguments (argparse's ``add_argument``);
    ``overrides`` replace keyword arguments of all of them (``action="append"``)."""
    for option in options:
        if option.cli_flag is None:
            raise ValueError(f"{option.key}: the gpubench command has no such option")
        kwargs = {**option.arguments(option.cli_flag, error), **overrides}
        add_argument(option.cli_flag, *option.cli_aliases, dest=option.key, **kwargs)
