"""Where one training step's time goes: kernel time by category, from ``torch.profiler``.

When the reference run falls short of its MFU target, the kit says what
limited it: one step of the same case (the bare loop's step, after warm-up,
so compilation and autotuning are done) under ``torch.profiler``, its kernels'
self time summed by category (matmul, attention, optimizer, ...), and the
share of the step's wall time the device spent idle (launch overhead or a
host-bound step). On a CPU the categories sum the operators' self CPU time.

    python -m gpubench.validation.kernel_profile '{"model": "gpt-mini", ...}' [cuda] > out.txt
"""

from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from typing import Any

import torch

from gpubench.contracts.case import Case
from gpubench.validation.bare_loop import bare_step, case_and_device

WARMUP_STEPS = 5
TOP_KERNELS = 12

# first match wins: kernel (or operator) name pattern -> category
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("loss", r"cross_entropy|nll_loss|log_softmax"),
    ("attention", r"flash|fmha|attention|sdpa|softmax"),
    ("matmul", r"gemm|cutlass|xmma|matmul|aten::mm\b|aten::addmm|aten::bmm|aten::linear|sm\d+_"),
    ("optimizer", r"adam|multi_tensor|foreach"),
    ("normalization", r"norm"),
    ("compiled fused (triton)", r"^triton|triton_"),
    ("copy and fill", r"memcpy|memset|copy|fill|cat\b|\bto\b"),
    ("communication", r"nccl|all_?reduce|all_?gather|reduce_?scatter|broadcast"),
    ("elementwise and reductions", r"elementwise|vectorized|unrolled|reduce|aten::"),
)


def category(name: str) -> str:
    lowered = name.lower()
    for label, pattern in CATEGORIES:
        if re.search(pattern, lowered):
            return label
    return "other"


def profile_step(case: Case, device: str = "cpu") -> dict[str, Any]:
    """Profile one step of ``case`` after warm-up; kernel seconds by category and the top
    kernels, the step's wall time, and the device's idle share of it (CUDA only)."""
    step = bare_step(case, device)
    for _ in range(WARMUP_STEPS):
        step()
    cuda = device.startswith("cuda")
    activities = [torch.profiler.ProfilerActivity.CPU]
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
        torch.cuda.synchronize()
    with torch.profiler.profile(activities=activities) as prof:
        started = time.perf_counter()
        step()  # ends with loss.item(): the device has finished the step
        wall_s = time.perf_counter() - started
    by_category: dict[str, float] = defaultdict(float)
    by_kernel: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        if cuda:
            seconds = event.self_device_time_total / 1e6
            if event.device_type != torch.autograd.DeviceType.CUDA:
                continue
        else:
            seconds = event.self_cpu_time_total / 1e6
            if event.key.startswith("ProfilerStep"):
                continue
        if seconds <= 0:
            continue
        by_category[category(event.key)] += seconds
        by_kernel[event.key] += seconds
    kernel_s = sum(by_category.values())
    top = sorted(by_kernel.items(), key=lambda item: -item[1])[:TOP_KERNELS]
    return {
        "case": case.to_dict(),
        "device": device,
        "step_wall_s": wall_s,
        "kernel_s": kernel_s,
        # kernels can overlap (streams) and CPU operators run on several threads: a share
        # below zero means more kernel time than wall time, not an idle device
        "idle_share": (1 - kernel_s / wall_s) if cuda and wall_s > 0 else None,
        "categories": dict(sorted(by_category.items(), key=lambda item: -item[1])),
        "top": top,
    }


def format_profile(profile: dict[str, Any]) -> str:
    """The profile as a plain-text table (the kit's kernel-profile.txt)."""
    kind = "kernel" if profile["device"].startswith("cuda") else "operator self CPU"
    wall, total = profile["step_wall_s"], profile["kernel_s"]
    lines = [
        f"one training step of {profile['case']['id']} on {profile['device']}: "
        f"{wall * 1e3:.1f} ms wall, {total * 1e3:.1f} ms {kind} time",
    ]
    if profile["idle_share"] is not None:
        lines.append(f"device idle (no kernel running): {profile['idle_share']:.1%} of the step")
    lines += ["", f"{'category':32s} {'ms':>10s} {'share':>7s}"]
    for label, seconds in profile["categories"].items():
        share = seconds / total if total else 0.0
        lines.append(f"{label:32s} {seconds * 1e3:10.2f} {share:7.1%}")
    lines += ["", f"top {len(profile['top'])} by {kind} time:"]
    for name, seconds in profile["top"]:
        lines.append(f"{seconds * 1e3:10.2f} ms  {name[:110]}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parsed = case_and_device(argv, __doc__)
    if parsed is None:
        return 2
    profile = profile_step(*parsed)
    print(json.dumps(profile))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
