"""PLACEHOLDER: being written (see docs/architecture.md)."""

from __future__ import annotations


def check_model_spec(spec: str) -> None:
    return None
