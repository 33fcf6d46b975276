"""The forms a Case's ``model`` may take, checked without torch (at pytest collection).

- a built-in size (``gpt-tiny`` ... ``gpt2-xl``, :mod:`gpubench.contracts.catalog.sizes`),
  whose ``model_config`` keys and values are checked in full here;
- ``"package.module:factory"``: a callable returning a ``torch.nn.Module``;
- ``"hf:<model_type>"``: a Hugging Face ``transformers`` model built from its
  default config (no download).

Only the syntax of the last two is checked: importing them would cost torch
(or transformers) at collection. Knows no Case, so the Case can call it.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any

from gpubench.contracts.catalog.gpt_config import GPTConfig
from gpubench.contracts.catalog.sizes import BUILTIN_MODELS, GPT_CONFIG_KEYS, builtin_model_names
from gpubench.contracts.errors import CaseError

HF_PREFIX = "hf:"
_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
FACTORY_SPEC = re.compile(rf"^{_IDENTIFIER}(\.{_IDENTIFIER})*:{_IDENTIFIER}$")
HF_SPEC = re.compile(r"^hf:[A-Za-z0-9][A-Za-z0-9_\-]*$")


def check_model_spec(spec: str, model_config: Mapping[str, Any] | None = None) -> None:
    """Check the form of a model spec; raise :class:`CaseError` naming the valid forms."""
    if spec in BUILTIN_MODELS:
        _check_builtin_config(spec, model_config or {})
        return
    if isinstance(spec, str) and (HF_SPEC.match(spec) or FACTORY_SPEC.match(spec)):
        return
    names = builtin_model_names()
    close = difflib.get_close_matches(str(spec), names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise CaseError(
        f"model={spec!r} is not a model gpubench can build{hint}; use a built-in size "
        f"({', '.join(names)}), a factory 'package.module:function' returning a "
        f"torch.nn.Module, or 'hf:<model_type>' (e.g. 'hf:gpt2', needs pip install gpubench[hf])"
    )


def _check_builtin_config(spec: str, model_config: Mapping[str, Any]) -> None:
    """``model_config`` keys and values of a built-in size, through the torch-free GPTConfig."""
    unknown = sorted(set(model_config) - set(GPT_CONFIG_KEYS))
    if unknown:
        raise CaseError(
            f"model_config key(s) {', '.join(unknown)} not known to built-in {spec!r}; "
            f"valid keys: {', '.join(GPT_CONFIG_KEYS)}"
        )
    try:
        GPTConfig(**{**BUILTIN_MODELS[spec].config_fields(), **model_config})
    except ValueError as exc:
        raise CaseError(f"model_config for built-in {spec!r}: {exc}") from None
