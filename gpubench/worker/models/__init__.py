"""Models a Case can name, checked without torch and built inside the worker.

The forms a Case's ``model`` may take are checked without torch by
:func:`~gpubench.contracts.catalog.spec.check_model_spec` (at collection); :func:`build_model`
runs in the worker and imports torch (and the builders) lazily: the built-in GPT
(:mod:`gpubench.worker.models.gpt`), a user factory or a Hugging Face config
(:mod:`gpubench.worker.models.external`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpubench.contracts.catalog.gpt_config import GPTConfig
from gpubench.contracts.catalog.sizes import (
    BUILTIN_MODELS,
    ModelSize,
    builtin_config,
    builtin_model_names,
    gpt_param_count,
)
from gpubench.contracts.catalog.spec import HF_PREFIX, check_model_spec
from gpubench.worker.models.built import (
    BuiltModel,
    ModelBuildError,
    ParameterCountMismatch,
    check_parameter_count,
    count_params,
)

if TYPE_CHECKING:
    import torch

    from gpubench.contracts.case import Case

__all__ = [
    "BUILTIN_MODELS",
    "BuiltModel",
    "ModelBuildError",
    "ModelSize",
    "ParameterCountMismatch",
    "build_model",
    "builtin_model_names",
    "check_model_spec",
    "check_parameter_count",
    "count_params",
]


def build_model(case: Case, device: torch.device | str) -> BuiltModel:
    """Build the model ``case.model`` names on ``device``, honouring the case's flags.

    Initialisation draws from torch's global RNG; seed it first for a
    reproducible model. Raises :class:`ModelBuildError` for a model that cannot
    be built as asked.
    """
    check_model_spec(case.model)
    if case.model in BUILTIN_MODELS:
        return _build_builtin(case, device)
    from gpubench.worker.models import external

    if case.model.startswith(HF_PREFIX):
        return external.build_hf_model(case, device)
    return external.build_factory_model(case, device)


def _build_builtin(case: Case, device: torch.device | str) -> BuiltModel:
    import torch

    from gpubench.worker.models.gpt import GPT

    size = BUILTIN_MODELS[case.model]
    overrides = dict(case.model_config)  # keys already checked with the Case
    try:
        config = builtin_config(case)
    except ValueError as exc:
        raise ModelBuildError(f"built-in {case.model}: {exc}") from exc

    with torch.device(device):  # initialise on the device: no host copy of a large model
        module = GPT(config, attention=case.flags.attention, grad_ckpt=case.flags.grad_ckpt)
    module = module.to(device)

    description = (
        f"built-in {case.model}: {config.n_layer} layers, {config.n_head} heads, "
        f"{config.n_embd} wide, vocab {config.vocab_size}"
    )
    if overrides:
        description += ", model_config " + ", ".join(f"{k}={v!r}" for k, v in overrides.items())
    return BuiltModel(
        module=module,
        vocab_size=config.vocab_size,
        n_params=count_params(module),
        declared_params=_declared_builtin(case, size, config),
        n_layers=config.n_layer,
        n_heads=config.n_head,
        d_model=config.n_embd,
        max_seq_len=config.block_size,
        description=description,
    )


def _declared_builtin(case: Case, size: ModelSize, config: GPTConfig) -> int:
    """The size's declared count, moved by what the case's overrides add or remove.

    A longer ``seq_len`` (bigger positional table), ``vocab_size`` or a
    ``model_config`` override changes the model on purpose; the declared count
    follows by the exact formula's difference, so the ±10 % check still guards
    the build instead of failing every overridden case. ``expect_params`` wins.
    """
    if case.expect_params is not None:
        return case.expect_params
    built = gpt_param_count(
        config.n_layer, config.n_embd, config.vocab_size, config.block_size, config.bias
    )
    return size.declared_params + built - size.param_count
