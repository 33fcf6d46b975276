"""Text data, offline: the corpus and its split, byte and BPE tokens, the cache, and that a
model trains on it (in process and through the worker) with the network unreachable."""

from __future__ import annotations

import io
import json
import math
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from gpubench.contracts.case import make_case
from gpubench.worker.data import corpus, data_stream
from gpubench.worker.data.corpus import TextSourceError, check_text_source
from gpubench.worker.data.text import TextStream
from gpubench.worker.data.tokenizer import CACHE_ENV, encoded_corpus
from tests.in_process import CPU_TEST, train

ROOT = Path(__file__).resolve().parent.parent
WORDS = (
    "the a model trains on text and every batch is drawn from windows of tokens while the "
    "loss falls as it learns which letters follow which in words of this small corpus"
).split()


def sentences(n: int, seed: int) -> str:
    """``n`` lines of seeded word salad: English letters and spaces, quick to learn."""
    rng = random.Random(seed)
    return "".join(" ".join(rng.choices(WORDS, k=rng.randint(5, 12))) + ".\n" for _ in range(n))


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test builds into a cache of its own."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(folder))
    return folder


@pytest.fixture
def prose(tmp_path: Path) -> Path:
    """A folder of three text files (about 45 KB), a binary file and a hidden file."""
    folder = tmp_path / "prose"
    (folder / "sub").mkdir(parents=True)
    for i, name in enumerate(("a.txt", "b.md", "sub/c.txt")):
        (folder / name).write_text(sentences(250, seed=i), encoding="utf-8")
    (folder / "image.bin").write_bytes(bytes(range(256)) * 8)
    (folder / ".hidden.txt").write_text("never read\n", encoding="utf-8")
    return folder


def _stream(data: str, tokenizer: str = "byte", **settings: object) -> TextStream:
    args: dict = {"model_vocab_size": 256, "batch_size": 4, "seq_len": 32, "seed": 0}
    args.update(settings)
    return TextStream(data, tokenizer, device="cpu", **args)


# -- the corpus, its split and the refusals -----------------------------------------------------


def test_folder_reads_text_files_sorted_skipping_binary_and_hidden(prose: Path) -> None:
    assert corpus.text_files(f"text:{prose}") == [
        prose / "a.txt",
        prose / "b.md",
        prose / "sub/c.txt",
    ]
    assert corpus.text_files(f"text:{prose / 'b.md'}") == [prose / "b.md"]


def test_split_is_by_chunks_every_tenth_held_out_and_covers_the_corpus() -> None:
    text = sentences(2000, seed=5).encode()
    train_chunks, held = corpus.split_corpus(text)
    assert len(held) >= 2 and len(train_chunks) >= 9 * len(held)
    assert all(chunk.endswith(b"\n") for chunk in train_chunks + held)  # cut at line ends
    assert sum(map(len, train_chunks + held)) == len(text)
    assert 0.05 < sum(map(len, held)) / len(text) < 0.15


def bad_path(kind: str, where: Path) -> Path:
    """A path of ``kind`` that gives no text, made under ``where``."""
    path = where / kind
    if kind == "empty-folder":
        path.mkdir()
    elif kind == "no-text-files":
        path.mkdir()
        (path / "x.bin").write_bytes(b"\0\1")
    elif kind == "binary-file":
        path.write_bytes(b"\xff\xfe\0")
    elif kind == "empty-file":
        path.write_text("", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("missing", "does not exist"),
        ("empty-folder", "holds no files"),
        (
            "no-text-files",
            r"none of the 1 files under .* is text \(UTF-8 without NUL bytes\): x.bin",
        ),
        ("binary-file", "is not text"),
        ("empty-file", "are all empty"),
    ],
)
def test_a_path_with_no_text_is_refused_naming_it(tmp_path: Path, kind: str, expected: str) -> None:
    path = bad_path(kind, tmp_path)
    for attempt in (lambda: check_text_source(f"text:{path}"), lambda: _stream(f"text:{path}")):
        with pytest.raises(TextSourceError, match=expected) as caught:
            attempt()
        assert str(path) in str(caught.value)


def test_a_model_vocabulary_too_small_for_the_tokenizer_is_refused(prose: Path) -> None:
    with pytest.raises(ValueError, match=r"ids up to 255, but the model's vocabulary is 128"):
        _stream(f"text:{prose}", model_vocab_size=128)
    with pytest.raises(ValueError, match=r"tokenizer='bpe' needs .* the model's is 256"):
        _stream(f"text:{prose}", "bpe", model_vocab_size=256)


def test_a_corpus_shorter_than_a_window_is_refused(tmp_path: Path) -> None:
    (tmp_path / "short.txt").write_text("a short line\n" * 20, encoding="utf-8")
    with pytest.raises(ValueError, match="held-out part has .* fewer than one window"):
        _stream(f"text:{tmp_path / 'short.txt'}", seq_len=64)


# -- the stream -------------------------------------------------------------------------------


@pytest.mark.parametrize("tokenizer", ["byte", "bpe"])
def test_batches_are_shifted_windows_of_the_corpus(prose: Path, tokenizer: str) -> None:
    stream = _stream(f"text:{prose}", tokenizer, model_vocab_size=512, batch_size=3, seq_len=17)
    x, y = stream.next_batch()
    assert x.shape == y.shape == (3, 17) and x.dtype == y.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert int(max(x.max(), y.max())) < stream.vocab_size <= 512
    assert stream.uniform_loss == pytest.approx(math.log(512)) and stream.entropy_floor == 0.0
    if tokenizer == "byte":
        assert (
            bytes(x[0].tolist()).decode()
            in (prose / "a.txt").read_text()
            + (prose / "b.md").read_text()
            + (prose / "sub/c.txt").read_text()
        )
    else:
        assert 256 < stream.vocab_size  # merges learnt
        assert stream.corpus.meta["train_tokens"] < 0.5 * stream.corpus.meta["corpus_bytes"]


def test_same_seed_same_batches_other_seed_or_rank_differs(prose: Path) -> None:
    data = f"text:{prose}"
    a, b = _stream(data, seed=7), _stream(data, seed=7)
    for _ in range(3):
        assert torch.equal(a.next_batch()[0], b.next_batch()[0])
    first = _stream(data, seed=7).next_batch()[0]
    assert not torch.equal(first, _stream(data, seed=8).next_batch()[0])
    assert not torch.equal(first, _stream(data, seed=7, rank=1, world_size=2).next_batch()[0])


def test_state_dict_round_trip_continues_with_the_same_batch(prose: Path) -> None:
    stream = _stream(f"text:{prose}", seed=3)
    for _ in range(2):
        stream.next_batch()
    buffer = io.BytesIO()
    torch.save(stream.state_dict(), buffer)
    expected = stream.next_batch()
    resumed = _stream(f"text:{prose}", seed=3)
    buffer.seek(0)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    for got, want in zip(resumed.next_batch(), expected, strict=True):
        assert torch.equal(got, want)


def test_held_out_batches_are_fixed_shared_by_ranks_and_never_trained_on(tmp_path: Path) -> None:
    # random hex lines: any 33-byte window is found only where it was cut from
    rng = random.Random(0)
    lines = "".join(f"{rng.getrandbits(160):040x}\n" for _ in range(1500))
    (tmp_path / "hex.txt").write_text(lines, encoding="utf-8")
    data = f"text:{tmp_path / 'hex.txt'}"
    rank0, rank1 = _stream(data, seed=5), _stream(data, seed=5, rank=1, world_size=2)
    held = rank0.held_out(3)
    assert len(held) == 3 and all(x.shape == (4, 32) for x, _ in held)
    for (x0, y0), (x1, y1) in zip(held, rank1.held_out(3), strict=True):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
    other_case = _stream(data, seed=5, model_vocab_size=4096)  # a different model, same data
    assert torch.equal(other_case.held_out(1)[0][0], held[0][0])
    training = rank0.corpus.train.tobytes()
    held_text = rank0.corpus.held_out.tobytes()
    for x, y in held:
        for row_x, row_y in zip(x.tolist(), y.tolist(), strict=True):
            window = bytes(row_x + row_y[-1:])
            assert window in held_text and window not in training
    for _ in range(20):
        for row in rank0.next_batch()[0].tolist():
            assert bytes(row) not in held_text


# -- the cache ----------------------------------------------------------------------------------


def test_cache_is_read_back_and_rebuilt_when_a_file_changes(prose: Path, cache: Path) -> None:
    data = f"text:{prose}"
    built = encoded_corpus(data, "bpe", 512)
    again = encoded_corpus(data, "bpe", 512)
    assert built.built and not again.built and built.directory == again.directory
    assert (
        np.array_equal(built.train, again.train) and (built.directory / "tokenizer.json").is_file()
    )
    with (prose / "a.txt").open("a", encoding="utf-8") as fh:
        fh.write("one more line.\n")
    changed = encoded_corpus(data, "bpe", 512)
    assert changed.built and changed.directory != built.directory
    assert sorted(p.name for p in (cache / "text").iterdir()) == sorted(
        [built.directory.name, changed.directory.name]
    )  # no temporary folder left


def test_parallel_builds_of_one_entry_agree(prose: Path, cache: Path) -> None:
    script = textwrap.dedent(
        f"""
        from gpubench.worker.data.tokenizer import encoded_corpus
        got = encoded_corpus({f"text:{prose}"!r}, "bpe", 512)
        print(got.directory, int(got.train.sum()), got.train.size)
        """
    )
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    answers = {worker.communicate(timeout=120)[0] for worker in workers}
    assert all(worker.returncode == 0 for worker in workers)
    assert len(answers) == 1
    assert len(list((cache / "text").iterdir())) == 1  # one entry, no temporary folders


# -- no network ---------------------------------------------------------------------------------

# A child in which no connection can be made: a network namespace of its own with no interface
# up (`unshare -rn`: a user namespace too, so no root is needed), the real thing; where the
# kernel refuses unprivileged namespaces, socket.connect made to raise before anything runs.
NO_NETWORK_CHECK = """
import socket
try:
    socket.create_connection(("1.1.1.1", 53), timeout=2)
except OSError as exc:
    print("network unreachable:", exc)
else:
    raise SystemExit("the network is reachable")
"""
REFUSE_CONNECT = """
import socket
def _refused(self, *args, **kwargs):
    raise OSError("network unreachable (gpubench test)")
socket.socket.connect = _refused
socket.socket.connect_ex = _refused
"""


def offline_command(tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """The command prefix and environment of a child without network, and which way."""
    import os

    env = dict(os.environ)
    if shutil.which("unshare"):
        probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["unshare", "-rn", sys.executable], env
    site = tmp_path / "offline_site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(REFUSE_CONNECT, encoding="utf-8")
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    return [sys.executable], env


def test_bpe_is_trained_and_a_model_learns_with_the_network_unreachable(
    prose: Path, tmp_path: Path, cache: Path
) -> None:
    script = NO_NETWORK_CHECK + textwrap.dedent(
        f"""
        import json, math
        from gpubench.contracts.case import make_case
        from tests.in_process import train
        case = make_case(model="gpt-tiny", vocab_size=512, data={f"text:{prose}"!r},
                         tokenizer="bpe", batch_size=8, seq_len=32, steps=25, warmup=1,
                         lr=3e-3, seed=0)
        result = train(case)
        print(json.dumps([result.status, result.series.loss]))
        """
    )
    command, env = offline_command(tmp_path)
    done = subprocess.run(
        [*command, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "network unreachable" in done.stdout
    status, losses = json.loads(done.stdout.strip().splitlines()[-1])
    assert status == "ok"
    assert np.mean(losses[-5:]) < np.mean(losses[:3]) - 1.0, losses
    assert len(list((cache / "text").glob("*/tokenizer.json"))) == 1


# -- training -----------------------------------------------------------------------------------


@pytest.mark.parametrize("tokenizer", ["byte", "bpe"])
def test_loss_falls_on_text_in_process(prose: Path, tokenizer: str) -> None:
    case = make_case(
        model="gpt-tiny",
        vocab_size=None if tokenizer == "byte" else 512,
        data=f"text:{prose}",
        tokenizer=tokenizer,
        batch_size=8,
        seq_len=32,
        steps=25,
        warmup=1,
        lr=3e-3,
        seed=0,
        eval_batches=2,
    )
    result = train(case, CPU_TEST)
    assert result.status == "ok", result.describe()
    losses = result.series.loss
    uniform = math.log(256 if tokenizer == "byte" else 512)
    assert losses[0] == pytest.approx(uniform, abs=0.5)  # an untrained model's guess
    assert np.mean(losses[-5:]) < np.mean(losses[:3]) - 1.0, losses
    assert result.metrics.eval_loss is not None and result.metrics.eval_loss < uniform - 1.0


def test_default_corpus_is_the_standard_library_and_trains_through_the_worker() -> None:
    from gpubench.runner import run_case

    check_text_source("text")
    files = corpus.default_corpus_files()
    assert len(files) > 100 and all(f.suffix == ".py" for f in files)
    assert not any("site-packages" in f.parts or "test" in f.parts for f in files)
    case = make_case(
        model="gpt-tiny", data="text", batch_size=8, seq_len=32, steps=20, warmup=1, lr=3e-3
    )
    profile = CPU_TEST
    result = run_case(case, profile, timeout_s=240)
    assert result.status == "ok", result.describe()
    losses = result.series.loss
    assert np.mean(losses[-5:]) < np.mean(losses[:3]) - 1.0, losses


def test_data_stream_makes_the_case_s_source(prose: Path) -> None:
    text = data_stream(make_case(model="gpt-tiny", data=f"text:{prose}"), 256, "cpu")
    synthetic = data_stream(make_case(model="gpt-tiny"), 256, "cpu")
    assert isinstance(text, TextStream) and not isinstance(synthetic, TextStream)


def test_a_bad_text_path_is_refused_at_collection_before_any_worker(tmp_path: Path) -> None:
    from gpubench.contracts.case import CaseError
    from gpubench.contracts.profiles import resolve_profile
    from gpubench.session.collection import check_case_on_profile

    missing = tmp_path / "no-such-corpus"
    case = make_case(model="gpt-tiny", data=f"text:{missing}")
    with pytest.raises(CaseError, match=str(missing)):
        check_case_on_profile(case, resolve_profile("cpu"))
    (tmp_path / "corpus.txt").write_text("some text\n" * 100, encoding="utf-8")
    check_case_on_profile(
        make_case(model="gpt-tiny", data=f"text:{tmp_path}"), resolve_profile("cpu")
    )
