"""Training engines: each trains one Case on one HardwareProfile and returns a Measurement.

An engine is any object with ``prepare(case, profile, progress)`` and
``run(case, profile, progress) -> Measurement``; :func:`get_engine` maps a Case's
``engine`` name to one. The worker calls ``prepare`` before it caps the
process's memory (what the framework itself needs: the process group,
imports, compiled ops) and ``run`` under the cap, and assembles the Result
from the Measurement. The built-in engines subclass
:class:`~gpubench.worker.engines.base.TrainingEngine`, which holds everything they
share; this module imports none of them (nor torch) until one is asked for.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from gpubench.contracts.case import Case
from gpubench.contracts.profiles import HardwareProfile
from gpubench.contracts.protocol import ProgressWriter
from gpubench.worker.engines.base import Measurement


@runtime_checkable
class Engine(Protocol):
    """Trains one case and answers with a Measurement (``ok``/``oom``/``diverged``).

    Raises for anything else (the worker turns it into a ``crashed`` Result).
    """

    name: str

    def prepare(self, case: Case, profile: HardwareProfile, progress: ProgressWriter) -> None:
        """Set-up that is the framework's, not the case's: runs before the memory cap."""
        ...

    def run(
        self, case: Case, profile: HardwareProfile, progress: ProgressWriter
    ) -> Measurement: ...


def _torch_engine() -> Engine:
    from gpubench.worker.engines.torch_engine import TorchEngine

    return TorchEngine()


def _deepspeed_engine() -> Engine:
    from gpubench.worker.engines.deepspeed_engine import DeepSpeedEngine

    return DeepSpeedEngine()


def _fsdp_engine() -> Engine:
    from gpubench.worker.engines.fsdp_engine import FSDPEngine

    return FSDPEngine()


ENGINE_FACTORIES = {
    "torch": _torch_engine,
    "deepspeed": _deepspeed_engine,
    "fsdp": _fsdp_engine,
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
