"""Declaring cases: one readable matrix over model size × optimisation flags.

    @gpubench.matrix(model=["gpt2-small", "gpt2-medium"], precision=["fp32", "bf16"],
                     grad_ckpt=[False, True], batch_size=8, seq_len=512)
    def test_ladder(gpubench_result):
        assert gpubench_result.fits, gpubench_result.describe()

A list or tuple value is an axis; any other value is fixed for every case.
The decorator marks the test; the plugin parametrizes it over the cases ×
the ``--gpu-profile`` profiles at collection (ids ``gpt2-small-bf16-ckpt-cpu``).
``gate={"tokens_per_s": 0.05}`` sets the regression gate's thresholds for the
matrix's cases (:mod:`gpubench.baseline.rules`).

``quality_reference={"precision": "fp32", "grad_ckpt": False}`` compares every case's
held-out loss with its reference's (:mod:`gpubench.session.quality`): the reference of a
case is the case of the (combined) matrix that has the reference's settings and every
other setting the case's own, so it trains the same model on the same data, seed,
sequence length, steps and learning rate, and differs only in what the reference names.
It is found at collection, over the matrix a test is decorated with (``+`` combines
matrices first, so a sub-matrix of offload flags can point at a plain fp32 case of
another); a case without one is a :class:`CaseError` then. The reference may not name
what decides the held-out batches or the model (``model``, ``data``, ``seed``,
``seq_len``...): those must match. ``quality_threshold`` (default 0.02: the GPT-2 ladder
plan's "within 2 % of baseline") is the largest relative rise of the held-out loss that
passes. Every case of such a matrix evaluates ``eval_batches`` held-out batches after
training (default: :data:`DEFAULT_EVAL_SEQUENCES` sequences' worth at its batch size).
Importing this module does not import pytest.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gpubench.baseline.rules import check_thresholds
from gpubench.contracts.case import FLAG_FIELDS, Case, CaseError, make_case

MARKER = "gpubench_cases"
F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_QUALITY_THRESHOLD = 0.02  # the GPT-2 ladder plan: "final perplexity within 2 %"
# held-out sequences a quality-checked case evaluates unless it sets eval_batches: 8
# batches of 8 (gpt-tiny on CPU: 8 x 8 x 32 tokens, well under a second)
DEFAULT_EVAL_SEQUENCES = 64
# what decides the model or the held-out batches (TokenStream.held_out): a reference must
# share them with the case it is compared with, so it may not name them
SAME_PROBLEM = ("model", "model_config", "vocab_size", "data", "tokenizer", "seed", "seq_len")


@dataclass(frozen=True)
class QualitySpec:
    """A case's quality comparison as declared: the reference's settings and the threshold."""

    reference: tuple[tuple[str, Any], ...]  # (setting, value) pairs, in the declared order
    threshold: float = DEFAULT_QUALITY_THRESHOLD

    def describe(self) -> str:
        return ", ".join(f"{name}={value!r}" for name, value in self.reference)

    def matches(self, case: Case) -> bool:
        """Whether ``case`` has every one of the reference's settings."""
        return _comparable(case) == _comparable(case.replace(**dict(self.reference)))


def _comparable(case: Case) -> Case:
    """``case`` less what does not change the training: its name and its held-out count (a
    smaller batch evaluates more batches of the same held-out sequences)."""
    return case.replace(name=None, eval_batches=0, timeout_s=None)


@dataclass(frozen=True)
class Matrix:
    """An ordered, duplicate-free set of Cases, usable as a test decorator."""

    cases: tuple[Case, ...]
    gpu_only: frozenset[str] = frozenset()  # ids of cases declared for GPU profiles
    gates: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # id -> thresholds
    quality: Mapping[str, QualitySpec] = field(default_factory=dict)  # id -> its comparison

    def __post_init__(self) -> None:
        seen: dict[str, Case] = {}
        for case in self.cases:
            if case.id in seen and seen[case.id] != case:
                raise CaseError(
                    f"two different cases share the id {case.id!r}; give one a name= "
                    "or vary a setting that appears in the id"
                )
            seen[case.id] = case
        object.__setattr__(self, "cases", tuple(seen.values()))

    def __iter__(self) -> Iterator[Case]:
        return iter(self.cases)

    def __len__(self) -> int:
        return len(self.cases)

    def __add__(self, other: Matrix) -> Matrix:
        gates = {**self.gates, **other.gates}
        quality = {**self.quality, **other.quality}
        return Matrix(self.cases + other.cases, self.gpu_only | other.gpu_only, gates, quality)

    def requires_gpu(self, case: Case) -> bool:
        return case.id in self.gpu_only

    def gate(self, case: Case) -> Mapping[str, float]:
        """The gate thresholds declared for ``case`` ({} when none)."""
        return self.gates.get(case.id, {})

    @property
    def ids(self) -> list[str]:
        return [case.id for case in self.cases]

    def where(self, keep: Callable[[Case], bool]) -> Matrix:
        """The cases for which ``keep(case)`` is true (e.g. drop a pointless combination)."""
        kept = tuple(c for c in self.cases if keep(c))
        ids = {c.id for c in kept}
        gates = {k: v for k, v in self.gates.items() if k in ids}
        quality = {k: v for k, v in self.quality.items() if k in ids}
        return Matrix(kept, self.gpu_only.intersection(ids), gates, quality)

    def quality_reference(self, case: Case) -> tuple[str, float] | None:
        """The id of ``case``'s quality reference and the threshold; None when no reference
        is declared for it or it is its own. CaseError when no case of this matrix is its
        reference, or its held-out sequences differ from the reference's."""
        spec = self.quality.get(case.id)
        if spec is None:
            return None
        if spec.matches(case):
            return None  # the reference itself
        wanted = _comparable(case.replace(**dict(spec.reference)))
        found = [c for c in self.cases if _comparable(c) == wanted]
        if not found:
            if not any(spec.matches(c) for c in self.cases):
                raise CaseError(
                    f"quality_reference={{{spec.describe()}}} matches no case of the matrix "
                    f"(cases: {', '.join(self.ids)})"
                )
            raise CaseError(
                f"case {case.id!r} has no quality reference: no case of its matrix has "
                f"{spec.describe()} and {case.id!r}'s other settings (model, data, seed, "
                "shapes, steps, learning rate...); add that case, name the setting that "
                "differs in quality_reference=, or drop the case with .where(...)"
            )
        reference = found[0]
        unfixed = [c.id for c in (case, reference) if "auto" in (c.warmup, c.steps)]
        if unfixed:  # a loss after 35 steps against one after 80 says nothing of a flag
            raise CaseError(
                f"case {unfixed[0]!r} trains a number of steps decided at run time "
                "(warmup='auto' or steps='auto'), so its held-out loss and its quality "
                "reference's would follow different step counts; give warmup=N and steps=N"
            )
        held_out = case.eval_batches * case.batch_size
        reference_held_out = reference.eval_batches * reference.batch_size
        if held_out != reference_held_out:
            raise CaseError(
                f"case {case.id!r} evaluates {held_out} held-out sequences "
                f"(eval_batches={case.eval_batches} x batch_size={case.batch_size}) and its "
                f"quality reference {reference.id!r} {reference_held_out} "
                f"({reference.eval_batches} x {reference.batch_size}): the losses would "
                "average different batches; set eval_batches so both products are equal"
            )
        return reference.id, spec.threshold

    def check_quality(self) -> None:
        """Find every case's quality reference now (at collection): CaseError naming the
        first case without one."""
        for case in self.cases:
            self.quality_reference(case)

    def __call__(self, func: F) -> F:
        import pytest  # the decorator is only ever used in test modules

        return pytest.mark.gpubench_cases(self)(func)  # type: ignore[no-any-return]


def _is_axis(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def matrix(
    *,
    requires_gpu: bool = False,
    gate: Mapping[str, float] | None = None,
    quality_reference: Mapping[str, Any] | None = None,
    quality_threshold: float = DEFAULT_QUALITY_THRESHOLD,
    **settings: Any,
) -> Matrix:
    """The cartesian product of every list-valued setting, the others fixed.

    Settings are Case fields and flag names (see :func:`gpubench.contracts.case.make_case`);
    a bad name or value raises :class:`CaseError` at import, i.e. at collection, as a
    bad ``gate`` threshold raises :class:`~gpubench.baseline.rules.GateError`.
    ``quality_reference``/``quality_threshold``: see the module docstring.
    """
    thresholds = check_thresholds(gate, "matrix(gate=...)") if gate is not None else {}
    if "model" not in settings:
        raise CaseError("matrix() needs model= (a name, 'pkg.module:factory' or 'hf:<type>')")
    spec = None
    if quality_reference is not None:
        spec = _quality_spec(quality_reference, quality_threshold)
    names = list(settings)
    axes: list[Iterable[Any]] = []
    for name in names:
        value = settings[name]
        if _is_axis(value):
            if not value:
                raise CaseError(f"matrix axis {name}= is empty")
            axes.append(value)
        else:
            axes.append((value,))
    cases = tuple(
        make_case(**dict(zip(names, combo, strict=True))) for combo in itertools.product(*axes)
    )
    if spec is not None:
        if "eval_batches" not in settings:  # the same held-out sequences at any batch size
            cases = tuple(c.replace(eval_batches=_eval_batches(c.batch_size)) for c in cases)
        for case in cases:  # the reference's settings must make a valid case of each
            case.replace(**dict(spec.reference))
    gpu_only = frozenset(c.id for c in cases) if requires_gpu else frozenset()
    gates = {c.id: thresholds for c in cases} if thresholds else {}
    return Matrix(cases, gpu_only, gates, {c.id: spec for c in cases} if spec else {})


def _eval_batches(batch_size: int) -> int:
    """Enough batches of ``batch_size`` for :data:`DEFAULT_EVAL_SEQUENCES` held-out
    sequences."""
    return max(1, math.ceil(DEFAULT_EVAL_SEQUENCES / batch_size))


def _quality_spec(reference: Mapping[str, Any], threshold: float) -> QualitySpec:
    """The declared comparison, checked: settings by name (not an axis, not one that decides
    the model or the held-out batches) and a threshold in (0, 1)."""
    where = "matrix(quality_reference=...)"
    if not isinstance(reference, Mapping) or not reference:
        raise CaseError(
            f"{where} takes the reference case's settings, e.g. "
            "{'precision': 'fp32', 'grad_ckpt': False}; got " + repr(reference)
        )
    valid = {f.name for f in dataclasses.fields(Case)} - {"flags"} | set(FLAG_FIELDS)
    unknown = sorted(set(reference) - valid)
    if unknown:
        raise CaseError(
            f"{where}: unknown setting(s) {', '.join(unknown)}; valid settings: "
            f"{', '.join(sorted(valid))}"
        )
    fixed = [name for name in reference if name in (*SAME_PROBLEM, "eval_batches", "name")]
    if fixed:
        raise CaseError(
            f"{where} may not name {', '.join(fixed)}: a case and its reference train the "
            f"same model on the same held-out batches ({', '.join(SAME_PROBLEM)} must match)"
        )
    axes = [name for name, value in reference.items() if _is_axis(value)]
    if axes:
        raise CaseError(f"{where}: {', '.join(axes)} must be single values, the reference's")
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
        or not 0 < threshold < 1
    ):
        raise CaseError(
            f"quality_threshold={threshold!r} must be a fraction in (0, 1): the largest "
            "relative rise of the held-out loss over the reference's (0.02: 2 %)"
        )
    return QualitySpec(tuple(reference.items()), float(threshold))


def single_case(
    *, requires_gpu: bool = False, gate: Mapping[str, float] | None = None, **settings: Any
) -> Matrix:
    """A single case (a matrix whose settings are all fixed)."""
    for name, value in settings.items():
        if _is_axis(value):
            raise CaseError(
                f"single_case() takes single values; {name}={value!r} is a list (use matrix)"
            )
    return matrix(requires_gpu=requires_gpu, gate=gate, **settings)


GO_NO_GO_MARKER = "gpubench_go_no_go"


def go_no_go(cases: Matrix) -> Callable[[F], F]:
    """Declare a test as the suite's go/no-go over ``cases``: it runs once per profile,
    after every one of those cases (under pytest-xdist too), and receives their Results
    as ``gpubench_results`` (with ``gpubench_profile``). GO passes; NO-GO is the suite's
    answer, not a defect: ``pytest.xfail(reason)``.

        @gpubench.go_no_go(LADDER)
        def test_ladder_go_no_go(gpubench_results, gpubench_profile): ...
    """
    if not isinstance(cases, Matrix):
        raise CaseError(f"go_no_go() takes a gpubench.matrix(...), not {type(cases).__name__}")

    def mark(func: F) -> F:
        import pytest

        return getattr(pytest.mark, GO_NO_GO_MARKER)(cases)(func)  # type: ignore[no-any-return]

    return mark
