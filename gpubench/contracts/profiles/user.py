"""User profiles: ``[tool.gpubench.profiles.NAME]`` tables of pyproject.toml and
``[profiles.NAME]`` tables of a profiles file, a new card or a built-in overridden."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gpubench.contracts.profiles.builtin import builtin_profiles
from gpubench.contracts.profiles.detect import AUTO
from gpubench.contracts.profiles.profile import KINDS, HardwareProfile, ProfileError
from gpubench.contracts.profiles.resolve import memory_value
from gpubench.contracts.pyproject import gpubench_table, read_toml
from gpubench.contracts.schema import is_finite_number
from gpubench.contracts.units import GB_PER_S, TFLOPS

_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*$")  # usable in "name:MEM", lists, paths
# key -> what its value must be (the HardwareProfile field it sets is in _user_profile)
USER_PROFILE_KEYS: dict[str, str] = {
    "memory": 'bytes: "12GiB", "16GB" or an integer number of bytes (required for a new name)',
    "bf16_tflops": "dense BF16 peak in TFLOP/s, a number > 0",
    "fp32_tflops": "dense FP32 peak in TFLOP/s, a number > 0",
    "bandwidth_gbps": "memory bandwidth in GB/s (decimal), a number > 0",
    "usd_per_hour": "on-demand price in USD per hour, a number >= 0",
    "kind": f"one of {', '.join(KINDS)} (default cuda)",
    "description": "a string",
    "source": "a string: where the figures come from",
}


def _number(where: str, key: str, value: Any, *, allow_zero: bool = False) -> float:
    if not is_finite_number(value) or not (value >= 0 if allow_zero else value > 0):
        raise ProfileError(f"{where} {key}={value!r}: expected {USER_PROFILE_KEYS[key]}")
    return float(value)


def _string(where: str, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ProfileError(f"{where} {key}={value!r}: expected {USER_PROFILE_KEYS[key]}")
    return value


def _user_profile(
    name: str, table: Any, where: str, base: HardwareProfile | None
) -> HardwareProfile:
    """One ``[...profiles.NAME]`` table -> HardwareProfile, inheriting from ``base`` if given."""
    if not _NAME_PATTERN.match(name) or name == AUTO:
        raise ProfileError(
            f"{where}: profile name {name!r} is not usable; use lowercase letters, digits, "
            f"'.', '_' and '-' (not {AUTO!r})"
        )
    if not isinstance(table, dict):
        raise ProfileError(f"{where}: expected a table of keys, got {table!r}")
    unknown = sorted(set(table) - set(USER_PROFILE_KEYS))
    if unknown:
        raise ProfileError(
            f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(USER_PROFILE_KEYS)}"
        )
    if base is None and "memory" not in table:
        raise ProfileError(
            f"{where}: missing required key 'memory' (e.g. memory = \"12GiB\"); "
            f"valid keys: {', '.join(USER_PROFILE_KEYS)}"
        )
    fields: dict[str, Any] = (
        base.to_dict()
        if base is not None
        else {"kind": "cuda", "bf16_flops": None, "fp32_flops": None, "memory_bandwidth": None}
    )
    fields["name"] = name
    for key, value in table.items():
        if key == "memory":
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise ProfileError(f"{where} memory={value!r}: expected {USER_PROFILE_KEYS[key]}")
            fields["memory_bytes"] = memory_value(value, f"{where} memory")
        elif key == "bf16_tflops":
            fields["bf16_flops"] = _number(where, key, value) * TFLOPS
        elif key == "fp32_tflops":
            fields["fp32_flops"] = _number(where, key, value) * TFLOPS
        elif key == "bandwidth_gbps":
            fields["memory_bandwidth"] = _number(where, key, value) * GB_PER_S
        elif key == "usd_per_hour":
            fields["usd_per_hour"] = _number(where, key, value, allow_zero=True)
        elif key == "kind":
            if value not in KINDS:
                raise ProfileError(f"{where} kind={value!r}: expected {USER_PROFILE_KEYS[key]}")
            fields["kind"] = value
        else:  # description, source
            fields[key] = _string(where, key, value)
    if "source" not in table:
        changed = ", ".join(sorted(table))
        fields["source"] = (
            f"{base.source}; {changed} set in {where}" if base is not None else f"user: {where}"
        )
    return HardwareProfile(**fields)


def _user_tables(
    tables: Any, path: Path, prefix: str, profiles: Mapping[str, HardwareProfile]
) -> dict[str, HardwareProfile]:
    """All ``[<prefix>.<name>]`` tables of one file; a name already loaded or built in is a base."""
    if not isinstance(tables, dict):
        raise ProfileError(f"{path}: [{prefix}] must hold tables [{prefix}.<name>]")
    builtins = builtin_profiles()
    loaded: dict[str, HardwareProfile] = {}
    for name, table in tables.items():
        base = profiles.get(name) or builtins.get(name)
        where = f"{path} [{prefix}.{name}]{_line_said(path, prefix, name)}"
        loaded[name] = _user_profile(name, table, where, base)
    return loaded


def _line_said(path: Path, prefix: str, name: str) -> str:
    """`` (line N)``: where the table ``[<prefix>.<name>]`` starts in ``path``, for
    messages; empty where it is not written as a header of its own."""
    header = re.compile(
        rf"^[ \t]*\[[ \t]*{re.escape(prefix)}\.(?:{re.escape(name)}|\"{re.escape(name)}\")[ \t]*\]",
        re.MULTILINE,
    )
    try:
        found = header.search(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (line {found.string.count(chr(10), 0, found.start()) + 1})" if found else ""


def load_user_profiles(
    rootdir: Path | None = None,
    file: Path | None = None,
) -> dict[str, HardwareProfile]:
    """User profiles from ``<rootdir>/pyproject.toml`` and/or a standalone TOML ``file``.

    In ``pyproject.toml`` (a missing file or section means no profiles)::

        [tool.gpubench.profiles.my-3090]
        memory = "24GiB"             # required for a new name: "24GiB", "24GB" or bytes
        bf16_tflops = 71             # dense, TFLOP/s
        fp32_tflops = 35.6
        bandwidth_gbps = 936         # GB/s
        usd_per_hour = 0.22
        kind = "cuda"                # or "cpu"
        description = "my RTX 3090"
        source = "GA102 whitepaper"

    A standalone file (which must exist) has the same tables as
    ``[profiles.<name>]`` and nothing else. The file's profiles are read after
    pyproject's and win on the same name.

    A user profile named like a built-in (``cpu``, ``l4``, ...) **overrides** it:
    the keys it gives replace the built-in's values and the rest are inherited,
    so ``[tool.gpubench.profiles.cpu] memory = "2GiB"`` changes only the cpu cap
    and ``[tool.gpubench.profiles.l4] usd_per_hour = 0.85`` only the price.

    Unknown keys and bad values raise ProfileError naming the file, profile and key.
    """
    profiles: dict[str, HardwareProfile] = {}
    found = gpubench_table(rootdir, "profiles", ProfileError)
    if found is not None:
        pyproject, tables = found
        profiles.update(_user_tables(tables, pyproject, "tool.gpubench.profiles", profiles))
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise ProfileError(f"profiles file {path} does not exist")
        data = read_toml(path, ProfileError)
        unknown = sorted(set(data) - {"profiles"})
        if unknown:
            raise ProfileError(
                f"{path}: unknown top-level key {unknown[0]!r}; a profiles file holds only "
                "[profiles.<name>] tables"
            )
        profiles.update(_user_tables(data.get("profiles", {}), path, "profiles", profiles))
    return profiles
