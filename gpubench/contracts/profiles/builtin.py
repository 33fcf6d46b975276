"""The built-in profiles: one cited row per card, figures as the datasheets print them
(see the package's docstring for what each figure is and how sparsity and GeForce's
FP32-accumulate rate are handled)."""

from __future__ import annotations

from collections.abc import Mapping

from gpubench.contracts.profiles.profile import DEFAULT_CPU_MEMORY_BYTES, HardwareProfile
from gpubench.contracts.units import GB_PER_S, TFLOPS, GiB, MiB

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

CPU = _BUILTIN[0]  # the profile `auto` falls back to without a GPU


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
