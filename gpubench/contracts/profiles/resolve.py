"""``NAME`` or ``NAME:MEMORY`` (``rtx5080:12GiB``, ``cpu:2GiB``, ``auto``), and comma lists
of them, resolved to profiles with errors that name the bad item and the valid ones."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from gpubench.contracts.profiles.builtin import available_profiles, builtin_profiles
from gpubench.contracts.profiles.detect import AUTO, detect_profile
from gpubench.contracts.profiles.profile import (
    MAX_MEMORY_BYTES,
    MIN_MEMORY_BYTES,
    HardwareProfile,
    ProfileError,
)
from gpubench.contracts.units import format_bytes, parse_bytes


def _valid_names(table: Mapping[str, HardwareProfile]) -> str:
    builtins = builtin_profiles()
    builtin = [name for name in table if name in builtins]
    user = [name for name in table if name not in builtins]
    text = ", ".join(builtin)
    if user:
        text += "; user: " + ", ".join(user)
    return f"{text}; or {AUTO} (detect GPU 0 with NVML)"


def memory_value(text: str | int, where: str) -> int:
    """A memory capacity in bytes from "12GiB" / int, with errors that say where it came from."""
    try:
        memory = parse_bytes(text)
    except ValueError as exc:
        raise ProfileError(f"{where}: {exc}") from None
    if memory < MIN_MEMORY_BYTES:
        raise ProfileError(
            f"{where}: memory {text!r} is {memory} bytes, below 1 MiB; {_unit_hint(text)}"
        )
    if memory > MAX_MEMORY_BYTES:
        raise ProfileError(
            f"{where}: memory {text!r} is {memory} bytes, above 1 PiB, more than any device "
            "has; valid: 1 MiB to 1 PiB"
        )
    return memory


def _unit_hint(text: str | int) -> str:
    """How to write a capacity: the same number with a unit, where that is one (a bare
    512 meant 512MiB), else an example."""
    bare = str(text).strip()
    suggestions = []
    for unit in ("GiB", "MiB"):
        try:
            if parse_bytes(bare + unit) >= MIN_MEMORY_BYTES:
                suggestions.append(f"'{bare}{unit}'")
        except ValueError:
            continue
    if suggestions:
        return f"write the unit, e.g. {' or '.join(suggestions)}"
    return "give a capacity of 1 MiB or more, with its unit, e.g. '8GiB' or '512MiB'"


def resolve_profile(
    spec: str,
    *,
    user_profiles: Mapping[str, HardwareProfile] | None = None,
) -> HardwareProfile:
    """Resolve ``NAME`` or ``NAME:MEMORY`` (``rtx5080``, ``rtx5080:12GiB``, ``cpu:2GiB``, ``auto``).

    ``:MEMORY`` keeps the base profile's name and figures and replaces its memory
    capacity; for a GPU profile it must not exceed the card's. Names are
    case-insensitive.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ProfileError(
            f"empty hardware profile {spec!r}; expected NAME or NAME:MEMORY, e.g. rtx5080:12GiB"
        )
    name, colon, memory_text = spec.strip().partition(":")
    name = name.strip().lower()
    table = available_profiles(user_profiles)
    if name == AUTO:
        base = detect_profile(table)
    elif name in table:
        base = table[name]
    else:
        origin = "" if spec.strip().lower() == name else f" (in {spec!r})"
        raise ProfileError(
            f"unknown hardware profile {name!r}{origin}; valid: {_valid_names(table)}"
        )
    if not colon:
        return base
    if not memory_text.strip():
        raise ProfileError(
            f"hardware profile {spec!r}: nothing after ':'; expected NAME:MEMORY, e.g. {name}:8GiB"
        )
    memory = memory_value(memory_text.strip(), f"hardware profile {spec!r}")
    if not base.is_cpu and memory > base.memory_bytes:
        raise ProfileError(
            f"hardware profile {spec!r}: {format_bytes(memory)} is more than {base.name}'s "
            f"{format_bytes(base.memory_bytes)}; a GPU profile can only be emulated smaller "
            "than the card"
        )
    note = f"memory set to {format_bytes(memory)} by {spec.strip()!r}"
    description = f"{base.description} ({note})" if base.description else note
    return dataclasses.replace(base, memory_bytes=memory, description=description)


_LIST_FORM = "expected NAME or NAME:MEMORY items separated by commas, e.g. cpu,rtx5080:12GiB"


def parse_profile_list(
    value: str,
    *,
    user_profiles: Mapping[str, HardwareProfile] | None = None,
) -> list[HardwareProfile]:
    """Resolve a comma-separated list (``cpu,rtx5080:12GiB``); empty items and repeats are errors.

    Results and baselines are keyed by profile name, so a name may appear once
    (``rtx5080,rtx5080:12GiB`` is rejected).
    """
    if not isinstance(value, str) or not value.strip():
        raise ProfileError(f"{_LIST_FORM}; got an empty list {value!r}")
    resolved: list[HardwareProfile] = []
    spec_of: dict[str, str] = {}
    for position, item in enumerate(value.split(","), start=1):
        spec = item.strip()
        if not spec:
            raise ProfileError(f"{_LIST_FORM}; item {position} of {value!r} is empty")
        profile = resolve_profile(spec, user_profiles=user_profiles)
        if profile.name in spec_of:
            raise ProfileError(
                f"hardware profile list {value!r} names {profile.name!r} twice "
                f"({spec_of[profile.name]!r} and {spec!r}); results are keyed by profile name, "
                "so each profile may appear once"
            )
        spec_of[profile.name] = spec
        resolved.append(profile)
    return resolved
