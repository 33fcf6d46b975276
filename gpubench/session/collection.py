"""Which cases can run on which profile: checked at collection, never in a worker.

Two kinds of answer. A combination no machine could honour (fp16 on the cpu
profile) is a declaration error, :func:`check_case_on_profile` raises and
collection stops. A case this *installation* cannot run (engine="deepspeed"
without the deepspeed package) is a shortfall of the environment, not of the
suite: :func:`missing_requirement` names it and the plugin skips the case
with that reason, so ``pytest suites/`` runs everything else.

:func:`case_params` applies both to a test's matrix on the run's profiles: what the
plugin parametrizes the test with.
"""

from __future__ import annotations

import ast
import difflib
import functools
import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gpubench.contracts.case import Case, CaseError
from gpubench.contracts.catalog.spec import HF_PREFIX
from gpubench.contracts.profiles import HardwareProfile
from gpubench.declaration import Matrix
from gpubench.runner.launchers import Rendezvous
from gpubench.session.devices import DevicePlan


@functools.lru_cache(maxsize=32)
def check_text_data(data: str) -> None:
    """A text case's files, looked at once per ``data`` at collection (the first 8 KiB of
    each: gpubench.worker.data.corpus), so a bad path fails before any worker starts."""
    from gpubench.worker.data.corpus import TextSourceError, check_text_source

    try:
        check_text_source(data)
    except TextSourceError as exc:
        raise CaseError(str(exc)) from None


def check_case_on_profile(case: Case, profile: HardwareProfile) -> None:
    """Raise :class:`CaseError` for a combination no run could honour."""
    if case.text_data:
        check_text_data(case.data)
    if profile.is_cpu and case.flags.precision == "fp16":
        raise CaseError(
            f"case {case.id!r}: precision='fp16' cannot run on profile {profile.name!r} "
            "(fp16 mixed precision with loss scaling is a CUDA training mode); "
            "valid on cpu: fp32, bf16, bf16-pure"
        )
    if profile.is_cpu and case.flags.tf32:
        raise CaseError(
            f"case {case.id!r}: tf32=True means nothing on profile {profile.name!r} "
            "(TF32 is an Ampere+ tensor-core mode); drop the flag for cpu runs"
        )


FRAMEWORK_PACKAGES = {"deepspeed": ("deepspeed", "gpubench[deepspeed]")}  # engine -> (import, pip)
HF_PACKAGE = ("transformers", "gpubench[hf]")  # what model="hf:<model_type>" builds with


def missing_requirement(case: Case, *, to_run: bool = True) -> str | None:
    """Why this installation cannot run ``case`` (a package its engine or model needs),
    or None. ``to_run=False``: only estimate it, which needs the model (``hf:``:
    transformers) but not the engine."""
    package = FRAMEWORK_PACKAGES.get(case.engine)
    if to_run and package is not None and not framework_installed(package[0]):
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


HF_CAUSAL_LM_REGISTRY = "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"  # what AutoModelForCausalLM builds


def check_hf_model_type(case: Case) -> None:
    """Raise :class:`CaseError` when an ``hf:<model_type>`` model is not a causal language
    model the installed transformers can build (``AutoModelForCausalLM``). Without
    transformers, or where its registry cannot be read, nothing is checked."""
    if not case.model.startswith(HF_PREFIX) or not framework_installed(HF_PACKAGE[0]):
        return
    known = hf_causal_lm_types()
    model_type = case.model[len(HF_PREFIX) :]
    if not known or model_type in known:
        return
    close = difflib.get_close_matches(model_type, sorted(known), n=3)
    hint = f" (did you mean {', '.join(repr(HF_PREFIX + c) for c in close)}?)" if close else ""
    raise CaseError(
        f"model={case.model!r}: {model_type!r} is not a causal language model type of the "
        f"installed transformers{hint}; it knows {len(known)}, listed in "
        f"transformers.models.auto.modeling_auto.{HF_CAUSAL_LM_REGISTRY}"
    )


@functools.cache
def hf_causal_lm_types() -> frozenset[str]:
    """The model types transformers' ``AutoModelForCausalLM`` maps, read from the installed
    package's source, not imported (importing transformers imports torch: seconds at every
    collection); empty when the registry cannot be read there."""
    spec = importlib.util.find_spec(HF_PACKAGE[0])
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    source = Path(list(spec.submodule_search_locations)[0]) / "models/auto/modeling_auto.py"
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return frozenset()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == HF_CAUSAL_LM_REGISTRY for t in node.targets
        ):
            return frozenset(
                pair.elts[0].value
                for pair in ast.walk(node.value)
                if isinstance(pair, ast.Tuple)
                and len(pair.elts) == 2
                and isinstance(pair.elts[0], ast.Constant)
                and isinstance(pair.elts[0].value, str)
            )
    return frozenset()


def framework_installed(name: str) -> bool:
    """Whether the top-level package ``name`` can be imported, without importing it
    (collection must stay cheap: importing deepspeed takes seconds)."""
    try:
        return importlib.util.find_spec(name) is not None
    except ValueError:  # in sys.modules without a spec (e.g. __main__): importable
        return True


@dataclass(frozen=True)
class CaseParam:
    """One case on one profile, as a test is parametrized with it."""

    case: Case
    profile: HardwareProfile
    skip: str | None  # why it does not run here (a GPU case on cpu, a missing package)
    gate: Mapping[str, float]  # the matrix's thresholds for it ({}: none declared)

    @property
    def id(self) -> str:
        return f"{self.case.id}-{self.profile.name}"


def case_params(
    matrix: Matrix,
    profiles: Sequence[HardwareProfile],
    *,
    estimate_only: bool,
    devices: DevicePlan | None = None,
    rendezvous: Rendezvous | None = None,
) -> list[CaseParam]:
    """Every case of ``matrix`` on every profile, with its reason to skip; CaseError for a
    declaration no machine could run (a case a GPU-only matrix declares is skipped on a
    ``cpu`` profile before its flags are judged against it) or a multi-node case without
    a ``rendezvous``. ``devices``: the GPUs this xdist worker holds; a case needing more is
    skipped with both numbers (DeviceError when the GPUs cannot be shared out)."""
    params = []
    for case in matrix:
        for profile in profiles:
            skip = None
            if matrix.requires_gpu(case) and profile.is_cpu:
                skip = f"declared for GPU profiles; profile {profile.name!r} has no GPU"
            else:
                check_declaration(case, profile)
                if not estimate_only:
                    check_rendezvous(case, rendezvous)
                skip = missing_requirement(case, to_run=not estimate_only)
                if skip is None and devices is not None and not estimate_only:
                    skip = devices.skip_reason(case, profile)
            params.append(CaseParam(case, profile, skip, matrix.gate(case)))
    return params


def check_rendezvous(case: Case, rendezvous: Rendezvous | None) -> None:
    """CaseError when ``case`` spans machines and the session names no rendezvous."""
    if case.nnodes > 1 and rendezvous is None:
        raise CaseError(
            f"case {case.id!r}: nnodes={case.nnodes} spans {case.nnodes} machines, which meet "
            "through torchrun's rendezvous: give --gpubench-rdzv-endpoint HOST:PORT, the same "
            "on every node (docs/scale.md), or estimate it with --gpubench-estimate-only"
        )


def check_declaration(case: Case, profile: HardwareProfile) -> None:
    """CaseError when ``case`` cannot be declared for ``profile``: a combination no run
    could honour, a factory module that is not importable, an unknown ``hf:`` type."""
    check_case_on_profile(case, profile)
    check_model_importable(case)
    check_hf_model_type(case)


class CaseOwners:
    """Which test declared each case of a suite: a case's baseline entry is its id in
    ``<baselines>/<profile>/<suite file stem>.json``, so two tests that declare the same id
    in suites of one stem would judge each other's runs as their own history. Refused."""

    def __init__(self) -> None:
        self._owners: dict[tuple[str, str], str] = {}

    def claim(self, suite: str, test: str, matrix: Matrix) -> None:
        """Record ``test`` (a node id) as the owner of ``matrix``'s cases in ``suite``;
        :class:`CaseError` naming both tests when another test owns one of them."""
        for case in matrix:
            owner = self._owners.setdefault((suite, case.id), test)
            if owner != test:
                raise CaseError(
                    f"case {case.id!r} is declared by two tests, {owner} and {test}: they "
                    f"would share one baseline entry (<baselines>/<profile>/{suite}.json). "
                    "Give one of them a different name= or vary a setting in its id"
                )
