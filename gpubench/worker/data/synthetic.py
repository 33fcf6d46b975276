"""Synthetic token streams with a known best loss: no tokenizer, no download.

- ``"random"``: uniform tokens, drawn fresh for every batch. Nothing can be
  learned; the cross-entropy stays at ln V (``uniform_loss``).
- ``"learnable"``: a seeded order-1 Markov chain. Every token has
  ``SUCCESSORS`` distinct next tokens with fixed skewed probabilities
  (``SUCCESSOR_PROBS``), so a model that learns the chain's table drives the
  loss from ln V down to the chain's conditional entropy
  H = -sum_k p_k ln p_k (``entropy_floor``; Shannon 1948, "A Mathematical
  Theory of Communication", section 6). Every target follows the token before
  it and every token's successor distribution has that same entropy, so no
  model, however much context it uses, can beat H on any position. A falling
  loss therefore shows the training step really trains.

The learnable stream samples a pool of sequences once, on the host with numpy
(vectorised over sequences, looping over positions), moves it to the device
once, and serves each batch by drawing pool rows with a seeded
``torch.Generator``: one small kernel per batch, never a loop over tokens.
The chain is the same on every rank (it is the "language"); the pool and the
row draws differ per rank.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from gpubench.contracts.case import DATA_SOURCES

SUCCESSORS = 4  # next tokens each token may have
SUCCESSOR_PROBS = (8 / 15, 4 / 15, 2 / 15, 1 / 15)  # each half as likely as the one before
POOL_TOKENS = 1 << 22  # learnable pool size: 4M tokens, 16 MiB as int32 on the device
POOL_MIN_BATCHES = 4  # the pool holds at least this many batches of rows


def markov_chain(vocab_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random successor table [V, K] (distinct successors per row) and its probs [K]."""
    k = min(SUCCESSORS, vocab_size)
    probs = np.array(SUCCESSOR_PROBS[:k], dtype=np.float64)
    probs /= probs.sum()
    successors = rng.integers(vocab_size, size=(vocab_size, k))  # [V, K]
    while True:  # redraw the rows that repeat a successor (rare unless V is small)
        ordered = np.sort(successors, axis=1)
        repeats = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)  # [V]
        if not repeats.any():
            return successors, probs
        successors[repeats] = rng.integers(vocab_size, size=(int(repeats.sum()), k))


def sample_chain(
    successors: np.ndarray, probs: np.ndarray, n_rows: int, length: int, rng: np.random.Generator
) -> np.ndarray:
    """``n_rows`` sequences of ``length`` tokens [n_rows, length] (int32) walked on the chain."""
    vocab_size, k = successors.shape
    cumulative = np.cumsum(probs)  # [K]
    tokens = np.empty((n_rows, length), dtype=np.int32)
    tokens[:, 0] = rng.integers(vocab_size, size=n_rows)  # uniform first token
    for t in range(1, length):
        choice = np.searchsorted(cumulative, rng.random(n_rows), side="right")  # [n_rows]
        tokens[:, t] = successors[tokens[:, t - 1], np.minimum(choice, k - 1)]
    return tokens


def conditional_entropy(probs: np.ndarray) -> float:
    """-sum p ln p in nats: the loss of a model that knows the chain exactly."""
    return float(-(probs * np.log(probs)).sum())


# What a derived seed is for: distinct and nonzero, in a fixed slot of the key (see below)
CHAIN_SEED = 1  # the Markov chain: the same on every rank (derived with rank 0)
POOL_SEED = 2  # the learnable stream's pool of sequences, per rank
ROWS_SEED = 3  # the batch generator (pool rows, or the random stream's tokens), per rank
HELD_OUT_SEED = 4  # held-out batches (the quality check's): the same on every rank


def _derived_seed(seed: int, purpose: int, rank: int) -> int:
    """An independent 63-bit seed for one (seed, purpose, rank) combination.

    The key always has the same shape, ``spawn_key=(purpose, rank)`` after the
    case seed: numpy's SeedSequence pads the seed to its pool size before
    appending the spawn key, and every key has two entries, so no two
    combinations mix the same words. (A variable-length entropy list would not
    do: SeedSequence treats ``[seed, 1, 0]`` as ``[seed, 1]``, which made rank 1's
    batch generator share the chain's seed.)
    """
    sequence = np.random.SeedSequence(seed % 2**64, spawn_key=(purpose, rank))
    return int(sequence.generate_state(1, np.uint64)[0] >> np.uint64(1))


class SeededStream:
    """What every data source shares: its shape checked, this rank's batch generator seeded
    from the case seed, and that generator's state as the data position (the resume check
    saves and restores it)."""

    def __init__(
        self,
        batch_size: int,
        seq_len: int,
        seed: int,
        device: torch.device | str,
        rank: int,
        world_size: int,
    ) -> None:
        for name, value in (("batch_size", batch_size), ("seq_len", seq_len)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be an integer >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must be in [0, world_size={world_size})")
        self.seed = seed
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.device = torch.device(device)
        self._generator = torch.Generator(device=self.device)
        self._generator.manual_seed(_derived_seed(seed, ROWS_SEED, rank))

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The data position: the batch generator's state (what the batches are drawn from is
        rebuilt from the seed, or read again from the cache), tensors only, so
        ``torch.load(weights_only=True)`` reads it back."""
        return {"generator": self._generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Continue from a saved :meth:`state_dict`: the next batch is the one that followed."""
        self._generator.set_state(state["generator"])

    def held_out_generator(self) -> torch.Generator:
        """A CPU generator for held-out batches: the same on every rank, apart from the
        training's draws."""
        generator = torch.Generator(device="cpu")
        generator.manual_seed(_derived_seed(self.seed, HELD_OUT_SEED, 0))
        return generator


class TokenStream(SeededStream):
    """Batches (x, y) of token ids, y being x shifted left by one token."""

    def __init__(
        self,
        kind: str,
        vocab_size: int,
        batch_size: int,
        seq_len: int,
        seed: int,
        device: torch.device | str,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if kind not in DATA_SOURCES:
            raise ValueError(f"data kind={kind!r} is not valid; valid: {', '.join(DATA_SOURCES)}")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 2:
            raise ValueError(f"vocab_size={vocab_size!r} must be an integer >= 2")
        super().__init__(batch_size, seq_len, seed, device, rank, world_size)
        self.kind = kind
        self.vocab_size = vocab_size
        self.uniform_loss = math.log(vocab_size)  # cross-entropy of a uniform guess, nats

        self.successors: np.ndarray | None = None  # [V, K] learnable chain, for inspection
        self.successor_probs: np.ndarray | None = None  # [K]
        self._pool: torch.Tensor | None = None  # [rows, seq_len + 1] int32 on device
        self.entropy_floor = self.uniform_loss  # the loss a perfect model reaches, nats/token
        if kind == "learnable":
            chain_rng = np.random.default_rng(_derived_seed(seed, CHAIN_SEED, 0))  # every rank's
            self.successors, self.successor_probs = markov_chain(vocab_size, chain_rng)
            self.entropy_floor = conditional_entropy(self.successor_probs)
            n_rows = max(POOL_MIN_BATCHES * batch_size, POOL_TOKENS // (seq_len + 1))
            pool_rng = np.random.default_rng(_derived_seed(seed, POOL_SEED, rank))
            pool = sample_chain(
                self.successors, self.successor_probs, n_rows, seq_len + 1, pool_rng
            )
            self._pool = torch.from_numpy(pool).to(self.device)

    def held_out(self, n_batches: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``n_batches`` batches the training never draws, the same on every rank and for every
        case of one seed and shape: the learnable stream's are walked on the same chain from
        their own seed (a pool of their own), the random stream's are uniform tokens."""
        generator = self.held_out_generator()
        shape = (n_batches * self.batch_size, self.seq_len + 1)
        if self.successors is None or self.successor_probs is None:
            tokens = torch.randint(self.vocab_size, shape, generator=generator)
        else:
            rng = np.random.default_rng(_derived_seed(self.seed, HELD_OUT_SEED, 0))
            rows = sample_chain(self.successors, self.successor_probs, shape[0], shape[1], rng)
            tokens = torch.from_numpy(rows).long()
        tokens = tokens.to(self.device)
        return [
            (part[:, :-1].contiguous(), part[:, 1:].contiguous())
            for part in tokens.split(self.batch_size)
        ]

    @property
    def pool_rows(self) -> int:
        """Sequences in the learnable pool (0 for the random stream)."""
        return 0 if self._pool is None else self._pool.shape[0]

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs x and targets y, each [batch_size, seq_len] int64 on the device."""
        shape = (self.batch_size, self.seq_len + 1)
        if self._pool is None:
            tokens = torch.randint(
                self.vocab_size, shape, generator=self._generator, device=self.device
            )  # [B, T + 1]
        else:
            rows = torch.randint(
                self._pool.shape[0],
                (self.batch_size,),
                generator=self._generator,
                device=self.device,
            )  # [B]
            tokens = self._pool[rows].long()  # [B, T + 1]
        x = tokens[:, :-1].contiguous()  # [B, T]
        y = tokens[:, 1:].contiguous()  # [B, T]: the token after each of x
        return x, y
