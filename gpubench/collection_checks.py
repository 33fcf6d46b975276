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
HF_PACKAGE = ("transformers", "gpubench[hf]")  # what model="hf:<model_type>" builds with


def missing_requirement(case: Case) -> str | None:
    """Why this installation cannot run ``case`` (a package its engine or model needs),
    or None."""
    package = FRAMEWORK_PACKAGES.get(case.engine)
    if package is not None and not framework_installed(package[0]):
        module, extra = package
        return (
            f"engine={case.engine!r} needs the {module} package, which is not installed; "
            f"pip install '{extra}'"
        )
    if case.model.startswith("hf:") and not framework_installed(HF_PACKAGE[0]):
        module, extra = HF_PACKAGE
        return (
            f"model={case.model!r} needs the {module} package, which is not installed; "
            f"pip install '{extra}'"
        )
    return None


def check_model_importable(case: Case) -> None:
    """Raise :class:`CaseError` when a ``package.module:factory`` model's top-level
    package is not on the import path. Workers get this session's import path
    (gpubench.runner.launchers), so what is not found here is not found there;
    only the top level is looked up, which imports nothing."""
    if ":" not in case.model or case.model.startswith("hf:"):
        return
    top = case.model.split(":", 1)[0].split(".", 1)[0]
    if not framework_installed(top):
        raise CaseError(
            f"model={case.model!r}: no module {top!r} on the import path; put the factory's "
            "module beside the test file (pytest adds that folder), install its package, "
            "or add its folder to PYTHONPATH"
        )


def framework_installed(name: str) -> bool:
    """Whether the top-level package ``name`` can be imported, without importing it
    (collection must stay cheap: importing deepspeed takes seconds)."""
    try:
        return importlib.util.find_spec(name) is not None
    except ValueError:  # in sys.modules without a spec (e.g. __main__): importable
        return True
