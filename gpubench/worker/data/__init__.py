"""Training data for benchmark cases: synthetic token streams (imports torch)."""

from __future__ import annotations

from gpubench.worker.data.synthetic import TokenStream

__all__ = ["TokenStream"]
