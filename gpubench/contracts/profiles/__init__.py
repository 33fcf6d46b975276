"""Hardware profiles: what a case runs against (memory capacity, peak FLOP/s, bandwidth).

A profile is chosen on the command line (``--gpu-profile rtx5080``) as ``NAME``
or ``NAME:MEMORY``:

- ``NAME`` is a built-in profile (the cited table below), a user profile (from
  ``pyproject.toml`` or a profiles file, see :func:`load_user_profiles`), or
  ``auto``: the GPU that CUDA would call device 0 — the first entry of
  ``CUDA_VISIBLE_DEVICES`` when that is set — looked up with NVML, or ``cpu``
  when there is no NVML or no GPU (:func:`detect_profile`).
- ``:MEMORY`` (``rtx5080:12GiB``, ``cpu:2GiB``) keeps the profile's name and
  figures and replaces its memory capacity: the worker then emulates the
  smaller card. A GPU profile can only be made smaller than the card; ``cpu``
  takes any cap.

Figures (all dense, no structured sparsity):

- ``bf16_flops``: tensor-core BF16 peak. Datacenter datasheets print the
  sparse figure with a footnote; the table halves it. GeForce cards run
  FP16/BF16 tensor math with **FP32 accumulate** (what mixed-precision training
  uses) at half their FP16-accumulate rate; the table uses the FP32-accumulate
  figure from the architecture whitepapers.
- ``fp32_flops``: non-tensor-core FP32 peak (CUDA cores x 2 x boost clock).
- ``memory_bandwidth``: bytes/s, as the datasheet prints it (decimal GB/s).
- ``memory_bytes``: the capacity the card reports (NVML ``memory.total``)
  where that reading is published; otherwise the advertised "N GB" of a GDDR
  card as N GiB (which is what those cards report, to within a few MiB).
  HBM datasheets say "80GB"/"141GB"; the cards report 80/79.6/140.4 GiB.
- ``usd_per_hour``: one public on-demand list price for a single GPU, dated in
  its source; None where no such figure is published (GeForce cards).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpubench.contracts.pyproject import gpubench_table, read_toml
from gpubench.contracts.schema import record_fields
from gpubench.contracts.units import format_bytes, parse_bytes

KINDS = ("cuda", "cpu")
AUTO = "auto"  # the profile spec that means "detect GPU 0 with NVML"
MIN_MEMORY_BYTES = 1024**2  # below this a memory value is a typo ("cpu:512" meant 512MiB)
DEFAULT_CPU_MEMORY_BYTES = 8 * 1024**3  # what a `cpu` case may allocate unless told otherwise

_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*$")  # usable in "name:MEM", lists, paths


class ProfileError(ValueError):
    """A hardware profile (name, spec, list or user definition) gpubench cannot use."""


def _check_figure(name: str, field: str, value: Any, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not (value >= 0 if allow_zero else value > 0):
        bound = ">= 0" if allow_zero else "> 0"
        raise ProfileError(f"profile {name!r}: {field}={value!r} must be a number {bound} or None")


@dataclass(frozen=True)
class HardwareProfile:
    name: str
    kind: str  # "cuda" | "cpu"
    memory_bytes: int  # capacity a case may use (emulated when below the physical device's)
    bf16_flops: float | None  # dense peak, FLOP/s, no sparsity
    fp32_flops: float | None  # dense peak, FLOP/s (non-tensor-core FP32)
    memory_bandwidth: float | None  # bytes/s
    usd_per_hour: float | None = None
    description: str = ""
    source: str = ""  # citation for the figures (datasheet title + URL)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ProfileError(f"profile name {self.name!r} must be a non-empty string")
        if self.kind not in KINDS:
            raise ProfileError(
                f"profile {self.name!r}: kind={self.kind!r} is not valid; valid: {', '.join(KINDS)}"
            )
        memory = self.memory_bytes
        if isinstance(memory, bool) or not isinstance(memory, int) or memory <= 0:
            raise ProfileError(
                f"profile {self.name!r}: memory_bytes={memory!r} must be a positive integer"
            )
        _check_figure(self.name, "bf16_flops", self.bf16_flops)
        _check_figure(self.name, "fp32_flops", self.fp32_flops)
        _check_figure(self.name, "memory_bandwidth", self.memory_bandwidth)
        _check_figure(self.name, "usd_per_hour", self.usd_per_hour, allow_zero=True)

    @property
    def is_cpu(self) -> bool:
        return self.kind == "cpu"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "profile") -> HardwareProfile:
        """Rebuild a profile by the reading policy of :mod:`gpubench.contracts.schema`."""
        return cls(**record_fields(cls, data, where, error=ProfileError))


# -- the built-in table -------------------------------------------------------------------------
# Units, so every figure below reads as the datasheet prints it.
MiB = 1024**2
GiB = 1024**3
TFLOPS = 1e12
GB_PER_S = 1e9

# Sources: one string per document. A profile's `source` names every document its figures
# (and price) come from.
_AMPERE_GA10X = (
    "NVIDIA Ampere GA102 GPU Architecture whitepaper v2 (GA10x SM: 512 dense FP16/BF16 "
    "FLOP/clk/SM with FP32 accumulate) "
    "https://www.nvidia.com/content/PDF/nvidia-ampere-ga-102-gpu-architecture-whitepaper-v2.pdf"
    "; GeForce RTX 3060 specifications (3584 CUDA cores, 1.777 GHz boost, 12 GB GDDR6, "
    "192-bit, 15 Gbps) "
    "https://www.nvidia.com/en-us/geforce/graphics-cards/30-series/rtx-3060-3060ti/"
)
_ADA = (
    "NVIDIA Ada GPU Architecture whitepaper, Appendix A (GeForce RTX 4090) "
    "https://images.nvidia.com/aem-dam/Solutions/geforce/ada/nvidia-ada-gpu-architecture.pdf"
)
_RTX_BLACKWELL = (
    "NVIDIA RTX Blackwell GPU Architecture whitepaper, appendix tables "
    "https://images.nvidia.com/aem-dam/Solutions/geforce/blackwell/"
    "nvidia-rtx-blackwell-gpu-architecture.pdf"
)
_L4 = "NVIDIA L4 Tensor Core GPU datasheet https://www.nvidia.com/en-us/data-center/l4/"
_A100 = (
    "NVIDIA A100 Tensor Core GPU datasheet "
    "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/"
    "nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf"
)
_H100 = "NVIDIA H100 Tensor Core GPU datasheet https://www.nvidia.com/en-us/data-center/h100/"
_H100_PCIE = (
    "NVIDIA H100 Tensor Core GPU datasheet, H100 PCIe column "
    "https://www.nvidia.com/en-us/data-center/h100/; Lenovo ThinkSystem NVIDIA H100 PCIe "
    "product guide https://lenovopress.lenovo.com/lp1732-thinksystem-nvidia-h100-pcie-gen5-gpu"
)
_H200 = "NVIDIA H200 Tensor Core GPU datasheet https://www.nvidia.com/en-us/data-center/h200/"
_NVML_TOTALS = (
    "memory as NVML reports it (nvidia-smi memory.total), listed in "
    "https://github.com/modal-labs/modal-client/pull/2797"
)
_PRICE_GCP_L4 = (
    "price: GCP g2-standard-4 (1x L4, 4 vCPU) on-demand, us-central1 "
    "https://cloud.google.com/compute/vm-instance-pricing"
)
_PRICE_LAMBDA = "price: Lambda on-demand 1x GPU list price, 2026-05-07 https://lambda.ai/pricing"

_BUILTIN: tuple[HardwareProfile, ...] = (
    HardwareProfile(
        name="cpu",
        kind="cpu",
        memory_bytes=DEFAULT_CPU_MEMORY_BYTES,  # a cap, not a measurement; cpu:MEM changes it
        bf16_flops=None,  # depends on the host; no meaningful datasheet figure
        fp32_flops=None,
        memory_bandwidth=None,
        description="host CPU; memory is the cap a case may allocate (RLIMIT_DATA in the worker)",
        source="gpubench default: no datasheet, the figures depend on the host",
    ),
    HardwareProfile(
        name="rtx3060",
        kind="cuda",
        memory_bytes=12 * GiB,  # "12 GB GDDR6" (an 8 GB variant shares the device name)
        bf16_flops=28 * 512 * 1.777e9,  # 25.5 TFLOP/s: 28 SMs x 512 FLOP/clk/SM (FP32 acc) x boost
        fp32_flops=12.7 * TFLOPS,  # 3584 CUDA cores x 2 x 1.777 GHz
        memory_bandwidth=360 * GB_PER_S,  # 15 Gbps x 192-bit / 8
        description="NVIDIA GeForce RTX 3060 12 GB (Ampere GA106, 28 SMs)",
        source=_AMPERE_GA10X,
    ),
    HardwareProfile(
        name="rtx5070ti",
        kind="cuda",
        memory_bytes=16 * GiB,  # "16 GB GDDR7"
        bf16_flops=87.9 * TFLOPS,  # FP16/BF16 tensor, FP32 accumulate (70 SMs x 512 x 2.452 GHz)
        fp32_flops=43.9 * TFLOPS,  # 8960 CUDA cores x 2 x 2.452 GHz
        memory_bandwidth=896 * GB_PER_S,  # 28 Gbps x 256-bit / 8
        description="NVIDIA GeForce RTX 5070 Ti 16 GB (Blackwell GB203, 70 SMs)",
        source=_RTX_BLACKWELL,
    ),
    HardwareProfile(
        name="rtx5080",
        kind="cuda",
        memory_bytes=16 * GiB,  # "16 GB GDDR7"
        bf16_flops=112.6 * TFLOPS,  # FP16/BF16 tensor, FP32 accumulate (84 SMs x 512 x 2.617 GHz)
        fp32_flops=56.3 * TFLOPS,  # 10752 CUDA cores x 2 x 2.617 GHz
        memory_bandwidth=960 * GB_PER_S,  # 30 Gbps x 256-bit / 8
        description="NVIDIA GeForce RTX 5080 16 GB (Blackwell GB203, 84 SMs)",
        source=_RTX_BLACKWELL,
    ),
    HardwareProfile(
        name="rtx4090",
        kind="cuda",
        memory_bytes=24 * GiB,  # "24 GB GDDR6X" (NVML: 24564 MiB)
        bf16_flops=165.2 * TFLOPS,  # "Peak BF16 Tensor TFLOPS with FP32 Accumulate" 165.2/330.4
        fp32_flops=82.6 * TFLOPS,  # "Peak FP32 TFLOPS (non-Tensor)"
        memory_bandwidth=1008 * GB_PER_S,  # 21 Gbps x 384-bit / 8
        description="NVIDIA GeForce RTX 4090 24 GB (Ada AD102, 128 SMs)",
        source=_ADA,
    ),
    HardwareProfile(
        name="l4",
        kind="cuda",
        memory_bytes=23034 * MiB,  # "24GB" GDDR6; ECC is on by default, NVML reports 23034 MiB
        bf16_flops=242 * TFLOPS / 2,  # datasheet "BF16 Tensor Core 242 teraFLOPS" is with sparsity
        fp32_flops=30.3 * TFLOPS,
        memory_bandwidth=300 * GB_PER_S,
        usd_per_hour=0.70,
        description="NVIDIA L4 24 GB (Ada AD104, 72 W)",
        source=f"{_L4}; {_NVML_TOTALS}; {_PRICE_GCP_L4}",
    ),
    HardwareProfile(
        name="a100-40gb",
        kind="cuda",
        memory_bytes=40960 * MiB,  # "40GB HBM2"; NVML reports 40960 MiB (SXM4 and PCIe)
        bf16_flops=312 * TFLOPS,  # datasheet "BF16 Tensor Core 312 | 624*" (* sparsity)
        fp32_flops=19.5 * TFLOPS,
        memory_bandwidth=1555 * GB_PER_S,  # both SXM4 and PCIe 40GB
        usd_per_hour=1.48,
        description="NVIDIA A100 40GB (SXM4 or PCIe)",
        source=f"{_A100}; {_NVML_TOTALS}; {_PRICE_LAMBDA}",
    ),
    HardwareProfile(
        name="a100-80gb",
        kind="cuda",
        memory_bytes=81920 * MiB,  # "80GB HBM2e"; NVML reports 81920 MiB
        bf16_flops=312 * TFLOPS,
        fp32_flops=19.5 * TFLOPS,
        memory_bandwidth=2039 * GB_PER_S,  # SXM4; the 80GB PCIe card has 1,935 GB/s
        description="NVIDIA A100 80GB (SXM4 bandwidth; the PCIe card is 5 % slower)",
        source=f"{_A100}; {_NVML_TOTALS}",
    ),
    HardwareProfile(
        name="h100-pcie",
        kind="cuda",
        memory_bytes=81559 * MiB,  # "80GB HBM2e"; NVML reports 81559 MiB
        bf16_flops=1513 * TFLOPS / 2,  # "BF16 Tensor Core 1,513 teraFLOPS*" (* sparsity)
        fp32_flops=51 * TFLOPS,
        memory_bandwidth=2000 * GB_PER_S,  # "2TB/s"
        usd_per_hour=2.86,
        description="NVIDIA H100 PCIe 80GB (114 SMs, 350 W)",
        source=f"{_H100_PCIE}; {_NVML_TOTALS}; {_PRICE_LAMBDA}",
    ),
    HardwareProfile(
        name="h100-sxm",
        kind="cuda",
        memory_bytes=81559 * MiB,  # "80GB HBM3"; NVML reports 81559 MiB
        bf16_flops=1979 * TFLOPS / 2,  # "BF16 Tensor Core 1,979 teraFLOPS*" (* sparsity)
        fp32_flops=67 * TFLOPS,
        memory_bandwidth=3350 * GB_PER_S,  # "3.35TB/s"
        usd_per_hour=3.78,
        description="NVIDIA H100 SXM5 80GB (132 SMs, 700 W)",
        source=f"{_H100}; {_NVML_TOTALS}; {_PRICE_LAMBDA}",
    ),
    HardwareProfile(
        name="h200",
        kind="cuda",
        memory_bytes=143771 * MiB,  # "141GB HBM3e"; nvidia-smi on an H200 SXM reports 143771 MiB
        bf16_flops=1979 * TFLOPS / 2,  # "BF16 Tensor Core 1,979 TFLOPS*" (* sparsity), H200 SXM
        fp32_flops=67 * TFLOPS,
        memory_bandwidth=4800 * GB_PER_S,  # "4.8TB/s"
        description="NVIDIA H200 SXM 141GB (the H200 NVL is a different, slower part)",
        source=f"{_H200}; memory as nvidia-smi reports it on an H200 SXM",
    ),
)

_CPU = _BUILTIN[0]


def builtin_profiles() -> dict[str, HardwareProfile]:
    """The cited built-in table, by name (a fresh dict: callers may change it)."""
    return {profile.name: profile for profile in _BUILTIN}


def available_profiles(
    user_profiles: Mapping[str, HardwareProfile] | None = None,
) -> dict[str, HardwareProfile]:
    """Built-in profiles with user profiles added; a user profile replaces a built-in name."""
    table = builtin_profiles()
    table.update(user_profiles or {})
    return table


# -- resolving "NAME[:MEMORY]" ------------------------------------------------------------------
def _valid_names(table: Mapping[str, HardwareProfile]) -> str:
    builtins = builtin_profiles()
    builtin = [name for name in table if name in builtins]
    user = [name for name in table if name not in builtins]
    text = ", ".join(builtin)
    if user:
        text += "; user: " + ", ".join(user)
    return f"{text}; or {AUTO} (detect GPU 0 with NVML)"


def _memory_value(text: str | int, where: str) -> int:
    """A memory capacity in bytes from "12GiB" / int, with errors that say where it came from."""
    try:
        memory = parse_bytes(text)
    except ValueError as exc:
        raise ProfileError(f"{where}: {exc}") from None
    if memory < MIN_MEMORY_BYTES:
        raise ProfileError(
            f"{where}: memory {text!r} is {memory} bytes, below 1 MiB; {_unit_hint(text)}"
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
    memory = _memory_value(memory_text.strip(), f"hardware profile {spec!r}")
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


# -- detection (NVML only) ----------------------------------------------------------------------
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
            f"profile no larger than the card, or {profile.name}:{total // 2**20}MiB to cap it"
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
        return table.get("cpu", _CPU)
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


# -- user profiles ------------------------------------------------------------------------------
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
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not (value >= 0 if allow_zero else value > 0):
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
            fields["memory_bytes"] = _memory_value(value, f"{where} memory")
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
        loaded[name] = _user_profile(name, table, f"{path} [{prefix}.{name}]", base)
    return loaded


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
