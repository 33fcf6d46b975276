"""The ``gpubench`` console script.

    gpubench profiles [--json] [--rootdir DIR] [--file FILE]

Each subcommand is one ``_add_<name>_command(subparsers)`` function that adds
its parser and sets ``run`` to a function ``(args) -> exit code``; adding a
subcommand (``report``, ...) means writing those two functions and listing the
first in ``_COMMANDS``. Errors gpubench can explain (a bad profile file, ...)
print one line to stderr and exit 2, like argparse's own usage errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pandas as pd

from gpubench.profiles import (
    GB_PER_S,
    TFLOPS,
    GiB,
    HardwareProfile,
    ProfileError,
    available_profiles,
    load_user_profiles,
)

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


# -- the command line -----------------------------------------------------------------------------
_COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (_add_profiles_command,)

_EXPLAINED_ERRORS: tuple[type[Exception], ...] = (ProfileError,)


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
    except _EXPLAINED_ERRORS as exc:
        print(f"gpubench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `gpubench profiles | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
