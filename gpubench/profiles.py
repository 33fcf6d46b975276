"""Hardware profiles: what a case runs against (memory capacity, peak FLOP/s, bandwidth).

PLACEHOLDER: the dataclass is the contract; the built-in table, user profiles
and resolution are being written (see docs/architecture.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class HardwareProfile:
    name: str
    kind: str  # "cuda" | "cpu"
    memory_bytes: int  # capacity a case may use (emulated when below the physical device's)
    bf16_flops: float | None  # dense peak, FLOP/s, no sparsity
    fp32_flops: float | None  # dense peak, FLOP/s (non-tensor-core FP32)
    memory_bandwidth: float | None  # bytes/s
    usd_per_hour: float | None = None
    description: str = ""
    source: str = ""  # citation for the figures (datasheet title + URL)

    @property
    def is_cpu(self) -> bool:
        return self.kind == "cpu"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HardwareProfile:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
