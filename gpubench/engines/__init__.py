"""Training engines: each runs one Case on one HardwareProfile and returns a Result.

An engine is any object with ``run(case, profile, progress) -> Result``;
:func:`get_engine` maps a Case's ``engine`` name to one. Engines import torch
(and their framework) lazily, so this module is cheap to import.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from gpubench.case import Case
from gpubench.profiles import HardwareProfile
from gpubench.result import Result
from gpubench.runner.protocol import ProgressWriter


@runtime_checkable
class Engine(Protocol):
    """Trains one case and answers with a Result (``ok``/``over_capacity``/``oom``/``diverged``).

    Raises for anything else (the worker turns it into a ``crashed`` Result).
    """

    name: str

    def run(self, case: Case, profile: HardwareProfile, progress: ProgressWriter) -> Result: ...


def _torch_engine() -> Engine:
    from gpubench.engines.torch_engine import TorchEngine

    return TorchEngine()


ENGINE_FACTORIES = {
    "torch": _torch_engine,
}


def engine_names() -> list[str]:
    """Names :func:`get_engine` accepts."""
    return list(ENGINE_FACTORIES)


def get_engine(name: str) -> Engine:
    """The engine called ``name``; ValueError naming the valid ones otherwise."""
    try:
        factory = ENGINE_FACTORIES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"engine={name!r} is not known; valid engines: {', '.join(engine_names())}"
        ) from None
    return factory()
