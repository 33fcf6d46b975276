"""Declaring cases: one readable matrix over model size × optimisation flags.

    @gpubench.matrix(model=["gpt2-small", "gpt2-medium"], precision=["fp32", "bf16"],
                     grad_ckpt=[False, True], batch_size=8, seq_len=512)
    def test_ladder(gpubench_result):
        assert gpubench_result.fits, gpubench_result.describe()

A list or tuple value is an axis; any other value is fixed for every case.
The decorator marks the test; the plugin parametrizes it over the cases ×
the ``--gpu-profile`` profiles at collection (ids ``gpt2-small-bf16-ckpt-cpu``).
``gate={"tokens_per_s": 0.05}`` sets the regression gate's thresholds for the
matrix's cases (:mod:`gpubench.baseline.rules`). Importing this module does
not import pytest.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gpubench.baseline.rules import check_thresholds
from gpubench.contracts.case import Case, CaseError, make_case

MARKER = "gpubench_cases"
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Matrix:
    """An ordered, duplicate-free set of Cases, usable as a test decorator."""

    cases: tuple[Case, ...]
    gpu_only: frozenset[str] = frozenset()  # ids of cases declared for GPU profiles
    gates: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # id -> thresholds

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
        return Matrix(self.cases + other.cases, self.gpu_only | other.gpu_only, gates)

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
        return Matrix(kept, self.gpu_only.intersection(ids), gates)

    def __call__(self, func: F) -> F:
        import pytest  # the decorator is only ever used in test modules

        return pytest.mark.gpubench_cases(self)(func)  # type: ignore[no-any-return]


def _is_axis(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def matrix(
    *, requires_gpu: bool = False, gate: Mapping[str, float] | None = None, **settings: Any
) -> Matrix:
    """The cartesian product of every list-valued setting, the others fixed.

    Settings are Case fields and flag names (see :func:`gpubench.contracts.case.make_case`);
    a bad name or value raises :class:`CaseError` at import, i.e. at collection, as a
    bad ``gate`` threshold raises :class:`~gpubench.baseline.rules.GateError`.
    """
    thresholds = check_thresholds(gate, "matrix(gate=...)") if gate is not None else {}
    if "model" not in settings:
        raise CaseError("matrix() needs model= (a name, 'pkg.module:factory' or 'hf:<type>')")
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
    gpu_only = frozenset(c.id for c in cases) if requires_gpu else frozenset()
    return Matrix(cases, gpu_only, {c.id: thresholds for c in cases} if thresholds else {})


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
