"""Text to token ids, offline, once per corpus: the encoded corpus cached on disk.

- ``"byte"``: the UTF-8 bytes themselves, vocabulary 256. Nothing to train.
- ``"bpe"``: a byte-level BPE (GPT-2's scheme: the 256 bytes, then merges) trained here with
  the ``tokenizers`` package on the corpus's training chunks only, never downloaded. Its
  vocabulary follows the model's, capped at :data:`BPE_MAX_VOCAB` (so ids always fit the
  model, and a 50k-vocabulary model does not wait on a 50k merge table); a model of 256 or
  fewer ids has no room for a merge and is refused.

The training and held-out chunks (:mod:`gpubench.worker.data.corpus`) are encoded
separately into two flat arrays and kept under ``<cache>/text/<digest>/`` (``train.npy``,
``held_out.npy``, ``meta.json``, and ``tokenizer.json`` for BPE), ``<cache>`` being
``$GPUBENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/gpubench``, else ``~/.cache/gpubench``. The
digest covers every corpus file's path, size and modification time, the split's constants,
the tokenizer and its vocabulary (and the ``tokenizers`` version for BPE): an edited
corpus builds anew. A build writes into a fresh temporary folder and renames it into place,
so a reader sees a whole entry or none; of two workers building the same entry at once the
first rename wins and both use the winner's arrays.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gpubench.contracts.case import TOKENIZERS
from gpubench.contracts.protocol import write_json_atomic
from gpubench.worker.data import corpus

BYTE_VOCAB = 256
BPE_MAX_VOCAB = 16384  # trains in ~11 s on the default corpus (2 busy cores), ids fit int16
BPE_MIN_FREQUENCY = 2  # a pair seen once is not worth a merge
CACHE_FORMAT = 1  # bump when what a cache entry holds changes
CACHE_ENV = "GPUBENCH_CACHE_DIR"


def cache_root() -> Path:
    """``$GPUBENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/gpubench``, else ``~/.cache/gpubench``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gpubench"


def tokenizer_vocab(tokenizer: str, model_vocab: int) -> int:
    """The vocabulary ``tokenizer`` builds for a model of ``model_vocab`` ids; a model too
    small for it is refused, naming both."""
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"tokenizer={tokenizer!r} is not valid; valid: {', '.join(TOKENIZERS)}")
    if tokenizer == "byte":
        if model_vocab < BYTE_VOCAB:
            raise ValueError(
                f"tokenizer='byte' makes token ids up to {BYTE_VOCAB - 1}, but the model's "
                f"vocabulary is {model_vocab}; give the model vocab_size >= {BYTE_VOCAB}"
            )
        return BYTE_VOCAB
    if model_vocab <= BYTE_VOCAB:
        raise ValueError(
            f"tokenizer='bpe' needs a model vocabulary above {BYTE_VOCAB} (its 256 bytes "
            f"plus merges), but the model's is {model_vocab}; set vocab_size (e.g. 4096) or "
            "use tokenizer='byte'"
        )
    return min(model_vocab, BPE_MAX_VOCAB)


def token_dtype(vocab_size: int) -> np.dtype[Any]:
    """The smallest integer type that holds every id: the corpus's size on the device."""
    if vocab_size <= 2**8:
        return np.dtype(np.uint8)
    return np.dtype(np.int16) if vocab_size <= 2**15 else np.dtype(np.int32)


@dataclass(frozen=True)
class EncodedCorpus:
    """A corpus's token ids, split, and what building it took."""

    train: np.ndarray  # [n_train] token ids
    held_out: np.ndarray  # [n_held_out]
    vocab_size: int  # ids are below it
    directory: Path  # the cache entry
    meta: dict[str, Any]  # files, bytes, tokens, build seconds (meta.json)
    built: bool  # this call built the entry (False: read from the cache)
    seconds: float  # this call's time: the build, or the cached load


def _digest(files: list[Path], tokenizer: str, vocab_size: int) -> str:
    key: dict[str, Any] = {
        "format": CACHE_FORMAT,
        "files": [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in files],
        "split": [corpus.MAX_CORPUS_BYTES, corpus.CHUNK_BYTES, corpus.MIN_CHUNKS],
        "held_out_every": corpus.HELD_OUT_EVERY,
        "tokenizer": tokenizer,
        "vocab_size": vocab_size,
    }
    if tokenizer == "bpe":
        import tokenizers

        key["tokenizers"] = tokenizers.__version__
        key["min_frequency"] = BPE_MIN_FREQUENCY
    text = json.dumps(key, sort_keys=True).encode()
    return hashlib.sha256(text).hexdigest()[:32]


def _encode_bpe(
    train: list[bytes], held_out: list[bytes], vocab_size: int, folder: Path
) -> tuple[np.ndarray, np.ndarray, int]:
    """Train a byte-level BPE on ``train`` (offline: ``tokenizers`` trains in process), save
    it as ``tokenizer.json`` and encode both parts; (train ids, held-out ids, vocabulary)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=BPE_MIN_FREQUENCY,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodes
        show_progress=False,
    )
    train_text = [chunk.decode("utf-8", errors="replace") for chunk in train]
    bpe.train_from_iterator(train_text, trainer=trainer)
    bpe.save(str(folder / "tokenizer.json"))
    dtype = token_dtype(vocab_size)

    def encode(texts: list[str]) -> np.ndarray:
        encoded = bpe.encode_batch_fast(texts, add_special_tokens=False)  # without offsets
        return np.concatenate([np.asarray(e.ids, dtype=dtype) for e in encoded])

    held_text = [chunk.decode("utf-8", errors="replace") for chunk in held_out]
    return encode(train_text), encode(held_text), bpe.get_vocab_size()


def _build(data: str, files: list[Path], tokenizer: str, vocab_size: int, folder: Path) -> None:
    """Read, split and encode the corpus into ``folder`` (a private temporary one)."""
    started = time.perf_counter()
    text = corpus.read_corpus(files)
    train_chunks, held_chunks = corpus.split_corpus(text)
    if tokenizer == "byte":
        train = np.frombuffer(b"".join(train_chunks), dtype=np.uint8)
        held_out = np.frombuffer(b"".join(held_chunks), dtype=np.uint8)
        built_vocab = BYTE_VOCAB
    else:
        train, held_out, built_vocab = _encode_bpe(train_chunks, held_chunks, vocab_size, folder)
    np.save(folder / "train.npy", train)
    np.save(folder / "held_out.npy", held_out)
    meta = {
        "data": data,
        "tokenizer": tokenizer,
        "vocab_size": built_vocab,
        "files": len(files),
        "corpus_bytes": len(text),
        "truncated": len(text) >= corpus.MAX_CORPUS_BYTES,
        "train_tokens": int(train.size),
        "held_out_tokens": int(held_out.size),
        "build_s": round(time.perf_counter() - started, 3),
    }
    write_json_atomic(folder / "meta.json", meta, indent=2)


def _load(directory: Path, built: bool, started: float) -> EncodedCorpus:
    meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
    return EncodedCorpus(
        train=np.load(directory / "train.npy"),
        held_out=np.load(directory / "held_out.npy"),
        vocab_size=int(meta["vocab_size"]),
        directory=directory,
        meta=meta,
        built=built,
        seconds=time.perf_counter() - started,
    )


def encoded_corpus(data: str, tokenizer: str, model_vocab: int) -> EncodedCorpus:
    """``data``'s corpus encoded by ``tokenizer`` for a model of ``model_vocab`` ids: read
    from the cache, or built and cached. No network is used at any point."""
    started = time.perf_counter()
    vocab_size = tokenizer_vocab(tokenizer, model_vocab)
    files = corpus.text_files(data)
    parent = cache_root() / "text"
    directory = parent / _digest(files, tokenizer, vocab_size)
    if (directory / "meta.json").is_file():
        return _load(directory, False, started)
    parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(dir=parent, prefix=f".{directory.name}.", suffix=".tmp"))
    try:
        _build(data, files, tokenizer, vocab_size, building)
        try:
            os.rename(building, directory)
        except OSError:  # a whole entry is there already: another worker's rename won
            if not (directory / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)  # gone after a rename; else ours unused
    return _load(directory, True, started)
