"""The ``gpubench`` console script.

    gpubench profiles [--json] [--rootdir DIR] [--file FILE]
    gpubench compare OLD NEW [--threshold METRIC=VALUE,...] [--any-env] [--md FILE]
    gpubench export --format pytest-benchmark RESULTS -o FILE
    gpubench report RESULTS... [--baseline DIR] [-o report.html] [--md report.md]
    gpubench estimate --model M [--batch-size N ...] --profile NAME[:MEM][,...] [--json]

Each subcommand is one ``_add_<name>_command(subparsers)`` function that adds
its parser and sets ``run`` to a function ``(args) -> exit code``; adding a
subcommand (``report``, ...) means writing those two functions and listing the
first in ``_COMMANDS``. Errors gpubench can explain (a bad profile file, ...)
print one line to stderr and exit 2, like argparse's own usage errors.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from gpubench.contracts.profiles import (
    GB_PER_S,
    TFLOPS,
    GiB,
    HardwareProfile,
    ProfileError,
    available_profiles,
    load_user_profiles,
    parse_profile_list,
)

if TYPE_CHECKING:
    from gpubench.contracts.case import Case
    from gpubench.contracts.result import Estimate

# -- gpubench profiles ----------------------------------------------------------------------------


def _figure(value: float | None, scale: float, digits: int) -> str:
    return "-" if value is None else f"{value / scale:.{digits}f}"


def profiles_frame(profiles: Iterable[HardwareProfile]) -> pd.DataFrame:
    """One row per profile, figures in the units people quote (GiB, TFLOP/s, GB/s, $/h)."""
    rows = [
        {
            "name": p.name,
            "kind": p.kind,
            "memory GiB": _figure(p.memory_bytes, GiB, 1),
            "bf16 TFLOP/s": _figure(p.bf16_flops, TFLOPS, 1),
            "fp32 TFLOP/s": _figure(p.fp32_flops, TFLOPS, 1),
            "bandwidth GB/s": _figure(p.memory_bandwidth, GB_PER_S, 0),
            "$/h": _figure(p.usd_per_hour, 1.0, 2),
        }
        for p in profiles
    ]
    return pd.DataFrame(rows)


def _run_profiles(args: argparse.Namespace) -> int:
    user = load_user_profiles(rootdir=args.rootdir, file=args.file)
    profiles = list(available_profiles(user).values())
    if args.json:
        print(json.dumps([p.to_dict() for p in profiles], indent=2))
        return 0
    print(profiles_frame(profiles).to_string(index=False))
    print()
    print("Figures are dense peaks (no sparsity); GeForce bf16 is the tensor-core rate with FP32")
    print("accumulate. Profile `auto` detects GPU 0 (CUDA_VISIBLE_DEVICES' first) with NVML.")
    if user:
        print(f"User-defined or overridden here: {', '.join(user)}")
    print()
    print("Sources:")
    for p in profiles:
        print(f"  {p.name}: {p.source or '-'}")
    return 0


def _add_profiles_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "profiles",
        help="list hardware profiles (built-in and user) with their figures and sources",
        description="List the hardware profiles a run can use: built-in (cited) and user "
        "profiles from pyproject.toml [tool.gpubench.profiles.<name>] or a profiles file.",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list of profiles")
    parser.add_argument(
        "--rootdir",
        type=Path,
        default=Path.cwd(),
        metavar="DIR",
        help="read user profiles from DIR/pyproject.toml (default: the current directory)",
    )
    parser.add_argument(
        "--file",
        type=Path,
        default=None,
        metavar="FILE",
        help="also read [profiles.<name>] tables from this TOML file",
    )
    parser.set_defaults(run=_run_profiles)


# -- gpubench compare ----------------------------------------------------------------------------


def _run_compare(args: argparse.Namespace) -> int:
    from gpubench.baseline.offline import judge_runs
    from gpubench.baseline.rules import PYPROJECT_SOURCE, GateRules, pyproject_thresholds
    from gpubench.baseline.sources import load_histories
    from gpubench.baseline.table import format_verdicts, markdown_summary

    pyproject = pyproject_thresholds(args.rootdir)
    rules = GateRules(any_env=args.any_env).with_thresholds(pyproject, PYPROJECT_SOURCE)
    old, new = load_histories(args.old), load_histories(args.new)
    # each run's recorded thresholds (its gate's), under --threshold
    verdicts = judge_runs(old, new, rules, overrides=args.threshold)
    print(format_verdicts(verdicts))
    if args.md is not None:
        args.md.write_text(markdown_summary(verdicts, title=f"{args.old} -> {args.new}"))
    regressed = [v for v in verdicts if v.regressed]
    print(f"\n{len(regressed)} of {len(verdicts)} case(s) regressed.")
    return 1 if regressed else 0


def _threshold_arg(text: str) -> dict[str, float]:
    from gpubench.baseline.rules import GateError, parse_thresholds

    try:
        return parse_thresholds(text, "--threshold")
    except GateError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_compare_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="compare a run with a baseline or an earlier run: the gate's table; exit 1 on a "
        "regression",
        description="Compare NEW (a run directory, results.jsonl, or baselines: the newest "
        "run of each case) with OLD (the same kinds: every run of each case is its history), "
        "by the rules the pytest gate uses. Exit 0: no regression; 1: a regression; 2: bad "
        "input.",
    )
    parser.add_argument("old", type=Path, help="the baseline: run dir, results file, baselines")
    parser.add_argument("new", type=Path, help="the run to judge: run dir, results file, ...")
    parser.add_argument(
        "--threshold",
        type=_threshold_arg,
        default=None,
        metavar="METRIC=VALUE[,...]",
        help="thresholds (relative changes in (0, 1)) for tokens_per_s, peak_memory, "
        "host_rss, loss",
    )
    parser.add_argument(
        "--any-env",
        action="store_true",
        help="let runs from another device, driver, torch or gpubench major version decide",
    )
    parser.add_argument("--md", type=Path, default=None, metavar="FILE", help="also write Markdown")
    parser.add_argument(
        "--rootdir",
        type=Path,
        default=Path.cwd(),
        metavar="DIR",
        help="read [tool.gpubench.gate] from DIR/pyproject.toml (default: the current directory)",
    )
    parser.set_defaults(run=_run_compare)


# -- gpubench export -----------------------------------------------------------------------------


def _run_export(args: argparse.Namespace) -> int:
    from gpubench.baseline.sources import load_histories, newest_runs
    from gpubench.report.pytest_benchmark import pytest_benchmark_json

    results = [first for first, _ in newest_runs(load_histories(args.results))]
    args.output.write_text(json.dumps(pytest_benchmark_json(results), indent=1) + "\n")
    print(f"{args.output}: {len(results)} case(s) in pytest-benchmark's format")
    return 0


def _add_export_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write a run in another tool's format (pytest-benchmark)",
        description="Write the cases of RESULTS (a run directory, results.jsonl or baselines) "
        "as a pytest-benchmark saved run, which `pytest-benchmark compare` reads.",
    )
    parser.add_argument("results", type=Path, help="run dir, results file or baselines")
    parser.add_argument(
        "--format", choices=("pytest-benchmark",), default="pytest-benchmark", help="the format"
    )
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="FILE")
    parser.set_defaults(run=_run_export)


# -- gpubench report -----------------------------------------------------------------------------


def _run_report(args: argparse.Namespace) -> int:
    from gpubench.baseline.offline import judge_runs
    from gpubench.baseline.rules import PYPROJECT_SOURCE, GateRules, pyproject_thresholds
    from gpubench.baseline.sources import Histories, load_histories
    from gpubench.report.document import ReportData
    from gpubench.report.load import load_runs
    from gpubench.report.projection import (
        PROJECTION_OPTIONS,
        ProjectionInputs,
        pyproject_projection,
    )
    from gpubench.report.write import write_report

    runs = load_runs(args.results)
    projection = ProjectionInputs.merged(
        pyproject_projection(args.rootdir),
        **{key: getattr(args, key) for key in PROJECTION_OPTIONS},
    )
    verdicts = list(runs.verdicts)
    histories: Histories = {}
    if args.baseline:  # judged here, by the gate's rules, against that baseline
        for path in args.baseline:
            for key, history in load_histories(path).items():
                histories.setdefault(key, []).extend(history)
        for history in histories.values():
            history.sort(key=lambda r: r.started_at)
        pyproject = pyproject_thresholds(args.rootdir)
        rules = GateRules(any_env=args.any_env).with_thresholds(pyproject, PYPROJECT_SOURCE)
        new: Histories = {}
        for result in runs.results:
            new.setdefault((result.profile.name, result.case.id), []).append(result)
        verdicts = judge_runs(histories, new, rules, overrides=args.threshold)
    data = ReportData(
        results=runs.results,
        verdicts=verdicts,
        histories=histories,
        invocations=runs.invocations,
        projection=projection,
        safety_margin=args.safety_margin,
    )
    written = write_report(data, args.output, args.md)
    for path in written.paths:
        print(path)
    if args.tensorboard is not None:
        from gpubench.report.tensorboard import TensorBoardMissing, export_tensorboard

        try:
            export_tensorboard(runs.results, args.tensorboard)
            print(args.tensorboard)
        except TensorBoardMissing as exc:
            print(f"gpubench report: {exc}", file=sys.stderr)
    return 0


def _parsed(parse: Callable[[str, str], object], option: str) -> Callable[[str], object]:
    """An argparse ``type=`` from one of the report's parsers (the plugin uses the same)."""

    def parse_argument(text: str) -> object:
        try:
            return parse(text, option)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse_argument


def _add_report_command(subparsers: argparse._SubParsersAction) -> None:
    from gpubench.report.projection import PROJECTION_OPTIONS
    from gpubench.report.recommendation import DEFAULT_SAFETY_MARGIN, parse_margin

    parser = subparsers.add_parser(
        "report",
        help="render a run's report (HTML, Markdown, recommended.json) from its results",
        description="Render the report a pytest run writes at its end, offline, from one or "
        "more run directories or results files (merged: the shards of a matrix, or two GPUs "
        "side by side). Exit 2 on a path that is not a run or results file.",
    )
    parser.add_argument("results", type=Path, nargs="+", help="run directories or results.jsonl")
    parser.add_argument(
        "--baseline",
        type=Path,
        nargs="+",
        default=None,
        metavar="DIR",
        help="compare with this baseline (baselines/, run directories or results files, "
        "merged) by the gate's rules; default: the verdicts the runs' own gates wrote",
    )
    parser.add_argument(
        "-o", "--output", type=Path, default=Path("report.html"), metavar="HTML", help="the page"
    )
    parser.add_argument("--md", type=Path, default=None, metavar="FILE", help="also Markdown")
    for key, option in PROJECTION_OPTIONS.items():
        flag = "--" + key.replace("_", "-")
        parser.add_argument(
            flag, type=_parsed(option.parse, flag), metavar=option.metavar, help=option.help
        )
    parser.add_argument(
        "--safety-margin",
        type=_parsed(parse_margin, "--safety-margin"),
        default=DEFAULT_SAFETY_MARGIN,
        metavar="FRACTION",
        help=f"capacity the recommended case leaves free (default: {DEFAULT_SAFETY_MARGIN:g})",
    )
    parser.add_argument(
        "--threshold",
        type=_threshold_arg,
        default=None,
        metavar="METRIC=VALUE[,...]",
        help="with --baseline: the gate's thresholds",
    )
    parser.add_argument(
        "--any-env", action="store_true", help="with --baseline: runs from elsewhere decide too"
    )
    parser.add_argument(
        "--tensorboard", type=Path, default=None, metavar="DIR", help="also TensorBoard runs"
    )
    parser.add_argument(
        "--rootdir",
        type=Path,
        default=Path.cwd(),
        metavar="DIR",
        help="read [tool.gpubench.projection] and [tool.gpubench.gate] from DIR/pyproject.toml",
    )
    parser.set_defaults(run=_run_report)


# -- gpubench estimate ---------------------------------------------------------------------------
# option -> (Case setting, argparse keyword arguments); flags left unset keep the Case defaults
_ESTIMATE_SETTINGS: dict[str, dict[str, Any]] = {
    "--model": {"required": True, "help": "built-in name, pkg.module:factory or hf:<type>"},
    "--batch-size": {"type": int, "help": "micro-batch per rank, in sequences"},
    "--seq-len": {"type": int, "help": "tokens per sequence"},
    "--precision": {"help": "fp32, bf16 or fp16"},
    "--grad-accum": {"type": int, "help": "micro-batches per optimizer step"},
    "--engine": {"help": "torch or deepspeed"},
    "--zero-stage": {"type": int, "help": "DeepSpeed ZeRO stage 0-3 (needs --engine deepspeed)"},
    "--nproc": {"type": int, "help": "ranks (GPUs) the case runs on"},
    "--attention": {"help": "sdpa or math"},
    "--vocab-size": {"type": int, "help": "override the model's vocabulary"},
    "--grad-ckpt": {"action": "store_true", "default": None, "help": "checkpoint each block"},
    "--offload-optimizer": {"action": "store_true", "default": None, "help": "ZeRO offload"},
    "--offload-params": {"action": "store_true", "default": None, "help": "ZeRO-3 offload"},
    "--fused-adamw": {"action": "store_true", "default": None, "help": "AdamW(fused=True)"},
    "--compile": {"action": "store_true", "default": None, "help": "torch.compile the model"},
}

_DEEPSPEED_SETTINGS = ("zero_stage", "offload_optimizer", "offload_params")


def _estimate_case(args: argparse.Namespace) -> Case:
    """The Case the options describe, checked as collection checks it."""
    from gpubench.contracts.case import make_case
    from gpubench.contracts.errors import CaseError
    from gpubench.session.collection import check_hf_model_type, check_model_importable

    settings: dict[str, Any] = {}
    for option in _ESTIMATE_SETTINGS:
        name = option[2:].replace("-", "_")
        value = getattr(args, name)
        if value is not None:
            settings[name] = value
    deepspeed_only = [k for k in _DEEPSPEED_SETTINGS if settings.get(k)]
    if deepspeed_only and settings.get("engine") != "deepspeed":
        options = ", ".join("--" + k.replace("_", "-") for k in deepspeed_only)
        raise CaseError(
            f"the DeepSpeed engine is needed for {options}; add --engine deepspeed "
            f"(--engine is {settings.get('engine', 'torch')!r})"
        )
    case = make_case(**settings)
    check_model_importable(case)
    check_hf_model_type(case)
    return case


def _estimate_profiles(args: argparse.Namespace) -> list[HardwareProfile]:
    user = load_user_profiles(rootdir=args.rootdir)
    profiles = parse_profile_list(",".join(args.profile or ["cpu"]), user_profiles=user)
    return profiles


def _gib(value: int | None) -> str:
    return "-" if value is None else f"{value / GiB:.2f}"


def _in_unit(value: int | None, unit: int) -> str:
    return "-" if value is None else f"{value / unit:.2f}"


def estimate_frame(estimate: Estimate) -> pd.DataFrame:
    """One row per part: the formulas' bytes and the traced step's, in GiB (MiB for a peak
    under 1 GiB, where GiB would print zeros)."""
    from gpubench.estimate import parts

    unit, name = (GiB, "GiB") if estimate.peak_bytes >= GiB else (1024**2, "MiB")
    formulas, traced = f"formulas {name}", f"traced {name}"
    rows = [
        {
            "part": part,
            formulas: _in_unit(estimate.breakdown.get(part), unit),
            traced: _in_unit(estimate.traced_breakdown.get(part), unit),
        }
        for part in parts.DEVICE_PARTS
    ]
    rows.append(
        {
            "part": "peak",
            formulas: _in_unit(sum(estimate.breakdown.values()), unit),
            traced: _in_unit(estimate.traced_peak_bytes, unit),
        }
    )
    return pd.DataFrame(rows)


def estimate_line(profile: HardwareProfile, estimate: Estimate) -> str:
    """The verdict line: peak, capacity, headroom, verdict, and the traced peak beside."""
    traced = (
        "not traced"
        if estimate.traced_peak_bytes is None
        else f"traced {_gib(estimate.traced_peak_bytes)} GiB"
    )
    return (
        f"{profile.name}: peak {_gib(estimate.peak_bytes)} GiB of "
        f"{_gib(estimate.capacity_bytes)} GiB, headroom {_gib(estimate.headroom_bytes)} GiB "
        f"-> {estimate.verdict} ({traced})"
    )


def _estimate_record(case: Case, profile: HardwareProfile, estimate: Estimate) -> dict[str, Any]:
    return {"case": case.id, "profile": profile.name, **dataclasses.asdict(estimate)}


def _run_estimate(args: argparse.Namespace) -> int:
    from gpubench.estimate import estimate_case
    from gpubench.session.collection import check_case_on_profile

    case = _estimate_case(args)
    profiles = _estimate_profiles(args)
    for profile in profiles:
        check_case_on_profile(case, profile)
    estimates = [(p, estimate_case(case, p, trace=not args.no_trace)) for p in profiles]
    if args.json:
        records = [_estimate_record(case, p, e) for p, e in estimates]
        print(json.dumps(records[0] if len(records) == 1 else records, indent=2))
        return 0
    for profile, estimate in estimates:
        print(f"{case.id} on {profile.name} ({profile.kind}): {estimate.method}")
        print(estimate_frame(estimate).to_string(index=False))
        if estimate.host_breakdown:
            host = ", ".join(f"{k} {_gib(v)}" for k, v in estimate.host_breakdown.items())
            print(f"host RAM (pinned, every rank): {_gib(estimate.host_bytes)} GiB: {host}")
        for note in estimate.notes:
            print(f"  note: {note}")
        print()
    for profile, estimate in estimates:
        print(estimate_line(profile, estimate))
    return 0


def _add_estimate_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "estimate",
        help="predict a case's peak GPU memory on profiles, without a GPU",
        description="Predict whether a training case fits a profile's memory and how close "
        "to the limit: formulas part by part (docs/estimate.md), a traced step beside them, "
        "and a verdict per profile (fits, over_capacity, oom). Exit 2 on a bad option value.",
    )
    for option, kwargs in _ESTIMATE_SETTINGS.items():
        parser.add_argument(option, **kwargs)
    parser.add_argument(
        "--profile",
        action="append",
        metavar="NAME[:MEM][,...]",
        help="hardware profile(s), repeatable or a comma list (default: cpu)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON (a list for several)")
    parser.add_argument("--no-trace", action="store_true", help="formulas only, no traced step")
    parser.add_argument(
        "--rootdir",
        type=Path,
        default=Path.cwd(),
        metavar="DIR",
        help="read user profiles from DIR/pyproject.toml (default: the current directory)",
    )
    parser.set_defaults(run=_run_estimate)


# -- the command line -----------------------------------------------------------------------------
_COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_profiles_command,
    _add_compare_command,
    _add_export_command,
    _add_report_command,
    _add_estimate_command,
)


def _explained_errors() -> tuple[type[Exception], ...]:
    from gpubench.baseline.rules import GateError
    from gpubench.baseline.sources import SourceError
    from gpubench.baseline.store import BaselineError
    from gpubench.contracts.errors import CaseError
    from gpubench.report.load import ReportInputError
    from gpubench.report.projection import ProjectionError
    from gpubench.worker.models.built import ModelBuildError

    return (
        ProfileError,
        GateError,
        SourceError,
        BaselineError,
        ReportInputError,
        ProjectionError,
        CaseError,
        ModelBuildError,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpubench",
        description="Declarative GPU training benchmarks (run them with pytest; "
        "this command inspects profiles and results).",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_command in _COMMANDS:
        add_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``gpubench`` command line; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) and usage errors (2): argparse already printed
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return int(args.run(args))
    except _explained_errors() as exc:
        print(f"gpubench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `gpubench profiles | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
