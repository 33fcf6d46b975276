"""How gpubench reads its JSON records back: one policy for every record type.

Case, HardwareProfile and the Result with its parts (Metrics, Stats, Series,
Environment, ErrorInfo, Estimate, MachineLoad), the gate's verdicts and pytest's
outcomes are all read by :func:`record_fields`:

- a key the record type does not know is refused, with the key's full name
  and the keys that are known: a field dropped on reading would misdescribe
  what ran, and a record with fields this gpubench does not know was written
  by a newer one (whose ``schema_version`` says so first);
- keys written for readers of the JSON but derived from the other fields
  (``Case.id``, ``Metrics.loss_decreased``) are recognised and left out, since
  the type recomputes them;
- a missing key takes the field's default; a missing key without a default
  is refused;
- every value must be the JSON form of its field's declared type
  (:func:`value_problem`), else the record is refused with the field's path and the
  value: ``float`` a finite number (an int or a float, never a bool, a string, NaN,
  an infinity or an int too large for a float: a measurement that is not a number
  must not be judged as one); ``int`` an int within 64 bits, ``bool`` a bool, ``str``
  text (no unpaired surrogate: what an undecodable byte becomes), ``X | None`` null
  or an X, ``list[X]``/``tuple[X, ...]`` an array of X (of ``float``: null too, the
  form :meth:`~gpubench.contracts.result.Result.to_dict` writes a non-finite step's
  loss in), ``dict[str, X]`` an object of X, ``Any`` JSON of finite numbers nested at
  most :data:`MAX_DEPTH` deep. A nested record is read by its own ``from_dict``, by
  this same policy.

A file of records is parsed by :func:`parse_json`: NaN and infinities (which
gpubench never writes), nesting too deep for the parser and numbers Python
refuses are a :class:`SchemaError`, like any other record this gpubench cannot
read; :data:`READ_ERRORS` is what reading one bad record may raise, for a reader
that skips it and keeps the rest.

Records of an earlier schema version are brought up to this one before they
are read (:data:`gpubench.contracts.result.UPGRADES`). Progress events
(:class:`gpubench.contracts.protocol.ProgressEvent`) are not records: nothing keeps them,
and a field a newer worker adds must not stop the live display, so they drop
what they do not know.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

MAX_DEPTH = 32  # nesting a free-form value (Case.model_config's) may have
INT_LIMIT = 2**63  # an int field's value lies in (-INT_LIMIT, INT_LIMIT): 64-bit JSON readers
SHOWN_CHARS = 80  # of a refused value, in the message


class SchemaError(ValueError):
    """A record that is not one this gpubench can read."""


# What reading one bad record (parsing its JSON, then ``from_dict``) may raise: a reader of
# many records catches these, skips the record and keeps the others.
READ_ERRORS: tuple[type[Exception], ...] = (
    ValueError,  # SchemaError, CaseError, ProfileError, UnicodeDecodeError, JSONDecodeError
    TypeError,
    KeyError,
    RecursionError,
    OverflowError,
)


def _refuse_constant(name: str) -> Any:
    raise SchemaError(f"not JSON gpubench writes ({name}: it writes a non-finite number as null)")


def parse_json(text: str | bytes, *, allow_nan: bool = False) -> Any:
    """``text`` parsed as one JSON value; SchemaError (with json's position, where it has
    one) for anything that is not JSON gpubench wrote: a cut line, bytes that are not
    UTF-8, nesting too deep for the parser, an integer of more digits than Python
    converts, and NaN or an infinity unless ``allow_nan`` (a file of several records: the
    record's reader refuses the value, so it costs only its record)."""
    constant = None if allow_nan else _refuse_constant
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return json.loads(text, parse_constant=constant)
    except json.JSONDecodeError as exc:
        raise SchemaError(f"not a whole JSON record ({exc})") from None
    except UnicodeDecodeError as exc:
        raise SchemaError(f"not UTF-8 text ({exc})") from None
    except RecursionError:
        raise SchemaError("JSON nested too deeply to parse") from None
    except SchemaError:
        raise
    except ValueError as exc:  # an integer of more than sys.get_int_max_str_digits() digits
        raise SchemaError(f"not JSON gpubench writes ({exc})") from None


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
    declared = dataclasses.fields(cls)
    known = {f.name for f in declared}
    unknown = sorted(set(data) - known - set(derived))
    if unknown:
        raise error(
            f"{where} has field(s) unknown to this gpubench: "
            f"{', '.join(f'{where}.{k}' for k in unknown)} (known: {', '.join(sorted(known))}); "
            "was it written by a newer gpubench?"
        )
    required = {
        f.name
        for f in declared
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    missing = sorted(required - set(data))
    if missing:
        raise error(f"{where} lacks required field(s): {', '.join(missing)}")
    fields = {k: v for k, v in data.items() if k in known}
    check_types(cls, fields, where, error)
    return fields


@functools.cache
def _field_types(cls: Any) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check_types(cls: Any, fields: Mapping[str, Any], where: str, error: type[ValueError]) -> None:
    """Raise ``error`` naming ``where.<field>`` and the value when a value of ``fields`` is
    not its field's declared type (:func:`value_problem`); nested records are left to
    their own reader."""
    hints = _field_types(cls)
    for name, value in fields.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            continue
        problem = value_problem(value, hint, f"{where}.{name}")
        if problem:
            raise error(problem)


def value_problem(value: Any, hint: Any, path: str, depth: int = 0) -> str | None:
    """Why ``value`` (at ``path``) is not the JSON form of the type ``hint``; None when it
    is. The forms are in the module's docstring."""
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        members = typing.get_args(hint)
        if value is not None and type(None) in members and len(members) == 2:
            inner = next(m for m in members if m is not type(None))
            return value_problem(value, inner, path, depth)
        if any(value_problem(value, m, path, depth) is None for m in members):
            return None
        return _refused(path, value, " or ".join(_type_name(m) for m in members))
    if origin in (list, tuple) or hint in (list, tuple):
        return _sequence_problem(value, hint, path, depth)
    if origin is dict or hint is dict:
        args = typing.get_args(hint) or (str, Any)
        return _mapping_problem(value, args[1], path, depth)
    if hint is Any:
        return _json_problem(value, path, depth)
    if hint is type(None):
        return None if value is None else _refused(path, value, "null")
    scalar = _SCALARS.get(hint)
    if scalar is None:
        return None if isinstance(value, Mapping) else _refused(path, value, "a JSON object")
    return None if scalar(value) else _refused(path, value, _type_name(hint))


def _sequence_problem(value: Any, hint: Any, path: str, depth: int) -> str | None:
    args = typing.get_args(hint)
    if args and typing.get_origin(args[0]) is tuple and isinstance(value, Mapping):
        value = list(value.items())  # (key, value) pairs, written as an object
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        return _refused(path, value, "an array")
    if len(args) == 2 and args[1] is Ellipsis or len(args) == 1:
        element = args[0]
        if element is float:  # a non-finite step (a diverged loss) is written as null
            element = float | None
        elements = [(element, v) for v in value]
    elif args:
        if len(value) != len(args):
            return _refused(path, value, f"an array of {len(args)} items")
        elements = list(zip(args, value, strict=True))
    else:
        elements = [(Any, v) for v in value]
    for i, (kind, item) in enumerate(elements):
        problem = value_problem(item, kind, f"{path}[{i}]", depth + 1)
        if problem:
            return problem
    return None


def _mapping_problem(value: Any, kind: Any, path: str, depth: int) -> str | None:
    if not isinstance(value, Mapping):
        return _refused(path, value, "a JSON object")
    for key, item in value.items():
        if not _is_text(key):
            return _refused(f"{path} key", key, "text")
        problem = value_problem(item, kind, f"{path}.{key}", depth + 1)
        if problem:
            return problem
    return None


def _json_problem(value: Any, path: str, depth: int) -> str | None:
    """A free-form value: JSON of finite numbers, at most MAX_DEPTH deep."""
    if depth > MAX_DEPTH:
        return f"{path}: nested more than {MAX_DEPTH} deep"
    if isinstance(value, (list, tuple)):
        return _sequence_problem(value, list[Any], path, depth)
    if isinstance(value, Mapping):
        return _mapping_problem(value, Any, path, depth)
    if value is None or isinstance(value, bool) or _is_text(value) or _is_int(value):
        return None
    return None if is_finite_number(value) else _refused(path, value, "JSON of finite numbers")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -INT_LIMIT < value < INT_LIMIT


def is_finite_number(value: Any) -> bool:
    """An int or a float (not a bool) that is finite as a float: not NaN, no infinity, no
    int too large for a float (``10**400``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)  # an int too large for a float raises
    except OverflowError:
        return False


def _is_text(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")  # an unpaired surrogate: an undecodable byte, escaped
    except UnicodeEncodeError:
        return False
    return True


_SCALARS = {
    float: is_finite_number,
    int: _is_int,
    bool: lambda v: isinstance(v, bool),
    str: _is_text,
}


def _type_name(hint: Any) -> str:
    names = {float: "a finite number", int: "an integer", bool: "true or false", str: "UTF-8 text"}
    if hint is type(None):
        return "null"
    return names.get(hint, getattr(hint, "__name__", None) or str(hint))


def _refused(path: str, value: Any, expected: str) -> str:
    return f"{path}={_shown(value)} must be {expected}"


def _shown(value: Any) -> str:
    try:
        text = repr(value)
    except (RecursionError, ValueError):  # a deep structure; an int past the digit limit
        text = f"<{type(value).__name__}>"
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


class _Located(dict[str, Any]):
    """A JSON object with the offset in its text it starts at."""

    offset = 0


def _parse_object(s_and_end: tuple[str, int], *args: Any) -> tuple[_Located, int]:
    parsed, end = json.decoder.JSONObject(s_and_end, *args)  # type: ignore[attr-defined]
    located = _Located(parsed)
    located.offset = s_and_end[1] - 1
    return located, end


def located_lines(text: str, places: Iterable[tuple[str | int, ...]]) -> list[int | None]:
    """The line (counted from 1) each JSON object at ``places`` (keys and indices from the
    top, ``("cases", "gpt-tiny", "history", 2)``) starts on in ``text``; None for a place
    that holds no object. Parses with json's pure-Python scanner (slow): for naming the
    records found bad in a file already parsed."""
    decoder = json.JSONDecoder()
    decoder.parse_object = _parse_object  # type: ignore[attr-defined]
    decoder.scan_once = json.scanner.py_make_scanner(decoder)  # type: ignore[attr-defined]
    try:
        document = decoder.decode(text)
    except (ValueError, RecursionError):
        document = None
    lines: list[int | None] = []
    for place in places:
        value = document
        try:
            for key in place:
                value = value[key]  # type: ignore[index]
        except (LookupError, TypeError):
            value = None
        offset = value.offset if isinstance(value, _Located) else None
        lines.append(None if offset is None else text.count("\n", 0, offset) + 1)
    return lines
