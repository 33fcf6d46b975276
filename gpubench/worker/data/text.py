"""Batches of real text: windows drawn from a local corpus, byte-level or BPE tokens.

The corpus (:mod:`gpubench.worker.data.corpus`) is encoded once, cached on disk
(:mod:`gpubench.worker.data.tokenizer`), and its training part moved to the device once, in
the smallest integer type that holds the ids (uint8 for bytes). A batch is ``batch_size``
windows of ``seq_len + 1`` tokens starting at positions drawn by a seeded
``torch.Generator``: an index into a strided view of the tokens, one small kernel, so the
data phase is timed like the synthetic stream's. Every rank holds the whole corpus and
draws its own positions (a generator seeded per rank); the held-out batches come from the
held-out chunks only, drawn by a generator of their own that is the same on every rank.

``uniform_loss`` is ln of the model's vocabulary (the loss of an untrained model's uniform
guess over its outputs); ``entropy_floor`` is 0.0: the true entropy of text is unknown, and
0 is the only floor that is certainly below it.
"""

from __future__ import annotations

import math
import sys

import torch

from gpubench.worker.data.synthetic import SeededStream
from gpubench.worker.data.tokenizer import EncodedCorpus, encoded_corpus


class TextStream(SeededStream):
    """Batches (x, y) of a text corpus's token ids, y being x shifted left by one token."""

    def __init__(
        self,
        data: str,
        tokenizer: str,
        model_vocab_size: int,
        batch_size: int,
        seq_len: int,
        seed: int,
        device: torch.device | str,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__(batch_size, seq_len, seed, device, rank, world_size)
        self.kind = data
        self.tokenizer = tokenizer
        self.corpus: EncodedCorpus = encoded_corpus(data, tokenizer, model_vocab_size)
        self.vocab_size = self.corpus.vocab_size  # the tokenizer's: every id is below it
        self.model_vocab_size = model_vocab_size
        self.uniform_loss = math.log(model_vocab_size)
        self.entropy_floor = 0.0
        self._check_fits(model_vocab_size)
        self._train = torch.from_numpy(self.corpus.train).to(self.device)  # [n_train]
        self._windows = self._train.unfold(0, seq_len + 1, 1)  # [n_train - T, T + 1], a view
        if rank == 0:
            self._announce()

    def _check_fits(self, model_vocab_size: int) -> None:
        """Every id below the model's vocabulary, and each part long enough for a window."""
        top = max(int(part.max()) for part in (self.corpus.train, self.corpus.held_out))
        if top >= model_vocab_size:
            raise ValueError(
                f"{self.kind!r} with tokenizer={self.tokenizer!r} has token id {top}, but the "
                f"model's vocabulary is {model_vocab_size}: ids must be below it"
            )
        for part, tokens in (("training", self.corpus.train), ("held-out", self.corpus.held_out)):
            if tokens.size < self.seq_len + 1:
                raise ValueError(
                    f"data={self.kind!r}: its {part} part has {tokens.size} tokens, fewer than "
                    f"one window of seq_len + 1 = {self.seq_len + 1} (corpus "
                    f"{self.corpus.meta['corpus_bytes']} bytes; the held-out part is 1/10)"
                )

    def _announce(self) -> None:
        """One line on stderr: what the case trains on and what building it cost."""
        meta, how = self.corpus.meta, "built" if self.corpus.built else "read from the cache"
        print(
            f"gpubench text data: {meta['files']} files, {meta['corpus_bytes']} bytes, "
            f"{meta['train_tokens']} training + {meta['held_out_tokens']} held-out "
            f"{self.tokenizer} tokens (vocabulary {self.vocab_size}), {how} in "
            f"{self.corpus.seconds:.2f} s ({self.corpus.directory})",
            file=sys.stderr,
        )

    # -- what every data source has beside next_batch ---------------------------------------
    def held_out(self, n_batches: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``n_batches`` batches from the held-out chunks, which the training never sees: the
        same on every rank and for every case of one data, tokenizer, seed and shape."""
        generator = self.held_out_generator()
        tokens = torch.from_numpy(self.corpus.held_out)
        windows = tokens.unfold(0, self.seq_len + 1, 1)  # [n_held_out - T, T + 1]
        rows = torch.randint(windows.shape[0], (n_batches * self.batch_size,), generator=generator)
        picked = windows[rows].long().to(self.device)  # [n_batches * B, T + 1]
        return [
            (part[:, :-1].contiguous(), part[:, 1:].contiguous())
            for part in picked.split(self.batch_size)
        ]

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs x and targets y, each [batch_size, seq_len] int64 on the device."""
        rows = torch.randint(
            self._windows.shape[0],
            (self.batch_size,),
            generator=self._generator,
            device=self.device,
        )  # [B] window starts
        tokens = self._windows[rows].long()  # [B, T + 1]
        x = tokens[:, :-1].contiguous()  # [B, T]
        y = tokens[:, 1:].contiguous()  # [B, T]: the token after each of x
        return x, y
