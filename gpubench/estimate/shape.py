"""The shape of a case's model, as far as the memory formulas need it.

- A built-in GPT: from :func:`gpubench.contracts.catalog.sizes.builtin_config`, without torch; the
  parameter count is :func:`gpubench.contracts.catalog.sizes.gpt_param_count`.
- ``hf:<model_type>``: the model ``transformers`` builds from ``AutoConfig.for_model``
  (the one the worker trains, :func:`gpubench.worker.models.external.build_hf_model`), built on
  the ``meta`` device: shapes and counts without memory.
- ``package.module:factory``: the factory's module built on ``meta``; layers, heads and
  width are read from the module's (or its ``config``'s) attributes where present, and
  stay None where not (the activation formulas then cannot be applied).

A field the model does not state is None, never guessed; what was assumed is listed
in :attr:`ModelShape.assumptions`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gpubench.contracts.catalog.sizes import BUILTIN_MODELS, builtin_config, gpt_param_count
from gpubench.contracts.catalog.spec import HF_PREFIX

if TYPE_CHECKING:
    import torch

    from gpubench.contracts.case import Case

# config attributes that name the MLP's inner width (GPT-2: n_inner, None meaning 4 x width)
_FFN_NAMES = ("n_inner", "intermediate_size", "ffn_dim", "d_ff", "ffn_hidden_size")
GPT2_LIKE = ("gpt2",)  # transformers model types whose block is the built-in GPT's
_DROPOUT_NAMES = ("dropout", "resid_pdrop", "hidden_dropout", "hidden_dropout_prob")


@dataclass(frozen=True)
class ModelShape:
    """What the formulas need to know about a model (None: the model does not say)."""

    n_params: int  # unique parameters (a tied head counted once)
    vocab_size: int
    seq_len: int  # tokens per sequence the case trains on
    n_layer: int | None
    d_model: int | None
    n_head: int | None
    ffn_dim: int | None  # the MLP's inner width (4 x d_model in GPT-2)
    positions: int | None  # rows of a learned positional table (None: none, or unknown)
    tied_head: bool  # output projection shares the token embedding's matrix
    dropout: bool  # any dropout with p > 0 (its masks are saved for backward)
    largest_tensor_params: int  # the biggest single parameter tensor (V x C in a GPT)
    largest_layer_params: int  # the most parameters one module holds itself (DeepSpeed's
    # "largest layer", deepspeed.runtime.zero.stage3.model_to_params)
    matmul_params: int  # parameters of the Linear layers: those autocast casts to bf16/fp16
    source: str  # how the shape was found
    assumptions: tuple[str, ...] = field(default_factory=tuple)

    @property
    def describable(self) -> bool:
        """Whether the activation formulas apply (layers, width, heads and MLP width known)."""
        return None not in (self.n_layer, self.d_model, self.n_head, self.ffn_dim)


def shape_key(case: Case) -> tuple[Any, ...]:
    """What a model's shape depends on: not the batch, nor the profile."""
    return (case.model, case.model_config, case.vocab_size, case.seq_len, case.flags.attention)


def model_shape(case: Case) -> ModelShape:
    """The shape of ``case.model``; raises ``ModelBuildError`` where the model cannot be built."""
    if case.model in BUILTIN_MODELS:
        return builtin_shape(case)
    key = shape_key(case)
    try:
        hash(key)
    except TypeError:  # a model_config value such as a list: build without the cache
        return _built_shape.__wrapped__(key)
    return _built_shape(key)


def builtin_shape(case: Case) -> ModelShape:
    """A built-in GPT's shape, torch-free (see :mod:`gpubench.worker.models.gpt`)."""
    config = builtin_config(case)
    c, v = config.n_embd, config.vocab_size
    n_params = gpt_param_count(config.n_layer, c, v, config.block_size, config.bias)
    bias = c if config.bias else 0
    return ModelShape(
        n_params=n_params,
        vocab_size=v,
        seq_len=case.seq_len,
        n_layer=config.n_layer,
        d_model=c,
        n_head=config.n_head,
        ffn_dim=4 * c,  # MLP c_fc: C -> 4C (gpubench.worker.models.gpt.MLP)
        positions=config.block_size,
        tied_head=True,  # wte.weight is lm_head.weight
        dropout=config.dropout > 0,
        largest_tensor_params=max(v * c, 4 * c * c),
        # the embedding module (V x C), or an MLP c_fc (4C x C + 4C bias)
        largest_layer_params=max(v * c, 4 * c * c + 4 * bias),
        # per block c_attn, c_proj, c_fc, c_proj: 12 C^2 weights + 9C biases; and lm_head V x C
        matmul_params=config.n_layer * (12 * c * c + 9 * bias) + v * c,
        source=f"built-in {case.model}: gpubench.contracts.catalog.sizes.builtin_config",
    )


@functools.lru_cache(maxsize=64)
def _built_shape(key: tuple[Any, ...]) -> ModelShape:
    """A non-built-in model's shape from a build on ``meta`` (cached: a batch-size probe asks
    for the same model many times, and only the batch changes)."""
    from gpubench.contracts.case import make_case

    model, model_config, vocab_size, seq_len, attention = key
    case = make_case(
        model=model,
        model_config=model_config,
        vocab_size=vocab_size,
        seq_len=seq_len,
        attention=attention,
    )
    if model.startswith(HF_PREFIX):
        from gpubench.worker.models.external import build_hf_model

        built = build_hf_model(case, "meta")
        source = f"{model}: transformers AutoConfig.for_model, built on the meta device"
    else:
        from gpubench.worker.models.external import build_factory_model

        built = build_factory_model(case, "meta")
        source = f"factory {model}: built on the meta device"
    module = built.module
    config = getattr(module, "config", None)
    assumptions: list[str] = []
    ffn = _ffn_dim(config, built.d_model, assumptions)
    if getattr(config, "model_type", None) not in GPT2_LIKE:
        assumptions.append(
            f"activations: {model}'s blocks taken as GPT-2's (LayerNorm, GELU MLP of two "
            "matrices); other blocks (gated MLP, RMSNorm, grouped-query attention) differ: "
            "compare the traced figure"
        )
    return ModelShape(
        n_params=built.n_params,
        vocab_size=built.vocab_size,
        seq_len=seq_len,
        n_layer=built.n_layers,
        d_model=built.d_model,
        n_head=built.n_heads,
        ffn_dim=ffn,
        positions=built.max_seq_len,
        tied_head=_tied_head(module),
        dropout=_has_dropout(module, config),
        largest_tensor_params=max((p.numel() for p in module.parameters()), default=0),
        largest_layer_params=_largest_layer(module),
        matmul_params=_matmul_params(module),
        source=source,
        assumptions=tuple(assumptions),
    )


def _ffn_dim(config: Any, d_model: int | None, assumptions: list[str]) -> int | None:
    """The MLP width from the config; GPT-2's ``n_inner=None`` means 4 x d_model (transformers'
    GPT2MLP), the only case where it is inferred."""
    for name in _FFN_NAMES:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    if config is not None and hasattr(config, "n_inner") and d_model is not None:
        assumptions.append("MLP width 4 x d_model (config n_inner=None, as GPT-2)")
        return 4 * d_model
    return None


def _tied_head(module: torch.nn.Module) -> bool:
    """Whether an output projection shares a parameter with the input embedding."""
    get_in = getattr(module, "get_input_embeddings", None)
    get_out = getattr(module, "get_output_embeddings", None)
    if callable(get_in) and callable(get_out):
        inp, out = get_in(), get_out()
        return inp is not None and out is not None and inp.weight is out.weight
    import torch

    names: dict[int, int] = {}
    for _, sub in module.named_modules():
        weight = getattr(sub, "weight", None)
        if isinstance(sub, (torch.nn.Embedding, torch.nn.Linear)) and weight is not None:
            names[id(weight)] = names.get(id(weight), 0) + 1
    return any(count > 1 for count in names.values())


def _has_dropout(module: torch.nn.Module, config: Any) -> bool:
    import torch

    if any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in module.modules()):
        return True
    return any(
        isinstance(getattr(config, name, None), float) and getattr(config, name) > 0
        for name in _DROPOUT_NAMES
    )


def _largest_layer(module: torch.nn.Module) -> int:
    """DeepSpeed's largest layer: the most parameters one module owns directly
    (``deepspeed.runtime.zero.stage3.model_to_params``)."""
    return max(
        (sum(p.numel() for p in m.parameters(recurse=False)) for m in module.modules()),
        default=0,
    )


def _matmul_params(module: torch.nn.Module) -> int:
    """Parameters of modules whose forward is a matmul (``nn.Linear``, transformers'
    ``Conv1D``): what autocast casts to the low-precision dtype. A tied head counts once."""
    import torch

    seen: dict[int, int] = {}
    for sub in module.modules():
        if isinstance(sub, torch.nn.Linear) or type(sub).__name__ == "Conv1D":
            for p in sub.parameters(recurse=False):
                seen[id(p)] = p.numel()
    return sum(seen.values())
