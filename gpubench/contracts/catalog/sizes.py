"""Named sizes of the built-in GPT, each with the parameter count it declares.

No torch here: ``check_model_spec`` reads these names at pytest collection.

The GPT-2 family is the one OpenAI released (Radford et al. 2019, "Language
Models are Unsupervised Multitask Learners", Table 2: layers and widths; heads
from each released checkpoint's hparams.json;
https://github.com/openai/gpt-2). The paper's Table 2 gives 117M/345M/762M/1542M;
OpenAI later corrected the counts, and the release names its checkpoints
124M, 355M, 774M and 1558M (the openai/gpt-2 download instructions,
``python3 download_model.py 124M`` ...). Those figures are declared here; they count every
parameter, the learned positional table included, with the input embedding tied
to the output projection.

``gpt-500m`` and ``gpt-1b`` are gpubench's own GPT-2-style points between and
above the family, chosen so their real count is within 3 % of the name.
``gpt-tiny`` and ``gpt-mini`` are for CPU tests and declare their exact count.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any, Protocol

from gpubench.contracts.catalog.gpt_config import GPTConfig

GPT2_VOCAB_SIZE = 50257  # GPT-2's byte-level BPE: 50,000 merges + 256 bytes + <|endoftext|>
GPT2_BLOCK_SIZE = 1024  # GPT-2's context length (Radford et al. 2019, section 2.3)


def gpt_param_count(
    n_layer: int, n_embd: int, vocab_size: int, block_size: int, bias: bool = True
) -> int:
    """Exact parameter count of the built-in GPT (``gpubench.worker.models.gpt``), tied
    weights once.

    Per block: attention ``c_attn`` (C x 3C) and ``c_proj`` (C x C), MLP ``c_fc``
    (C x 4C) and ``c_proj`` (4C x C): 12 C^2 weights, the ``12 n_layer d_model^2``
    of Kaplan et al. 2020 ("Scaling Laws for Neural Language Models", Table 1,
    with d_attn = d_model, d_ff = 4 d_model). With biases each block adds 9C for
    the linear layers and 4C for its two LayerNorms (2C without biases). Outside
    the blocks: token embedding V x C (shared with the output head), positional
    table block_size x C, final LayerNorm.
    """
    c = n_embd
    per_block = 12 * c * c + (13 * c if bias else 2 * c)
    final_norm = 2 * c if bias else c
    return n_layer * per_block + vocab_size * c + block_size * c + final_norm


# GPTConfig's fields (torch-free), which a built-in model's model_config may set
GPT_CONFIG_KEYS = tuple(field.name for field in fields(GPTConfig))


@dataclass(frozen=True, kw_only=True)
class ModelSize:
    """One named GPT shape and the parameter count it declares."""

    n_layer: int
    n_head: int
    n_embd: int
    vocab_size: int = GPT2_VOCAB_SIZE
    block_size: int = GPT2_BLOCK_SIZE
    declared_params: int
    source: str

    @property
    def param_count(self) -> int:
        """Exact count of the model this size builds (see :func:`gpt_param_count`)."""
        return gpt_param_count(self.n_layer, self.n_embd, self.vocab_size, self.block_size)

    def config_fields(self) -> dict[str, int]:
        """The ``GPTConfig`` fields this size sets."""
        return {
            "n_layer": self.n_layer,
            "n_head": self.n_head,
            "n_embd": self.n_embd,
            "vocab_size": self.vocab_size,
            "block_size": self.block_size,
        }


_OPENAI = "Radford et al. 2019 Table 2; count as corrected in the openai/gpt-2 release"

BUILTIN_MODELS: dict[str, ModelSize] = {
    "gpt-tiny": ModelSize(
        n_layer=2,
        n_head=2,
        n_embd=64,
        vocab_size=256,
        block_size=128,
        declared_params=124_672,
        source="gpubench: CPU tests, exact count",
    ),
    "gpt-mini": ModelSize(
        n_layer=4,
        n_head=4,
        n_embd=256,
        vocab_size=4096,
        block_size=256,
        declared_params=4_273_664,
        source="gpubench: CPU smoke suite, exact count",
    ),
    "gpt2-small": ModelSize(
        n_layer=12,
        n_head=12,
        n_embd=768,
        declared_params=124_000_000,
        source=_OPENAI,
    ),
    "gpt2-medium": ModelSize(
        n_layer=24,
        n_head=16,
        n_embd=1024,
        declared_params=355_000_000,
        source=_OPENAI,
    ),
    "gpt-500m": ModelSize(
        n_layer=24,
        n_head=16,
        n_embd=1280,
        declared_params=537_900_800,  # "~500M" is the name; the count is what it builds
        source="the readiness-gate seed's ~500M GPT: 24 layers, 16 heads, 1280 wide",
    ),
    "gpt2-large": ModelSize(
        n_layer=36,
        n_head=20,
        n_embd=1280,
        declared_params=774_000_000,
        source=_OPENAI,
    ),
    "gpt-1b": ModelSize(
        n_layer=18,
        n_head=16,
        n_embd=2048,
        declared_params=1_000_000_000,
        source="gpubench: 18 layers x 2048 wide, head size 128 (1011.5M)",
    ),
    "gpt2-xl": ModelSize(
        n_layer=48,
        n_head=25,
        n_embd=1600,
        declared_params=1_558_000_000,
        source=_OPENAI,
    ),
}


def builtin_model_names() -> list[str]:
    """Built-in model names, smallest first."""
    return list(BUILTIN_MODELS)


class ModelRequest(Protocol):
    """What a built-in model's configuration is read from: a Case's fields (the catalog
    is below the Case, which checks its model against it, so it names no Case)."""

    @property
    def model(self) -> str: ...
    @property
    def model_config(self) -> Iterable[tuple[str, Any]]: ...
    @property
    def vocab_size(self) -> int | None: ...
    @property
    def seq_len(self) -> int: ...


def builtin_config(case: ModelRequest) -> GPTConfig:
    """The ``GPTConfig`` a built-in ``case.model`` builds: the size's fields, the case's
    ``model_config`` overrides, its ``vocab_size`` (the data's vocabulary wins) and a
    positional table long enough for ``seq_len``. Raises ``ValueError`` on a bad override."""
    size = BUILTIN_MODELS[case.model]
    config: dict[str, Any] = {**size.config_fields(), **dict(case.model_config)}
    if case.vocab_size is not None:
        config["vocab_size"] = case.vocab_size
    config["block_size"] = max(config["block_size"], case.seq_len)
    return GPTConfig(**config)
