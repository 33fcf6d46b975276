"""Each case's per-step series as a TensorBoard run: ``DIR/<run-id>/<profile>/<case-id>``.

Scalars per step (warm-up steps included, as the Series keeps them): loss,
step time, tokens/s, gradient norm and memory after the step; the case's
one-line description as text. Written with torch's ``SummaryWriter``, which
needs the ``tensorboard`` package; without it :class:`TensorBoardMissing`
says what to install. Names become folder names with anything but letters,
digits, ``.``, ``_`` and ``-`` replaced (and a short hash when something was),
so a case id can never reach outside ``DIR``.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from pathlib import Path

from gpubench.contracts.result import Result
from gpubench.contracts.units import GiB

INSTALL_HINT = "pip install tensorboard (or pip install 'gpubench[tensorboard]')"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class TensorBoardMissing(RuntimeError):
    """TensorBoard's writer cannot be imported here."""


def folder_name(name: str) -> str:
    safe = _UNSAFE.sub("_", name).strip("._") or "unnamed"
    if safe != name:
        safe += "-" + hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]
    return safe


def run_dir(root: Path, result: Result) -> Path:
    case = folder_name(result.case.id) + (f"-rerun{result.repeat}" if result.repeat else "")
    return root / folder_name(result.run_id or "run") / folder_name(result.profile.name) / case


def _finite(series: Sequence[float | None]) -> list[tuple[int, float]]:
    """(step, value) from 1, without the values the JSON kept as null (a diverged loss)."""
    return [(step, v) for step, v in enumerate(series, 1) if v is not None and math.isfinite(v)]


def export_tensorboard(results: Sequence[Result], root: Path) -> list[Path]:
    """Write one TensorBoard run per result under ``root``; the run folders written."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # torch raises ImportError naming tensorboard when it is absent
        raise TensorBoardMissing(
            f"TensorBoard export skipped: {exc}; install it with {INSTALL_HINT}"
        ) from None
    written = []
    for result in results:
        folder = run_dir(Path(root), result)
        s = result.series
        per_step = result.metrics.tokens_per_step or result.case.tokens_per_step
        with SummaryWriter(log_dir=str(folder)) as writer:
            writer.add_text("case", result.describe(), 0)
            for step, value in _finite(s.loss):
                writer.add_scalar("loss", value, step)
            for step, value in _finite(s.step_time_s):
                writer.add_scalar("step_time_ms", 1000 * value, step)
                if value > 0:
                    writer.add_scalar("tokens_per_s", per_step / value, step)
            for step, value in _finite(s.grad_norm):
                writer.add_scalar("grad_norm", value, step)
            for step, value in _finite(s.allocated_bytes):
                writer.add_scalar("memory_gib", value / GiB, step)
        written.append(folder)
    return written
