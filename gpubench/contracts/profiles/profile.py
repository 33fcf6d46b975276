"""HardwareProfile: what a case runs against (memory capacity, peak FLOP/s, bandwidth,
price), frozen and JSON-serialisable; ProfileError for anything gpubench cannot use."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gpubench.contracts.schema import INT_LIMIT, is_finite_number, record_fields
from gpubench.contracts.units import GiB

KINDS = ("cuda", "cpu")
MIN_MEMORY_BYTES = 1024**2  # below this a memory value is a typo ("cpu:512" meant 512MiB)
# above this it is a typo too (no device has a PiB), and the worker's cap (its data size
# plus this, a C long for setrlimit) would overflow near 2**63
MAX_MEMORY_BYTES = 1024**5
DEFAULT_CPU_MEMORY_BYTES = 8 * GiB  # what a `cpu` case may allocate unless told otherwise


class ProfileError(ValueError):
    """A hardware profile (name, spec, list or user definition) gpubench cannot use."""


def _check_figure(name: str, field: str, value: Any, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    if not is_finite_number(value) or not (value >= 0 if allow_zero else value > 0):
        bound = ">= 0" if allow_zero else "> 0"
        raise ProfileError(f"profile {name!r}: {field}={value!r} must be a number {bound} or None")


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

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ProfileError(f"profile name {self.name!r} must be a non-empty string")
        if self.kind not in KINDS:
            raise ProfileError(
                f"profile {self.name!r}: kind={self.kind!r} is not valid; valid: {', '.join(KINDS)}"
            )
        memory = self.memory_bytes
        if isinstance(memory, bool) or not isinstance(memory, int) or not 0 < memory < INT_LIMIT:
            raise ProfileError(
                f"profile {self.name!r}: memory_bytes={memory!r} must be a positive integer "
                "below 2**63"
            )
        if memory > MAX_MEMORY_BYTES:
            raise ProfileError(
                f"profile {self.name!r}: memory_bytes={memory} is above 1 PiB "
                f"({MAX_MEMORY_BYTES}), more than any device has; valid: 1 MiB to 1 PiB"
            )
        _check_figure(self.name, "bf16_flops", self.bf16_flops)
        _check_figure(self.name, "fp32_flops", self.fp32_flops)
        _check_figure(self.name, "memory_bandwidth", self.memory_bandwidth)
        _check_figure(self.name, "usd_per_hour", self.usd_per_hour, allow_zero=True)

    @property
    def is_cpu(self) -> bool:
        return self.kind == "cpu"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "profile") -> HardwareProfile:
        """Rebuild a profile by the reading policy of :mod:`gpubench.contracts.schema`."""
        return cls(**record_fields(cls, data, where, error=ProfileError))
