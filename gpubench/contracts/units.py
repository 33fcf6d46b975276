"""Byte sizes as people write them ("12GiB", "512 MiB", "1.5G", "16GB") and back.

Units (case-insensitive, optional space between number and unit):

- ``B`` or no unit: bytes.
- ``KiB MiB GiB TiB``: binary (1024**k), what ``nvidia-smi`` and
  ``torch.cuda.mem_get_info`` count in.
- ``KB MB GB TB``: decimal (1000**k), what datasheets and disk vendors count in.
- ``K M G T`` (bare letter): **binary**, like ``docker --memory 1g``, ``ulimit``
  and ``ls -h``. A memory size without a "B" is nearly always meant as GiB, and
  reading it as binary never silently gives a *larger* cap than a GiB reader expects.

Fractions are allowed ("1.5G"); the result is rounded down to whole bytes.
"""

from __future__ import annotations

import re
from decimal import Decimal

# the units gpubench counts in: binary bytes (what nvidia-smi and torch report) and the
# decimal rates of datasheets
KiB = 1024
MiB = 1024**2
GiB = 1024**3
TiB = 1024**4
TFLOPS = 1e12  # FLOP/s, as datasheets print peaks
GB_PER_S = 1e9  # bytes/s, decimal, as datasheets print bandwidth

_BINARY = {"k": KiB, "m": MiB, "g": GiB, "t": TiB}
_DECIMAL = {"k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}

_PATTERN = re.compile(r"^(?P<number>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>[a-z]*)$")

ACCEPTED_FORMS = (
    "a whole number of bytes (1073741824), or a number with a unit: "
    "binary KiB/MiB/GiB/TiB or bare K/M/G/T (12GiB, 12 GiB, 512MiB, 1.5G), "
    "decimal KB/MB/GB/TB (16GB), or B"
)


def _multiplier(unit: str) -> int | None:
    if unit in ("", "b"):
        return 1
    prefix, rest = unit[0], unit[1:]
    if prefix not in _BINARY:
        return None
    if rest in ("", "i", "ib"):  # K, Ki, KiB: binary
        return _BINARY[prefix]
    if rest == "b":  # KB: decimal
        return _DECIMAL[prefix]
    return None


def parse_bytes(value: str | int) -> int:
    """Parse a byte size; raise ValueError naming the bad value and the accepted forms."""
    if isinstance(value, bool):
        raise ValueError(f"invalid byte size {value!r}: expected {ACCEPTED_FORMS}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"invalid byte size {value!r}: must not be negative")
        return value
    if not isinstance(value, str):
        raise ValueError(
            f"invalid byte size {value!r} ({type(value).__name__}): expected {ACCEPTED_FORMS}"
        )
    match = _PATTERN.match(value.strip().lower())
    multiplier = _multiplier(match["unit"]) if match else None
    if match is None or multiplier is None:
        raise ValueError(f"invalid byte size {value!r}: expected {ACCEPTED_FORMS}")
    return int(Decimal(match["number"]) * multiplier)


_FORMAT_UNITS = (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB))


def format_bytes(n: int | float) -> str:
    """Format a byte count with the largest binary unit it reaches: 12780000000 -> '11.9 GiB'."""
    if n < 0:
        return "-" + format_bytes(-n)
    for unit, size in _FORMAT_UNITS:
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"
