"""The GPU a run is on, read with NVML (never torch.cuda: a CUDA context in the long-lived
pytest parent would hold GPU memory for the whole session): its built-in profile, and
whether a profile can run here honestly."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping

from gpubench.contracts.profiles.builtin import CPU, builtin_profiles
from gpubench.contracts.profiles.profile import HardwareProfile, ProfileError
from gpubench.contracts.units import MiB, format_bytes

AUTO = "auto"  # the profile spec that means "detect GPU 0 with NVML"
# Device name (as NVML/nvidia-smi print it) -> built-in profile. Checked in order on the
# lowercased name; the first pattern that matches and whose exclusions do not, wins.
# Laptop/mobile parts, MIG slices and variants with other figures (RTX 4090 D, 3060 Ti,
# H100/H200 NVL) are excluded: an unknown profile is better than wrong figures.
_MOBILE = r"laptop|mobile|max-q"
_MIG = r"\bmig\b"
_DEVICE_PATTERNS: tuple[tuple[str, str, str], ...] = (
    # (profile, must match, must not match)
    ("h200", r"\bh200\b", rf"\bnvl\b|{_MIG}"),  # "NVIDIA H200"; GH200 has no word boundary
    ("h100-pcie", r"\bh100\b.*\bpcie\b", _MIG),  # "NVIDIA H100 PCIe"
    ("h100-sxm", r"\bh100\b.*\b(hbm3|sxm5?)\b", rf"\bnvl\b|{_MIG}"),  # "NVIDIA H100 80GB HBM3"
    ("a100-80gb", r"\ba100\b.*\b80gb\b", _MIG),  # "NVIDIA A100-SXM4-80GB", "A100 80GB PCIe"
    ("a100-40gb", r"\ba100\b.*\b40gb\b", _MIG),  # "NVIDIA A100-SXM4-40GB", "A100-PCIE-40GB"
    ("l4", r"\bl4\b", _MIG),  # "NVIDIA L4" (not L40, L40S)
    ("rtx4090", r"\brtx ?4090\b", rf"\b4090 ?d\b|{_MOBILE}"),
    ("rtx5080", r"\brtx ?5080\b", _MOBILE),
    ("rtx5070ti", r"\brtx ?5070 ?ti\b", _MOBILE),
    ("rtx3060", r"\brtx ?3060\b", rf"\b3060 ?ti\b|{_MOBILE}"),
)


def profile_name_for_device(device_name: str) -> str | None:
    """The built-in profile for an NVML device name, or None when none fits exactly.

    >>> profile_name_for_device("NVIDIA H100 80GB HBM3")
    'h100-sxm'
    """
    normalized = " ".join(device_name.lower().replace("_", " ").split())
    for profile, pattern, exclude in _DEVICE_PATTERNS:
        if re.search(pattern, normalized) and not re.search(exclude, normalized):
            return profile
    return None


def device_slug(device_name: str) -> str:
    """A profile name from a device name: "NVIDIA RTX A6000" -> "nvidia-rtx-a6000"."""
    return re.sub(r"[^a-z0-9]+", "-", device_name.lower()).strip("-") or "unknown-gpu"


def first_visible_device() -> str | None:
    """CUDA_VISIBLE_DEVICES' first entry; "" when it hides every GPU; None when unset."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return None
    first = visible.split(",")[0].strip()
    return "" if first.startswith("-") else first


def nvml_gpu0() -> tuple[str, int] | None:
    """(name, total memory bytes) of the GPU CUDA would call device 0, read with NVML.

    NVML, not torch.cuda: a CUDA context created in the long-lived pytest parent
    would hold GPU memory for the whole session. NVML indexes GPUs in PCI bus
    order, as CUDA does with CUDA_DEVICE_ORDER=PCI_BUS_ID; a UUID in
    CUDA_VISIBLE_DEVICES is looked up as a UUID.
    """
    visible = first_visible_device()
    if visible == "":
        return None
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        if visible is None or visible.isdigit():
            index = int(visible or 0)
            if index >= pynvml.nvmlDeviceGetCount():
                return None
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        else:
            handle = pynvml.nvmlDeviceGetHandleByUUID(visible)
        name = pynvml.nvmlDeviceGetName(handle)
        total = int(pynvml.nvmlDeviceGetMemoryInfo(handle).total)
    except pynvml.NVMLError:
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass
    if isinstance(name, bytes):  # nvidia-ml-py < 11.515 returns bytes
        name = name.decode(errors="replace")
    return name, total


def nvml_device_count() -> int:
    """How many GPUs NVML sees on this machine (CUDA_VISIBLE_DEVICES not applied); 0 without
    NVML or a driver. NVML, not torch.cuda, for the reason :func:`nvml_gpu0` gives."""
    try:
        import pynvml
    except ImportError:
        return 0
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return 0
    try:
        return int(pynvml.nvmlDeviceGetCount())
    except pynvml.NVMLError:
        return 0
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


CAPACITY_TOLERANCE = 0.01  # SKUs of one card report totals a few MiB apart


def check_runnable_here(profile: HardwareProfile) -> None:
    """Raise :class:`ProfileError` when this machine cannot run ``profile`` honestly.

    A CUDA profile needs a visible NVIDIA GPU with at least the profile's memory:
    a smaller profile is emulated by capping the allocator, but a larger one
    cannot be (an ``h200`` run on an 80 GiB card would report the card's OOMs and
    speed under the h200's name).
    """
    if profile.is_cpu:
        return
    gpu = nvml_gpu0()
    if gpu is None:
        raise ProfileError(
            f"profile {profile.name!r} needs an NVIDIA GPU and NVML sees none here; "
            "run it on a GPU machine, or use --gpu-profile cpu (or auto)"
        )
    device, total = gpu
    if profile.memory_bytes > total * (1 + CAPACITY_TOLERANCE):
        raise ProfileError(
            f"profile {profile.name!r} has {format_bytes(profile.memory_bytes)} but this GPU "
            f"({device}) has {format_bytes(total)}: a larger card cannot be emulated; use a "
            f"profile no larger than the card, or {profile.name}:{total // MiB}MiB to cap it"
        )


def detect_profile(profiles: Mapping[str, HardwareProfile] | None = None) -> HardwareProfile:
    """The profile of GPU 0 (CUDA_VISIBLE_DEVICES' first), found with NVML; ``cpu`` without one.

    A known device name gives its profile from ``profiles`` (default: the
    built-ins), with memory lowered to what NVML reports if that is less. An
    unknown GPU gives a profile named after the device (``nvidia-rtx-a6000``)
    with NVML's memory and no FLOP/s figures — unless ``profiles`` has a
    profile of that name (a user profile), which is then used.
    """
    table = dict(profiles) if profiles is not None else builtin_profiles()
    gpu = nvml_gpu0()
    if gpu is None:
        return table.get("cpu", CPU)
    device_name, total = gpu
    for key in (profile_name_for_device(device_name), device_slug(device_name)):
        if key is not None and key in table:
            base = table[key]
            if total < base.memory_bytes:  # the card cannot give more than it has
                return dataclasses.replace(base, memory_bytes=total)
            return base
    return HardwareProfile(
        name=device_slug(device_name),
        kind="cuda",
        memory_bytes=total,
        bf16_flops=None,
        fp32_flops=None,
        memory_bandwidth=None,
        description=f"{device_name} (detected with NVML; no built-in figures)",
        source="NVML nvmlDeviceGetName / nvmlDeviceGetMemoryInfo",
    )
