"""Which cases can run on which profile: checked at collection, never in a worker.

Two kinds of answer. A combination no machine could honour (fp16 on the cpu
profile) is a declaration error, :func:`check_case_on_profile` raises and
collection stops. A case this *installation* cannot run (engine="deepspeed"
without the deepspeed package) is a shortfall of the environment, not of the
suite: :func:`missing_requirement` names it and the plugin skips the case
with that reason, so ``pytest suites/`` runs everything else.
"""

from __future__ import annotations

import importlib.util

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


FRAMEWORK_PACKAGES = {"deepspeed": ("deepspeed", "gpubench[deepspeed]")}  # engine -> (import, pip)


def missing_requirement(case: Case) -> str | None:
    """Why this installation cannot run ``case`` (a package its engine needs), or None."""
    package = FRAMEWORK_PACKAGES.get(case.engine)
    if package is None or framework_installed(package[0]):
        return None
    module, extra = package
    return (
        f"engine={case.engine!r} needs the {module} package, which is not installed; "
        f"pip install '{extra}'"
    )


def framework_installed(name: str) -> bool:
    """Whether the top-level package ``name`` can be imported, without importing it
    (collection must stay cheap: importing deepspeed takes seconds)."""
    return importlib.util.find_spec(name) is not None
