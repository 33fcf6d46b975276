"""The text a ``data="text"`` case trains on: which files, in what order, split how.

- ``data="text"``, the default corpus: the ``*.py`` sources of the Python standard library
  this interpreter runs (``sysconfig.get_paths()["stdlib"]``), without ``site-packages``,
  the test suites (``test``, ``tests``, ``idle_test`` folders) and ``__pycache__``. Every
  machine that runs gpubench has it, no download needed, and it is real text written by
  people (code, docstrings, comments): about 730 files, 11.6 MB on CPython 3.11. It differs
  between Python versions, so a comparison across machines is a comparison of corpora too.
- ``data="text:PATH"``: PATH itself if it is a file, else every file under it (sorted paths,
  hidden files and folders skipped) that reads as text: its first :data:`SNIFF_BYTES` hold
  no NUL byte and decode as UTF-8.

The files are read in sorted order and joined (each ending with a newline), whole, up to
:data:`MAX_CORPUS_BYTES` (the file that crosses it is cut): the corpus stays quick to
tokenize and small on the device. The joined text is cut into chunks of
:data:`CHUNK_BYTES` at line ends; every :data:`HELD_OUT_EVERY`-th chunk is held out (10 %):
the quality check's batches come from those, the training's from the rest. Chunks rather
than files, so that a single file splits too and the held-out text is spread over the
whole corpus rather than being its alphabetical tail.

No torch here: :func:`check_text_source` can run at collection.
"""

from __future__ import annotations

import codecs
import os
import sysconfig
from pathlib import Path

from gpubench.contracts.case import TEXT_DATA

MAX_CORPUS_BYTES = 16 * 2**20  # the default corpus (11.6 MB on 3.11) fits whole
CHUNK_BYTES = 64 * 2**10  # split unit; a small corpus gets smaller chunks (MIN_CHUNKS)
MIN_CHUNKS = 20  # so that even a small corpus has 2 held-out chunks
HELD_OUT_EVERY = 10  # chunk i is held out when i % 10 == 9
SNIFF_BYTES = 8192  # what decides whether a file in a folder is text
DEFAULT_CORPUS_SKIP = frozenset({"site-packages", "test", "tests", "idle_test", "__pycache__"})
LISTED_IN_ERRORS = 5  # file names an error lists


class TextSourceError(ValueError):
    """A ``text:PATH`` that gives no text: missing, empty, or no text files in it."""


def source_path(data: str) -> Path | None:
    """The PATH of ``data="text:PATH"`` (``~`` expanded); None for the default corpus."""
    if data == TEXT_DATA:
        return None
    prefix = TEXT_DATA + ":"
    if not data.startswith(prefix):
        raise ValueError(f"data={data!r} is not text data; use 'text' or 'text:PATH'")
    return Path(data[len(prefix) :].strip()).expanduser()


def default_corpus_files() -> list[Path]:
    """The standard library's ``*.py`` sources, sorted, tests and site-packages left out."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found: list[Path] = []
    for folder, subfolders, names in os.walk(root):  # skipped folders never walked
        subfolders[:] = [name for name in subfolders if name not in DEFAULT_CORPUS_SKIP]
        found += [Path(folder, name) for name in names if name.endswith(".py")]
    return sorted(path for path in found if path.is_file())


def is_text(path: Path) -> bool:
    """Whether ``path``'s first :data:`SNIFF_BYTES` have no NUL and decode as UTF-8 (a
    character cut at the end of the sample is allowed)."""
    try:
        with open(path, "rb") as fh:
            sample = fh.read(SNIFF_BYTES)
    except OSError:
        return False
    if b"\0" in sample:
        return False
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
    except UnicodeDecodeError:
        return False
    return True


def _listed(paths: list[Path], under: Path) -> str:
    names = [str(p.relative_to(under)) for p in paths[:LISTED_IN_ERRORS]]
    more = len(paths) - len(names)
    return ", ".join(names) + (f" and {more} more" if more else "")


def _folder_files(data: str, folder: Path) -> list[Path]:
    found = [
        p
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    if not found:
        raise TextSourceError(f"data={data!r}: the folder {folder} holds no files")
    text = [p for p in found if is_text(p)]
    if not text:
        raise TextSourceError(
            f"data={data!r}: none of the {len(found)} files under {folder} is text "
            f"(UTF-8 without NUL bytes): {_listed(found, folder)}"
        )
    return text


def text_files(data: str) -> list[Path]:
    """The corpus files of ``data`` in reading order; :class:`TextSourceError` naming the
    path and what was found when it gives no text."""
    path = source_path(data)
    if path is None:
        files = default_corpus_files()
        if not files:  # a Python installed without its sources
            stdlib = sysconfig.get_paths()["stdlib"]
            raise TextSourceError(f"data='text': no *.py sources under {stdlib}; use text:PATH")
    elif not path.exists():
        raise TextSourceError(f"data={data!r}: {path} does not exist")
    elif path.is_dir():
        files = _folder_files(data, path)
    elif not is_text(path):
        raise TextSourceError(f"data={data!r}: {path} is not text (UTF-8 without NUL bytes)")
    else:
        files = [path]
    if not any(f.stat().st_size for f in files):
        raise TextSourceError(f"data={data!r}: its {len(files)} text file(s) are all empty")
    return files


def check_text_source(data: str) -> None:
    """Raise :class:`TextSourceError` if ``data`` (``text`` or ``text:PATH``) gives no text:
    the check a case can make at collection, before a worker starts."""
    text_files(data)


def read_corpus(files: list[Path], max_bytes: int = MAX_CORPUS_BYTES) -> bytes:
    """The files' bytes joined in order, each ending with a newline, cut at ``max_bytes``."""
    parts: list[bytes] = []
    size = 0
    for path in files:
        content = path.read_bytes()
        if content and not content.endswith(b"\n"):
            content += b"\n"
        parts.append(content[: max_bytes - size])
        size += len(parts[-1])
        if size >= max_bytes:
            break
    return b"".join(parts)


def _chunk_end(corpus: bytes, start: int, chunk: int) -> int:
    """Where the chunk from ``start`` ends: after the first line end at or past
    ``start + chunk`` (within another chunk's length), else at ``start + chunk`` moved back
    to the start of a UTF-8 character."""
    target = start + chunk
    if target >= len(corpus):
        return len(corpus)
    newline = corpus.find(b"\n", target - 1, target + chunk)
    if newline >= 0:
        return newline + 1
    while target > start + 1 and corpus[target] & 0xC0 == 0x80:  # a continuation byte
        target -= 1
    return target


def split_corpus(corpus: bytes) -> tuple[list[bytes], list[bytes]]:
    """The corpus in chunks, as (training chunks, held-out chunks): every
    :data:`HELD_OUT_EVERY`-th chunk held out."""
    chunk = max(1, min(CHUNK_BYTES, len(corpus) // MIN_CHUNKS))
    train: list[bytes] = []
    held_out: list[bytes] = []
    start = index = 0
    while start < len(corpus):
        end = _chunk_end(corpus, start, chunk)
        (held_out if index % HELD_OUT_EVERY == HELD_OUT_EVERY - 1 else train).append(
            corpus[start:end]
        )
        start, index = end, index + 1
    return train, held_out
