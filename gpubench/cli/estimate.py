"""``gpubench estimate``: a case's peak memory on one or more profiles, part by part, and
a verdict per profile (fits, over_capacity, oom), without a GPU (docs/estimate.md)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Callable
from typing import Any

import pandas as pd

from gpubench.contracts.case import (
    ATTENTION_KERNELS,
    DATA_SOURCES,
    PRECISIONS,
    TOKENIZERS,
    ZERO_STAGES,
    Case,
    make_case,
)
from gpubench.contracts.catalog.sizes import BUILTIN_MODELS, builtin_config, gpt_param_count
from gpubench.contracts.errors import CaseError
from gpubench.contracts.plausibility import declared_by, parameter_mismatch
from gpubench.contracts.profiles import HardwareProfile, load_user_profiles, parse_profile_list
from gpubench.contracts.result import Estimate
from gpubench.contracts.units import GiB, MiB
from gpubench.estimate.isolated import ESTIMATE_TIMEOUT_S
from gpubench.options import PROFILE, PROFILES_FILE, ROOTDIR, add_cli_options

# option -> argparse keyword arguments; the option names a Case setting, and a setting left
# unset keeps the Case's default. A value with a fixed set of choices is checked by the Case,
# not by argparse's choices: one line naming it and the valid ones, as a test's case gets.
CASE_SETTINGS: dict[str, dict[str, Any]] = {
    "--model": {"required": True, "help": "built-in name, pkg.module:factory or hf:<type>"},
    "--model-config": {
        "action": "append",
        "metavar": "KEY=VALUE",
        "help": "the model's config override (repeat for several: --model-config n_layer=8 "
        "--model-config dropout=0.1); a value reads as an int, float, true/false or none "
        "where it looks like one, else as text",
    },
    "--batch-size": {"type": int, "help": "micro-batch per rank, in sequences"},
    "--seq-len": {"type": int, "help": "tokens per sequence"},
    "--vocab-size": {"type": int, "help": "override the model's vocabulary"},
    "--data": {"help": f"{', '.join(DATA_SOURCES)} or text:PATH (a text file or a folder)"},
    "--tokenizer": {"help": f"text data: {', '.join(TOKENIZERS)}"},
    "--precision": {"help": ", ".join(PRECISIONS)},
    "--tf32": {"action": "store_true", "default": None, "help": "TF32 matmuls (GPU profiles)"},
    "--grad-accum": {"type": int, "help": "micro-batches per optimizer step"},
    "--grad-clip": {
        "metavar": "NORM",
        "help": "max gradient norm, or none for no clipping (default 1.0: the norm's "
        "temporaries are part of the step)",
    },
    "--engine": {"help": "torch (DDP when --nproc > 1), fsdp or deepspeed"},
    "--zero-stage": {
        "type": int,
        "help": f"DeepSpeed ZeRO stage {min(ZERO_STAGES)}-{max(ZERO_STAGES)} "
        "(needs --engine deepspeed)",
    },
    "--nproc": {"type": int, "help": "ranks (GPUs) the case runs on, per node"},
    "--nnodes": {
        "type": int,
        "help": "machines the case spans: ZeRO and FSDP shard over nproc x nnodes ranks",
    },
    "--attention": {"help": ", ".join(ATTENTION_KERNELS)},
    "--grad-ckpt": {"action": "store_true", "default": None, "help": "checkpoint each block"},
    "--offload-optimizer": {"action": "store_true", "default": None, "help": "ZeRO offload"},
    "--offload-params": {
        "action": "store_true",
        "default": None,
        "help": "ZeRO-3's parameter offload, or FSDP's CPUOffloadPolicy",
    },
    "--fused-adamw": {"action": "store_true", "default": None, "help": "AdamW(fused=True)"},
    "--compile": {"action": "store_true", "default": None, "help": "torch.compile the model"},
    "--expect-params": {
        "type": int,
        "help": "the declared parameter count; a built-in model's is checked here (±10 %%), "
        "as the worker would",
    },
}
NO_VALUE = "none"  # --grad-clip none, --model-config KEY=none


def config_value(text: str) -> Any:
    """A ``--model-config`` value as the Case's model_config takes it: an int, a finite
    float, a bool (true/false), None (none) where the text reads as one, else the text."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == NO_VALUE:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text


def model_config_pairs(entries: list[str]) -> list[tuple[str, Any]]:
    """``--model-config`` entries as (key, value) pairs, repeats kept: the Case refuses a key
    given twice, naming it."""
    pairs = []
    for entry in entries:
        key, sep, value = entry.partition("=")
        if not sep or not key.strip():
            raise CaseError(
                f"--model-config {entry!r} must be KEY=VALUE (e.g. n_layer=8, dropout=0.1)"
            )
        pairs.append((key.strip(), config_value(value.strip())))
    return pairs


def grad_clip_value(text: str) -> float | None:
    """``--grad-clip``: a number (the Case checks it is positive and finite) or none."""
    if text.strip().lower() == NO_VALUE:
        return None
    try:
        return float(text)
    except ValueError:
        raise CaseError(
            f"grad_clip={text!r} must be a positive, finite number, or none for no clipping"
        ) from None


# a setting whose option's text the Case does not take as it is
PARSED: dict[str, Callable[[Any], Any]] = {
    "model_config": model_config_pairs,
    "grad_clip": grad_clip_value,
}


def check_declared_params(case: Case) -> None:
    """A built-in model's ``expect_params`` against the count it builds (the worker's check,
    made without torch: the count formula is exact); another model's is checked when it runs."""
    if case.expect_params is None or case.model not in BUILTIN_MODELS:
        return
    config = builtin_config(case)
    n_params = gpt_param_count(
        config.n_layer, config.n_embd, config.vocab_size, config.block_size, config.bias
    )
    mismatch = parameter_mismatch(n_params, case.expect_params, declared_by(case))
    if mismatch:
        raise CaseError(f"case {case.id!r}: {mismatch}")


def case_of(args: argparse.Namespace) -> Case:
    """The Case the options describe, checked as collection checks it (CaseError)."""
    from gpubench.session.collection import check_hf_model_type, check_model_importable

    settings = {}
    for option in CASE_SETTINGS:
        name = option[2:].replace("-", "_")
        value = getattr(args, name)
        if value is not None:
            settings[name] = PARSED[name](value) if name in PARSED else value
    case = make_case(**settings)
    check_model_importable(case)
    check_hf_model_type(case)
    check_declared_params(case)
    return case


def profiles_of(args: argparse.Namespace) -> list[HardwareProfile]:
    user = load_user_profiles(rootdir=args.rootdir, file=args.profiles_file)
    return parse_profile_list(",".join(args.profiles or ["cpu"]), user_profiles=user)


def _in_unit(value: int | None, unit: int) -> str:
    return "-" if value is None else f"{value / unit:.2f}"


def estimate_frame(estimate: Estimate) -> pd.DataFrame:
    """One row per part: the formulas' bytes and the traced step's, in GiB (MiB for a peak
    under 1 GiB, where GiB would print zeros)."""
    from gpubench.estimate import parts

    unit, name = (GiB, "GiB") if estimate.peak_bytes >= GiB else (MiB, "MiB")
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
        else f"traced {_in_unit(estimate.traced_peak_bytes, GiB)} GiB"
    )
    return (
        f"{profile.name}: peak {_in_unit(estimate.peak_bytes, GiB)} GiB of "
        f"{_in_unit(estimate.capacity_bytes, GiB)} GiB, headroom "
        f"{_in_unit(estimate.headroom_bytes, GiB)} GiB -> {estimate.verdict} ({traced})"
    )


def _print_estimate(case: Case, profile: HardwareProfile, estimate: Estimate) -> None:
    print(f"{case.id} on {profile.name} ({profile.kind}): {estimate.method}")
    print(estimate_frame(estimate).to_string(index=False))
    if estimate.host_breakdown:
        host = ", ".join(f"{k} {_in_unit(v, GiB)}" for k, v in estimate.host_breakdown.items())
        print(f"host RAM (pinned, every rank): {_in_unit(estimate.host_bytes, GiB)} GiB: {host}")
    for note in estimate.notes:
        print(f"  note: {note}")
    print()


def run(args: argparse.Namespace) -> int:
    from gpubench.estimate.isolated import EstimateFailed, estimate_safely
    from gpubench.session.collection import check_case_on_profile

    case = case_of(args)
    profiles = profiles_of(args)
    for profile in profiles:
        check_case_on_profile(case, profile)
    trace, timeout_s = not args.no_trace, args.estimate_timeout
    try:  # a factory model is built in a contained child, under the profile's cap
        estimates = [
            (p, estimate_safely(case, p, trace=trace, timeout_s=timeout_s)) for p in profiles
        ]
    except EstimateFailed as exc:  # one line, whatever the factory's message spanned
        print(f"gpubench estimate: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    if args.json:
        records = [
            {"case": case.id, "profile": p.name, **dataclasses.asdict(e)} for p, e in estimates
        ]
        print(json.dumps(records[0] if len(records) == 1 else records, indent=2))
        return 0
    for profile, estimate in estimates:
        _print_estimate(case, profile, estimate)
    for profile, estimate in estimates:
        print(estimate_line(profile, estimate))
    return 0


def add_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "estimate",
        help="predict a case's peak GPU memory on profiles, without a GPU",
        description="Predict whether a training case fits a profile's memory and how close "
        "to the limit: formulas part by part (docs/estimate.md), a traced step beside them, "
        "and a verdict per profile (fits, over_capacity, oom). Exit 2 on a bad option value.",
    )
    for option, kwargs in CASE_SETTINGS.items():
        parser.add_argument(option, **kwargs)
    # repeatable, each a comma list; without one: cpu
    add_cli_options(parser.add_argument, (PROFILE,), argparse.ArgumentTypeError, action="append")
    parser.add_argument("--json", action="store_true", help="print JSON (a list for several)")
    parser.add_argument("--no-trace", action="store_true", help="formulas only, no traced step")
    parser.add_argument(
        "--timeout",
        dest="estimate_timeout",  # not the plugin's --gpubench-timeout, a case's run time
        type=float,
        default=ESTIMATE_TIMEOUT_S,
        metavar="S",
        help="a pkg.module:factory model is built in a contained child under the profile's "
        f"memory; the seconds it may take (default {ESTIMATE_TIMEOUT_S:g})",
    )
    add_cli_options(parser.add_argument, (ROOTDIR, PROFILES_FILE), argparse.ArgumentTypeError)
    parser.set_defaults(run=run)
