"""How gpubench reads its JSON records back: one policy for every record type.

Case, HardwareProfile and the Result with its parts (Metrics, Stats, Series,
Environment, ErrorInfo, Estimate) are all read by :func:`record_fields`:

- a key the record type does not know is refused, with the key's full name
  and the keys that are known: a field dropped on reading would misdescribe
  what ran, and a record with fields this gpubench does not know was written
  by a newer one (whose ``schema_version`` says so first);
- keys written for readers of the JSON but derived from the other fields
  (``Case.id``, ``Metrics.loss_decreased``) are recognised and left out, since
  the type recomputes them;
- a missing key takes the field's default; a missing key without a default
  is refused.

Records of an earlier schema version are brought up to this one before they
are read (:data:`gpubench.contracts.result.UPGRADES`). Progress events
(:class:`gpubench.contracts.protocol.ProgressEvent`) are not records: nothing keeps them,
and a field a newer worker adds must not stop the live display, so they drop
what they do not know.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any


class SchemaError(ValueError):
    """A record that is not one this gpubench can read."""


def record_fields(
    cls: Any,
    data: Any,
    where: str,
    *,
    derived: Iterable[str] = (),
    error: type[ValueError] = SchemaError,
) -> dict[str, Any]:
    """``data``'s fields for ``cls(**fields)``, read by the module's policy; ``where`` names
    the record in messages (``result.metrics``); ``error`` is the exception raised."""
    if not isinstance(data, Mapping):
        raise error(f"{where} must be a JSON object, not {type(data).__name__}")
    fields = dataclasses.fields(cls)
    known = {f.name for f in fields}
    unknown = sorted(set(data) - known - set(derived))
    if unknown:
        raise error(
            f"{where} has field(s) unknown to this gpubench: "
            f"{', '.join(f'{where}.{k}' for k in unknown)} (known: {', '.join(sorted(known))}); "
            "was it written by a newer gpubench?"
        )
    required = {
        f.name
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    missing = sorted(required - set(data))
    if missing:
        raise error(f"{where} lacks required field(s): {', '.join(missing)}")
    return {k: v for k, v in data.items() if k in known}
