"""Which cases can run on which profile: checked at collection, never in a worker."""

from __future__ import annotations

from gpubench.case import Case, CaseError
from gpubench.profiles import HardwareProfile


def check_case_on_profile(case: Case, profile: HardwareProfile) -> None:
    """Raise :class:`CaseError` for a combination no run could honour."""
    if profile.is_cpu and case.flags.precision == "fp16":
        raise CaseError(
            f"case {case.id!r}: precision='fp16' cannot run on profile {profile.name!r} "
            "(fp16 mixed precision with loss scaling is a CUDA training mode); "
            "valid on cpu: fp32, bf16"
        )
    if profile.is_cpu and case.flags.tf32:
        raise CaseError(
            f"case {case.id!r}: tf32=True means nothing on profile {profile.name!r} "
            "(TF32 is an Ampere+ tensor-core mode); drop the flag for cpu runs"
        )
