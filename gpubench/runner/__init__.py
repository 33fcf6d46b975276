"""Case isolation: each case runs in a fresh worker process, answered by a Result.

See docs/architecture.md, "The worker protocol".
"""

from __future__ import annotations

from gpubench.runner.launchers import Launcher, ProcessLauncher, TorchrunLauncher, launcher_for
from gpubench.runner.process import run_case

__all__ = ["Launcher", "ProcessLauncher", "TorchrunLauncher", "launcher_for", "run_case"]
