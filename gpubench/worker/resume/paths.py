"""Where a checkpoint may be written and read: inside the run's directory only.

A checkpoint is code's input (its pickles, DeepSpeed's files): one written outside the
run's directory, or read from elsewhere through a symbolic link, is never trusted. Both
the parent (before it hands out a directory) and the worker (before it writes or reads
one) check it here.
"""

from __future__ import annotations

from pathlib import Path


class UntrustedCheckpoint(ValueError):
    """A checkpoint directory, or a file in it, that is not inside the run's directory."""


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def trusted_directory(directory: Path, run_dir: Path) -> Path:
    """``directory`` resolved (symbolic links followed), when it lies inside ``run_dir``;
    UntrustedCheckpoint naming both otherwise."""
    root = Path(run_dir).resolve()
    resolved = Path(directory).resolve()
    if resolved == root or not _inside(resolved, root):
        raise UntrustedCheckpoint(
            f"checkpoint directory {directory} (resolved: {resolved}) is not inside the run's "
            f"directory {root}; gpubench writes and reads checkpoints there only"
        )
    return resolved


def trusted_files(directory: Path, run_dir: Path) -> list[Path]:
    """Every file under ``directory`` (which must be trusted), each resolved inside it:
    a file that is a symbolic link to elsewhere is refused before anything is read."""
    resolved = trusted_directory(directory, run_dir)
    files = []
    for path in sorted(resolved.rglob("*")):
        target = path.resolve()
        if not _inside(target, resolved):
            raise UntrustedCheckpoint(
                f"checkpoint file {path} points outside its directory (to {target}); refused"
            )
        if target.is_file():
            files.append(target)
    return files


def checkpoint_bytes(directory: Path, run_dir: Path) -> int:
    """The checkpoint's size on disk: every file under ``directory``."""
    return sum(path.stat().st_size for path in trusted_files(directory, run_dir))
