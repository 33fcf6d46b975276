"""``[tool.gpubench.*]`` of a project's pyproject.toml, read once per file version.

The user profiles (``profiles``), the gate's thresholds (``gate``) and the report's
projection (``projection``) each live in a table of their own; a session reads
all three at start-up, from one parse of the file. Torch-free.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

PYPROJECT = "pyproject.toml"


def read_toml(path: Path, error: Callable[[str], Exception]) -> dict[str, Any]:
    """The TOML file at ``path``, parsed once per version of it (size and mtime); an
    unreadable or invalid file raises ``error(message)`` naming it. Do not mutate."""
    try:
        stat = path.stat()
        return _parsed(str(path), stat.st_mtime_ns, stat.st_size)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8: the line of the first byte that is not
        line = path.read_bytes().count(b"\n", 0, exc.start) + 1
        raise error(f"{path}:{line}: invalid TOML: not UTF-8 text ({exc.reason})") from None
    except RecursionError:
        raise error(f"{path}: invalid TOML: nested too deeply to parse") from None
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc}") from None


@functools.lru_cache(maxsize=8)
def _parsed(path: str, mtime_ns: int, size: int) -> dict[str, Any]:
    with open(path, "rb") as handle:
        return tomllib.load(handle)


def gpubench_table(
    rootdir: Path | None, name: str, error: Callable[[str], Exception]
) -> tuple[Path, Any] | None:
    """``[tool.gpubench.<name>]`` of ``<rootdir>/pyproject.toml`` and the file's path; None
    when there is no such file or table. Problems raise ``error(message)`` naming the file."""
    if rootdir is None:
        return None
    path = Path(rootdir) / PYPROJECT
    if not path.is_file():
        return None
    tool = read_toml(path, error).get("tool", {})
    gpubench = tool.get("gpubench", {}) if isinstance(tool, dict) else {}
    if not isinstance(gpubench, dict):
        raise error(f"{path}: [tool.gpubench] must be a table")
    if name not in gpubench:
        return None
    return path, gpubench[name]
