"""Synthetic token streams: shapes, determinism, the chain, and that training learns it."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gpubench.contracts.case import Case
from gpubench.worker.data import TokenStream, synthetic
from gpubench.worker.data.synthetic import POOL_TOKENS, SUCCESSOR_PROBS
from gpubench.worker.models import build_model


def _stream(kind: str = "learnable", **settings: object) -> TokenStream:
    args: dict = {"vocab_size": 256, "batch_size": 4, "seq_len": 32, "seed": 0, "device": "cpu"}
    args.update(settings)
    return TokenStream(kind, **args)


@pytest.mark.parametrize("kind", ["learnable", "random"])
def test_batch_shapes_and_y_is_x_shifted(kind: str) -> None:
    stream = _stream(kind, vocab_size=100, batch_size=3, seq_len=17)
    x, y = stream.next_batch()
    assert x.shape == y.shape == (3, 17)
    assert x.dtype == y.dtype == torch.long
    assert x.device.type == "cpu"
    assert x.is_contiguous() and y.is_contiguous()
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert 0 <= int(x.min()) and int(max(x.max(), y.max())) < 100


@pytest.mark.parametrize("kind", ["learnable", "random"])
def test_same_seed_same_batches_other_seed_or_rank_differs(kind: str) -> None:
    a, b = _stream(kind, seed=7), _stream(kind, seed=7)
    for _ in range(3):
        for ta, tb in zip(a.next_batch(), b.next_batch(), strict=True):
            assert torch.equal(ta, tb)
    first = _stream(kind, seed=7).next_batch()[0]
    assert not torch.equal(first, _stream(kind, seed=8).next_batch()[0])
    other_rank = _stream(kind, seed=7, rank=1, world_size=2).next_batch()[0]
    assert not torch.equal(first, other_rank)


def test_learnable_chain_is_shared_across_ranks() -> None:
    rank0, rank1 = _stream(seed=3), _stream(seed=3, rank=1, world_size=2)
    assert np.array_equal(rank0.successors, rank1.successors)


@pytest.mark.parametrize("seed", [0, 1, 7, 2**32 + 1, 2**64 - 1])
def test_derived_seeds_are_distinct_for_every_purpose_and_rank(seed: int) -> None:
    # SeedSequence ignores trailing zero words: seeding with [seed, rank, purpose] lists
    # made rank 1's batch generator [seed, 1, 0] share the chain's seed [seed, 1]
    purposes = (synthetic.CHAIN_SEED, synthetic.POOL_SEED, synthetic.ROWS_SEED)
    assert len(set(purposes)) == 3 and 0 not in purposes
    seeds = [synthetic._derived_seed(seed, p, rank) for p in purposes for rank in range(8)]
    assert len(set(seeds)) == len(seeds) == 24
    assert all(0 <= s < 2**63 for s in seeds)


def test_each_stream_seeds_its_chain_pool_and_rows_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int, int]] = []
    real = synthetic._derived_seed

    def recording(seed: int, purpose: int, rank: int) -> int:
        calls.append((seed, purpose, rank))
        return real(seed, purpose, rank)

    monkeypatch.setattr(synthetic, "_derived_seed", recording)
    _stream(seed=5, rank=1, world_size=2)
    chain, pool, rows = synthetic.CHAIN_SEED, synthetic.POOL_SEED, synthetic.ROWS_SEED
    assert sorted(calls) == [(5, chain, 0), (5, pool, 1), (5, rows, 1)]  # the chain: rank 0's
    calls.clear()
    _stream("random", seed=5, rank=1, world_size=2)
    assert calls == [(5, rows, 1)]


def test_every_transition_follows_the_chain_with_its_probabilities() -> None:
    stream = _stream(batch_size=64, seq_len=64)
    successors = torch.from_numpy(stream.successors)  # [V, K]
    assert successors.shape == (256, 4)
    assert all(len(set(row.tolist())) == 4 for row in successors)  # distinct successors
    counts = torch.zeros(4)
    for _ in range(10):
        x, y = stream.next_batch()
        rank = (successors[x] == y.unsqueeze(-1)).long().argmax(-1)  # [B, T]: which successor
        assert bool((successors[x] == y.unsqueeze(-1)).any(-1).all())
        counts += torch.bincount(rank.flatten(), minlength=4)
    observed = (counts / counts.sum()).numpy()
    np.testing.assert_allclose(observed, SUCCESSOR_PROBS, atol=0.01)


def test_entropy_floor_and_uniform_loss() -> None:
    learnable = _stream()
    probs = np.array(SUCCESSOR_PROBS)
    assert learnable.entropy_floor == pytest.approx(-(probs * np.log(probs)).sum())
    assert learnable.entropy_floor == pytest.approx(1.1369, abs=1e-4)
    assert learnable.uniform_loss == pytest.approx(math.log(256))
    random = _stream("random")
    assert random.entropy_floor == random.uniform_loss == pytest.approx(math.log(256))


def test_tiny_vocabulary_still_has_distinct_successors() -> None:
    stream = _stream(vocab_size=2)
    assert sorted(stream.successors[0].tolist()) == [0, 1]
    assert stream.entropy_floor < math.log(2)


def test_bad_arguments_name_the_valid_values() -> None:
    with pytest.raises(ValueError, match="learnable, random"):
        _stream("markov")
    with pytest.raises(ValueError, match="vocab_size"):
        _stream(vocab_size=1)
    with pytest.raises(ValueError, match="rank"):
        _stream(rank=2, world_size=2)


def test_pool_is_cheap_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    start = time.process_time()  # CPU time: steady on a busy machine
    stream = TokenStream("learnable", 50257, 8, 1024, seed=0, device="cpu")
    assert time.process_time() - start < 2.0  # ~0.2 s seen; CPU time, so load barely moves it
    assert stream.pool_rows * 1025 <= POOL_TOKENS
    start = time.process_time()
    for _ in range(50):
        stream.next_batch()
    assert time.process_time() - start < 1.0  # no per-token work per batch
    assert _stream("random").pool_rows == 0  # drawn fresh per batch, nothing to memorise

    monkeypatch.setattr(synthetic, "POOL_TOKENS", 1000)
    assert _stream(batch_size=2, seq_len=63).pool_rows == 1000 // 64  # the token cap
    assert _stream(batch_size=8, seq_len=63).pool_rows == 4 * 8  # at least four batches


# -- the stream trains (or does not) --------------------------------------------------------


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models train fastest on one thread, above all on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _train_gpt_tiny(kind: str, steps: int = 150) -> tuple[list[float], TokenStream]:
    torch.manual_seed(0)
    built = build_model(Case(model="gpt-tiny", seq_len=32), "cpu")
    stream = TokenStream(kind, built.vocab_size, 8, 32, seed=0, device="cpu")
    optimizer = torch.optim.AdamW(built.module.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        x, y = stream.next_batch()
        logits = built.logits(x)  # [B, T, V]
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, stream


def test_loss_falls_on_the_learnable_stream(one_thread: None) -> None:
    losses, stream = _train_gpt_tiny("learnable")
    start, end = losses[0], np.mean(losses[-10:])
    assert start == pytest.approx(stream.uniform_loss, abs=0.1)  # untrained: a uniform guess
    assert end < start - 2.0
    assert end < stream.uniform_loss - 2.0
    assert end > stream.entropy_floor - 0.1  # nothing beats the chain's entropy


def test_loss_stays_at_ln_v_on_the_random_stream(one_thread: None) -> None:
    losses, stream = _train_gpt_tiny("random", steps=100)
    assert np.mean(losses[-20:]) > stream.uniform_loss - 0.03


@pytest.mark.parametrize("kind", ["learnable", "random"])
def test_a_saved_data_position_continues_with_the_batch_that_followed(kind: str) -> None:
    stream = TokenStream(kind, 64, 2, 8, seed=3, device="cpu")
    stream.next_batch()
    saved = {name: value.clone() for name, value in stream.state_dict().items()}
    following = stream.next_batch()
    resumed = TokenStream(kind, 64, 2, 8, seed=3, device="cpu")
    resumed.load_state_dict(saved)
    assert torch.equal(resumed.next_batch()[0], following[0])
    assert not torch.equal(
        TokenStream(kind, 64, 2, 8, seed=3, device="cpu").next_batch()[0], following[0]
    )


def test_held_out_batches_are_fixed_per_seed_shared_by_ranks_and_never_drawn() -> None:
    # 64 tokens a row: a chain of 4 successors has 64 x 4^63 such rows, so a held-out row
    # found in the training pool would be one drawn from it, not a coincidence
    rank0 = TokenStream("learnable", 64, 2, 64, seed=5, device="cpu")
    rank1 = TokenStream("learnable", 64, 2, 64, seed=5, device="cpu", rank=1, world_size=2)
    held = rank0.held_out(3)
    assert len(held) == 3 and all(x.shape == (2, 64) for x, _ in held)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(held, rank1.held_out(3), strict=True))
    assert torch.equal(held[0][1][:, :-1], held[0][0][:, 1:])  # targets are the next tokens
    pool = (
        {tuple(row.tolist()) for row in rank0._pool[:, :-1]} if rank0._pool is not None else set()
    )
    assert not any(tuple(row.tolist()) in pool for x, _ in held for row in x)
    other_seed = TokenStream("learnable", 64, 2, 64, seed=6, device="cpu").held_out(1)
    assert not torch.equal(other_seed[0][0], held[0][0])
