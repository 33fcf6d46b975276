"""Models gpubench does not define: ``"package.module:factory"`` and ``"hf:<model_type>"``.

A factory is called as ``factory(**model_config)``; it receives ``attention=``
and ``grad_ckpt=`` only when it names those parameters, and a vocabulary size
as ``vocab_size=`` when the case sets one and the factory names that parameter.

A Hugging Face model is built from ``AutoConfig.for_model(model_type,
**model_config)``, the library's default config for that architecture, so
nothing is downloaded; ``attention`` maps to ``attn_implementation`` ("sdpa" or
"eager") and ``grad_ckpt`` to the model's own activation checkpointing.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import torch

from gpubench.contracts.catalog.spec import HF_PREFIX
from gpubench.worker.models.built import BuiltModel, ModelBuildError, count_params

if TYPE_CHECKING:
    from gpubench.contracts.case import Case

_CKPT_KWARGS = {"use_reentrant": False}
_LAYER_NAMES = ("n_layer", "n_layers", "num_hidden_layers", "num_layers")
_HEAD_NAMES = ("n_head", "n_heads", "num_attention_heads")
_WIDTH_NAMES = ("n_embd", "d_model", "hidden_size", "dim")
_POSITION_NAMES = ("block_size", "max_seq_len", "n_positions", "max_position_embeddings")


# -- "package.module:factory" ---------------------------------------------------------------


def build_factory_model(case: Case, device: torch.device | str) -> BuiltModel:
    """Import and call the factory ``case.model`` names; see the module docstring."""
    factory = _import_factory(case.model)
    params = _named_parameters(factory)  # None: a **kwargs factory, model_config unchecked
    kwargs = dict(case.model_config)
    if params is not None:
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            raise ModelBuildError(
                f"model_config key(s) {', '.join(unknown)} are not parameters of {case.model}; "
                f"valid keys: {', '.join(params) or '(none)'}"
            )
    named = params or []
    flags = case.flags
    if "attention" in named:
        kwargs["attention"] = flags.attention
    elif flags.attention != "sdpa":
        raise ModelBuildError(
            f"attention={flags.attention!r} asked for, but {case.model} has no 'attention' "
            "parameter to pass it to; add one, or run with the default attention='sdpa'"
        )
    if "grad_ckpt" in named:
        kwargs["grad_ckpt"] = flags.grad_ckpt
    if case.vocab_size is not None and "vocab_size" in named:
        kwargs.setdefault("vocab_size", case.vocab_size)

    with torch.device(device):
        module = factory(**kwargs)
    if not isinstance(module, torch.nn.Module):
        raise ModelBuildError(
            f"{case.model} returned {type(module).__name__}, not a torch.nn.Module"
        )
    if flags.grad_ckpt and "grad_ckpt" not in named and not _enable_checkpointing(module):
        raise ModelBuildError(
            f"grad_ckpt=True asked for, but {case.model} has no 'grad_ckpt' parameter and "
            f"{type(module).__name__} has no gradient_checkpointing_enable(); add one of them"
        )
    module = module.to(device)

    config = getattr(module, "config", None)
    vocab_size = _vocab_size(case, module, config)
    n_params = count_params(module)
    return BuiltModel(
        module=module,
        vocab_size=vocab_size,
        n_params=n_params,
        declared_params=case.expect_params,
        n_layers=_first_int((module, config), _LAYER_NAMES),
        n_heads=_first_int((module, config), _HEAD_NAMES),
        d_model=_first_int((module, config), _WIDTH_NAMES),
        max_seq_len=_first_int((module, config), _POSITION_NAMES),
        description=(
            f"factory {case.model} ({type(module).__name__}): {n_params:,} parameters, "
            f"vocab {vocab_size}"
        ),
    )


def _import_factory(spec: str) -> Callable[..., Any]:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelBuildError(
            f"model {spec!r}: cannot import {module_name!r} ({exc}); is it on sys.path?"
        ) from exc
    try:
        factory = getattr(module, attr)
    except AttributeError as exc:
        raise ModelBuildError(f"model {spec!r}: module {module_name!r} has no {attr!r}") from exc
    if not callable(factory):
        raise ModelBuildError(f"model {spec!r}: {attr!r} is not callable")
    return factory


def _named_parameters(factory: Callable[..., Any]) -> list[str] | None:
    """Keyword-passable parameter names, or None when the factory takes ``**kwargs``."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # builtins without a signature: pass and hope
        return None
    kinds = {p.kind for p in signature.parameters.values()}
    if inspect.Parameter.VAR_KEYWORD in kinds:
        return None
    return [
        name
        for name, p in signature.parameters.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]


def _enable_checkpointing(module: torch.nn.Module) -> bool:
    """Switch on the module's own activation checkpointing (Hugging Face style)."""
    enable = getattr(module, "activation_checkpointing_enable", None)  # transformers >= 5
    if callable(enable):
        enable(activation_checkpointing_kwargs=_CKPT_KWARGS)
        return True
    enable = getattr(module, "gradient_checkpointing_enable", None)
    if callable(enable):
        enable(gradient_checkpointing_kwargs=_CKPT_KWARGS)
        return True
    return False


def _vocab_size(case: Case, module: torch.nn.Module, config: Any) -> int:
    found = _first_int((module, config), ("vocab_size",))
    if case.vocab_size is not None:
        if found is not None and found < case.vocab_size:
            raise ModelBuildError(
                f"vocab_size={case.vocab_size} asked for, but {case.model} built a model "
                f"with vocab_size={found}; data tokens would be out of range"
            )
        return case.vocab_size
    if found is None:
        raise ModelBuildError(
            f"cannot tell the vocabulary of {case.model}: set Case(vocab_size=...), or give "
            "the module a vocab_size attribute (or config.vocab_size)"
        )
    return found


def _first_int(objects: Iterable[Any], names: Iterable[str]) -> int | None:
    """The first int attribute among ``names`` on the first object that has one."""
    names = tuple(names)
    for obj in objects:
        if obj is None:
            continue
        for name in names:
            value = getattr(obj, name, None)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    return None


# -- "hf:<model_type>" ----------------------------------------------------------------------


def build_hf_model(case: Case, device: torch.device | str) -> BuiltModel:
    """Build a randomly initialised ``transformers`` causal LM from its default config."""
    try:
        import transformers
    except ImportError as exc:
        raise ModelBuildError(
            f"model {case.model!r} needs Hugging Face transformers: pip install gpubench[hf]"
        ) from exc
    model_type = case.model[len(HF_PREFIX) :]
    try:
        defaults = transformers.AutoConfig.for_model(model_type)
    except (ValueError, KeyError) as exc:
        raise ModelBuildError(f"model {case.model!r}: {exc}") from exc

    overrides = dict(case.model_config)
    valid = sorted(set(defaults.to_dict()) | set(getattr(defaults, "attribute_map", {})))
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ModelBuildError(
            f"model_config key(s) {', '.join(unknown)} not in the {model_type} config; "
            f"valid keys: {', '.join(valid)}"
        )
    settings = _hf_settings(case, defaults, overrides)
    attn = "sdpa" if case.flags.attention == "sdpa" else "eager"
    try:  # the architecture refuses what it cannot build (n_embd=768 with n_head=5)
        config = transformers.AutoConfig.for_model(model_type, **settings)
        with torch.device(device):
            module = transformers.AutoModelForCausalLM.from_config(config, attn_implementation=attn)
    except ValueError as exc:
        asked = ", ".join(f"{k}={v!r}" for k, v in overrides.items()) or "its default config"
        raise ModelBuildError(
            f"model {case.model!r} cannot be built with {asked} (attention={attn!r}): "
            + " ".join(str(exc).split())
        ) from exc
    if case.flags.grad_ckpt:
        _enable_checkpointing(module)
    module = module.to(device)

    config = module.config
    vocab_size = int(config.vocab_size)
    n_layers = _first_int([config], _LAYER_NAMES)
    n_heads = _first_int([config], _HEAD_NAMES)
    d_model = _first_int([config], _WIDTH_NAMES)
    description = (
        f"{case.model} ({type(module).__name__}): {n_layers} layers, {n_heads} heads, "
        f"{d_model} wide, vocab {vocab_size}"
    )
    return BuiltModel(
        module=module,
        vocab_size=vocab_size,
        n_params=count_params(module),
        declared_params=case.expect_params,
        n_layers=n_layers,
        n_heads=n_heads,
        d_model=d_model,
        max_seq_len=_first_int([config], ("n_positions", "max_position_embeddings")),
        description=description,
    )


def _hf_settings(case: Case, defaults: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    """Config keyword arguments: the user's overrides plus what training on the case needs."""
    settings = dict(overrides)
    if case.vocab_size is not None:
        settings["vocab_size"] = case.vocab_size
    vocab_size = settings.get("vocab_size", defaults.vocab_size)
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        token = getattr(defaults, name, None)  # a special token outside a smaller vocabulary
        if name not in overrides and isinstance(token, int) and token >= vocab_size:
            settings[name] = None
    if "use_cache" not in overrides and hasattr(defaults, "use_cache"):
        settings["use_cache"] = False  # training: no key/value cache
    for name in ("n_positions", "max_position_embeddings"):
        limit = settings.get(name, getattr(defaults, name, None))
        if not isinstance(limit, int) or limit >= case.seq_len:
            continue
        if name in overrides:
            raise ModelBuildError(
                f"model_config {name}={limit} is shorter than seq_len={case.seq_len}"
            )
        settings[name] = case.seq_len  # as the built-in GPT: the table grows to seq_len
    return settings
