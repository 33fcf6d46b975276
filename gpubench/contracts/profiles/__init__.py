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

from gpubench.contracts.profiles.builtin import available_profiles, builtin_profiles
from gpubench.contracts.profiles.detect import (
    AUTO,
    check_runnable_here,
    detect_profile,
    device_slug,
    first_visible_device,
    nvml_gpu0,
    profile_name_for_device,
)
from gpubench.contracts.profiles.profile import (
    DEFAULT_CPU_MEMORY_BYTES,
    KINDS,
    HardwareProfile,
    ProfileError,
)
from gpubench.contracts.profiles.resolve import parse_profile_list, resolve_profile
from gpubench.contracts.profiles.user import USER_PROFILE_KEYS, load_user_profiles

__all__ = [
    "AUTO",
    "DEFAULT_CPU_MEMORY_BYTES",
    "KINDS",
    "USER_PROFILE_KEYS",
    "HardwareProfile",
    "ProfileError",
    "available_profiles",
    "builtin_profiles",
    "check_runnable_here",
    "detect_profile",
    "device_slug",
    "first_visible_device",
    "load_user_profiles",
    "nvml_gpu0",
    "parse_profile_list",
    "profile_name_for_device",
    "resolve_profile",
]
