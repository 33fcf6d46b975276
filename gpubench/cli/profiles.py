"""``gpubench profiles``: the hardware profiles a run can use, with figures and sources."""

from __future__ import annotations

import argparse
import json
import shutil
import textwrap
from collections.abc import Iterable

import pandas as pd

from gpubench.contracts.profiles import HardwareProfile, available_profiles, load_user_profiles
from gpubench.contracts.units import GB_PER_S, TFLOPS, GiB
from gpubench.options import PROFILES_FILE, ROOTDIR, add_cli_options


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


def run(args: argparse.Namespace) -> int:
    user = load_user_profiles(rootdir=args.rootdir, file=args.profiles_file)
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
    width = min(120, shutil.get_terminal_size((120, 24)).columns)
    for p in profiles:  # wrapped at spaces; a URL longer than the line stays whole
        text = f"{p.name}: {p.source or '-'}"
        print(textwrap.fill(text, width, initial_indent="  ", subsequent_indent="    ",
                            break_long_words=False, break_on_hyphens=False))  # fmt: skip
    return 0


def add_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "profiles",
        help="list hardware profiles (built-in and user) with their figures and sources",
        description="List the hardware profiles a run can use: built-in (cited) and user "
        "profiles from pyproject.toml [tool.gpubench.profiles.<name>] or a profiles file.",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list of profiles")
    add_cli_options(parser.add_argument, (ROOTDIR, PROFILES_FILE), argparse.ArgumentTypeError)
    parser.set_defaults(run=run)
