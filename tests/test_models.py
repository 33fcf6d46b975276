"""Built-in GPT sizes, flags honoured at build time, user factories and hf: models."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from gpubench.contracts.case import Case, CaseError, make_case
from gpubench.contracts.catalog.sizes import gpt_param_count
from gpubench.worker.data import TokenStream
from gpubench.worker.models import (
    BUILTIN_MODELS,
    BuiltModel,
    ModelBuildError,
    build_model,
    builtin_model_names,
    check_model_spec,
    gpt,
)


def _tiny(**settings: object) -> Case:
    settings.setdefault("seq_len", 32)
    return Case(model="gpt-tiny", **settings)  # type: ignore[arg-type]


def _loss(built: BuiltModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = built.logits(x)  # [B, T, V]
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))


# -- spec checking (no torch) ---------------------------------------------------------------


def test_builtin_names_in_size_order() -> None:
    assert builtin_model_names() == [
        "gpt-tiny", "gpt-mini", "gpt2-small", "gpt2-medium",
        "gpt-500m", "gpt2-large", "gpt-1b", "gpt2-xl",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "spec", [*BUILTIN_MODELS, "my_models:make_model", "pkg.sub.mod:Factory", "hf:gpt2",
             "hf:gpt_neox", "hf:xlm-roberta"],
)  # fmt: skip
def test_check_model_spec_accepts(spec: str) -> None:
    check_model_spec(spec)
    assert Case(model=spec).model == spec


@pytest.mark.parametrize(
    "spec", ["gpt2-smal", "gpt2", "pkg.mod:", ":factory", "pkg..mod:f", "pkg.mod:1f",
             "pkg.mod:f.g", "hf:", "hf:gpt2/extra", "pkg-name.mod:f"],
)  # fmt: skip
def test_check_model_spec_rejects_with_valid_forms(spec: str) -> None:
    with pytest.raises(CaseError) as info:
        check_model_spec(spec)
    message = str(info.value)
    assert repr(spec) in message
    for name in BUILTIN_MODELS:
        assert name in message
    assert "package.module:function" in message
    assert "hf:<model_type>" in message


def test_typo_suggests_the_closest_name() -> None:
    with pytest.raises(CaseError, match="did you mean 'gpt2-small'"):
        Case(model="gpt2-smal")


def test_importing_models_does_not_import_torch() -> None:
    code = (
        "import sys, gpubench.worker.models, gpubench.contracts.catalog.sizes\n"
        "from gpubench.contracts.case import Case\n"
        "Case(model='gpt2-small'); Case(model='pkg.mod:f'); Case(model='hf:gpt2')\n"
        "Case(model='gpt-tiny', model_config={'n_layer': 3, 'n_embd': 96})\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- sizes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(BUILTIN_MODELS))
def test_every_size_counts_within_10_percent_of_declared(name: str) -> None:
    size = BUILTIN_MODELS[name]
    built = build_model(Case(model=name, seq_len=128), "meta")  # nothing allocated
    assert all(p.is_meta for p in built.module.parameters())
    assert built.n_params == size.param_count  # the formula describes the module exactly
    assert built.declared_params == size.declared_params
    assert abs(built.n_params / size.declared_params - 1) < 0.10
    assert (built.n_layers, built.n_heads, built.d_model) == (
        size.n_layer, size.n_head, size.n_embd,
    )  # fmt: skip
    if name in ("gpt-tiny", "gpt-mini"):
        assert built.n_params == size.declared_params  # tiny sizes declare the exact count


def test_gpt2_small_is_124_4m_and_named_sizes_are_close() -> None:
    assert BUILTIN_MODELS["gpt2-small"].param_count == 124_439_808  # nanoGPT's 124.44M
    assert abs(BUILTIN_MODELS["gpt-1b"].param_count / 1e9 - 1) < 0.03
    assert BUILTIN_MODELS["gpt-500m"].param_count == 537_900_800  # 24 x 1280 x 16 heads


def test_weights_are_tied_and_counted_once() -> None:
    built = build_model(_tiny(), "meta")
    module = built.module
    assert module.lm_head.weight is module.wte.weight
    assert built.n_params < sum(
        p.numel() for _, p in module.named_parameters(remove_duplicate=False)
    )


def test_description_and_shape_fields() -> None:
    built = build_model(Case(model="gpt2-small"), "meta")
    assert built.description == "built-in gpt2-small: 12 layers, 12 heads, 768 wide, vocab 50257"
    assert (built.vocab_size, built.max_seq_len) == (50257, 1024)


def test_init_follows_gpt2() -> None:
    torch.manual_seed(0)
    module = build_model(_tiny(model_config={"n_embd": 256, "n_head": 4}), "cpu").module
    fc = module.h[0].mlp.c_fc
    proj = module.h[0].mlp.c_proj
    assert fc.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert proj.weight.std().item() == pytest.approx(0.02 / (2 * 2) ** 0.5, rel=0.05)
    assert torch.count_nonzero(fc.bias) == 0
    assert not any(isinstance(m, torch.nn.Dropout) and m.p for m in module.modules())


# -- overrides ------------------------------------------------------------------------------


def test_model_config_override_changes_shape_and_moves_declared_count() -> None:
    built = build_model(_tiny(model_config={"n_layer": 3, "n_embd": 96}), "meta")
    assert (built.n_layers, built.d_model) == (3, 96)
    assert built.n_params == gpt_param_count(3, 96, 256, 128)
    assert built.declared_params == built.n_params  # gpt-tiny declares exactly
    assert "n_layer=3" in built.description


def test_vocab_and_sequence_length_overrides() -> None:
    built = build_model(_tiny(vocab_size=1000, seq_len=300), "cpu")
    assert (built.vocab_size, built.max_seq_len) == (1000, 300)  # block grows to seq_len
    assert built.declared_params == gpt_param_count(2, 64, 1000, 300) == built.n_params
    assert built.logits(torch.zeros(1, 300, dtype=torch.long)).shape == (1, 300, 1000)


def test_expect_params_takes_precedence() -> None:
    assert build_model(_tiny(expect_params=123), "meta").declared_params == 123


# -- flags ----------------------------------------------------------------------------------


def _twin(case: Case, **flags: object) -> tuple[BuiltModel, BuiltModel]:
    """Two builds of the same weights, the second with other flags."""
    torch.manual_seed(0)
    first = build_model(case, "cpu")
    second = build_model(case.replace(**flags), "cpu")
    second.module.load_state_dict(first.module.state_dict())
    return first, second


def test_sdpa_and_math_attention_give_the_same_logits() -> None:
    sdpa, math_ = _twin(_tiny(), attention="math")
    assert math_.module.h[0].attn.attention == "math"
    x = torch.randint(0, 256, (3, 32))
    torch.testing.assert_close(sdpa.logits(x), math_.logits(x), rtol=1e-5, atol=1e-5)


def test_grad_ckpt_gives_the_same_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def counting_checkpoint(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(kwargs.get("use_reentrant"))
        return torch.utils.checkpoint.checkpoint(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(gpt, "checkpoint", counting_checkpoint)
    plain, ckpt = _twin(_tiny(), grad_ckpt=True)
    x, y = torch.randint(0, 256, (2, 32)), torch.randint(0, 256, (2, 32))
    _loss(plain, x, y).backward()
    _loss(ckpt, x, y).backward()
    assert calls == [False, False]  # one per block, non-reentrant
    for (name, p), q in zip(plain.module.named_parameters(), ckpt.module.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6, msg=name)

    ckpt.module.eval()
    with torch.no_grad():
        ckpt.logits(x)
    assert len(calls) == 2  # no checkpointing outside training


# -- logits extraction ----------------------------------------------------------------------


class _Returns(torch.nn.Module):
    def __init__(self, wrap: str) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(10, 10)
        self.wrap = wrap

    def forward(self, idx: torch.Tensor) -> object:
        logits = self.emb(idx)
        if self.wrap == "tuple":
            return logits, None
        if self.wrap == "object":
            return type("Output", (), {"logits": logits})()
        return logits


@pytest.mark.parametrize("wrap", ["tensor", "tuple", "object"])
def test_logits_whatever_the_module_returns(wrap: str) -> None:
    built = BuiltModel(module=_Returns(wrap), vocab_size=10, n_params=100, declared_params=None)
    assert built.logits(torch.zeros(2, 5, dtype=torch.long)).shape == (2, 5, 10)


# -- "package.module:factory" ---------------------------------------------------------------

_USER_MODULE = """
from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


class Bigram(nn.Module):
    def __init__(self, vocab_size: int, width: int, attention: str, grad_ckpt: bool) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.attention, self.grad_ckpt = attention, grad_ckpt
        self.emb = nn.Embedding(vocab_size, width)
        self.head = nn.Linear(width, vocab_size)

    def forward(self, idx):
        h = self.emb(idx)
        if self.grad_ckpt and self.training:
            h = checkpoint(torch.tanh, h, use_reentrant=False)
        return (self.head(h),)


def make(vocab_size: int = 64, width: int = 32, attention: str = "sdpa",
         grad_ckpt: bool = False) -> Bigram:
    return Bigram(vocab_size, width, attention, grad_ckpt)


def plain(width: int = 8) -> nn.Module:
    module = nn.Sequential(nn.Embedding(50, width), nn.Linear(width, 50))
    module.config = type("Config", (), {"vocab_size": 50})()
    return module


class WithHfStyleCkpt(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.vocab_size = 20
        self.lin = nn.Embedding(20, 20)
        self.enabled_with = None

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None):
        self.enabled_with = gradient_checkpointing_kwargs

    def forward(self, idx):
        return self.lin(idx)


def no_vocab() -> nn.Module:
    return nn.Embedding(5, 5)


def not_a_module() -> int:
    return 3
"""


@pytest.fixture
def user_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A user's model module on sys.path; returns its name."""
    name = f"user_models_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(_USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_user_factory_builds_and_trains(user_models: str) -> None:
    torch.manual_seed(0)
    case = Case(model=f"{user_models}:make", seq_len=16, model_config={"width": 48})
    built = build_model(case, "cpu")
    assert built.vocab_size == 64
    assert built.n_params == 64 * 48 + 48 * 64 + 64
    assert built.declared_params is None
    assert built.module.emb.embedding_dim == 48
    assert user_models in built.description

    stream = TokenStream("learnable", built.vocab_size, 16, 16, seed=0, device="cpu")
    optimizer = torch.optim.AdamW(built.module.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        x, y = stream.next_batch()
        loss = _loss(built, x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0


def test_user_factory_gets_flags_and_case_vocab(user_models: str) -> None:
    case = make_case(model=f"{user_models}:make", vocab_size=100, attention="math", grad_ckpt=True)
    module = build_model(case, "cpu").module
    assert (module.vocab_size, module.attention, module.grad_ckpt) == (100, "math", True)


def test_user_factory_vocab_from_config_and_hf_style_checkpointing(user_models: str) -> None:
    assert build_model(Case(model=f"{user_models}:plain"), "cpu").vocab_size == 50
    built = build_model(make_case(model=f"{user_models}:WithHfStyleCkpt", grad_ckpt=True), "cpu")
    assert built.module.enabled_with == {"use_reentrant": False}


@pytest.mark.parametrize(
    ("factory", "settings", "match"),
    [
        ("plain", {"attention": "math"}, "no 'attention' parameter"),
        ("plain", {"grad_ckpt": True}, "gradient_checkpointing_enable"),
        ("plain", {"model_config": {"depth": 2}}, "depth.*valid keys: width"),
        ("plain", {"vocab_size": 80}, "out of range"),
        ("no_vocab", {}, "cannot tell the vocabulary"),
        ("not_a_module", {}, "not a torch.nn.Module"),
        ("missing", {}, "has no 'missing'"),
    ],
)
def test_user_factory_errors(user_models: str, factory: str, settings: dict, match: str) -> None:
    with pytest.raises(ModelBuildError, match=match):
        build_model(make_case(model=f"{user_models}:{factory}", **settings), "cpu")


def test_unimportable_factory_module_names_the_spec() -> None:
    with pytest.raises(ModelBuildError, match="no_such_pkg_xyz.models:make"):
        build_model(Case(model="no_such_pkg_xyz.models:make"), "cpu")


# -- "hf:<model_type>" ----------------------------------------------------------------------


def test_hf_without_transformers_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # import raises ImportError
    with pytest.raises(ModelBuildError, match=r"pip install gpubench\[hf\]"):
        build_model(Case(model="hf:gpt2"), "cpu")


_HF_TINY = {"n_layer": 1, "n_embd": 32, "n_head": 2}


def test_hf_gpt2_tiny_config_builds_and_trains() -> None:
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    case = Case(model="hf:gpt2", seq_len=16, vocab_size=128, model_config=_HF_TINY)
    built = build_model(case, "cpu")
    assert (built.n_layers, built.n_heads, built.d_model, built.vocab_size) == (1, 2, 32, 128)
    assert built.module.config._attn_implementation == "sdpa"
    assert built.declared_params is None
    assert built.description.startswith("hf:gpt2 (GPT2LMHeadModel): 1 layers, 2 heads")

    x = torch.randint(0, 128, (2, 16))
    optimizer = torch.optim.AdamW(built.module.parameters(), lr=1e-3)
    first = _loss(built, x, x).item()
    for _ in range(5):
        loss = _loss(built, x, x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < first


def test_hf_flags_and_unknown_key() -> None:
    pytest.importorskip("transformers")
    case = Case(model="hf:gpt2", seq_len=2048, vocab_size=64, model_config=_HF_TINY)
    built = build_model(case.replace(attention="math", grad_ckpt=True), "cpu")
    assert built.module.config._attn_implementation == "eager"
    enabled = getattr(built.module, "is_activation_checkpointing", None)  # transformers >= 5
    assert enabled if enabled is not None else built.module.is_gradient_checkpointing
    assert built.max_seq_len == 2048  # the positional table grows to seq_len
    with pytest.raises(ModelBuildError, match="n_layers.*valid keys:.*n_layer"):
        build_model(case.replace(model_config={"n_layers": 1}), "cpu")
    with pytest.raises(ModelBuildError, match="hf:not_a_model_type"):
        build_model(Case(model="hf:not_a_model_type"), "cpu")


@pytest.mark.parametrize(
    ("model_config", "message"),
    [
        ({"n_head": 3}, "n_embd=64 must be divisible by n_head=3"),
        ({"n_layer": 0}, "n_layer=0 must be an integer >= 1"),
        ({"dropout": 1.5}, "dropout=1.5 must be in [0, 1)"),
        ({"bias": "yes"}, "bias='yes' must be True or False"),
    ],
)
def test_bad_model_config_value_fails_when_the_case_is_declared(
    model_config: dict, message: str
) -> None:
    from gpubench.contracts.case import CaseError, make_case

    with pytest.raises(CaseError) as info:
        make_case(model="gpt-tiny", model_config=model_config)
    assert "model_config for built-in 'gpt-tiny'" in str(info.value)
    assert message in str(info.value)


def test_unknown_model_config_key_fails_when_the_case_is_declared() -> None:
    from gpubench.contracts.case import CaseError, make_case

    with pytest.raises(CaseError, match="model_config key\\(s\\) n_layers not known") as info:
        make_case(model="gpt-tiny", model_config={"n_layers": 3})
    for key in ("n_layer", "n_head", "n_embd", "vocab_size", "block_size", "dropout", "bias"):
        assert key in str(info.value)
