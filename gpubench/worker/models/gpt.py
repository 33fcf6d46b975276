"""The built-in GPT: a GPT-2-style decoder-only transformer, in one file read top-down.

Follows nanoGPT's ``model.py`` (Karpathy, https://github.com/karpathy/nanoGPT),
which follows GPT-2 (Radford et al. 2019, "Language Models are Unsupervised
Multitask Learners", section 2.3): pre-LayerNorm blocks, learned positional
embeddings, a GELU MLP four times as wide as the model, and the token embedding
tied to the output projection (Press & Wolf 2017, "Using the Output Embedding to
Improve Language Models").

Two training-time switches come from the benchmark's flags, not the config:
``attention`` ("sdpa": ``F.scaled_dot_product_attention``; "math": explicit
masked softmax) and ``grad_ckpt`` (recompute each block's activations in the
backward pass). ``forward`` returns logits only; the caller computes the loss.

Shapes: B batch, T sequence length, C = n_embd, nh = n_head, hs = C // nh, V vocab.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from gpubench.contracts.case import ATTENTION_KERNELS
from gpubench.contracts.catalog.gpt_config import GPTConfig

__all__ = ["ATTENTION_KERNELS", "GPT", "GPTConfig"]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, attention: str = "sdpa") -> None:
        super().__init__()
        if attention not in ATTENTION_KERNELS:
            raise ValueError(f"attention={attention!r}; valid: {', '.join(ATTENTION_KERNELS)}")
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.attention = attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()  # [B, T, C]
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # each [B, T, C]
        hs = C // self.n_head
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # [B, nh, T, hs]
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)  # [B, nh, T, hs]
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)  # [B, nh, T, hs]
        if self.attention == "sdpa":
            # fused kernel (flash / memory-efficient / math, chosen by torch)
            y = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
            )  # [B, nh, T, hs]
        else:
            # softmax(q k^T / sqrt(hs)) v with the future masked out (Vaswani et al. 2017)
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))  # [B, nh, T, T]
            causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()  # [T, T]
            att = att.masked_fill(~causal, float("-inf"))
            att = self.attn_dropout(F.softmax(att, dim=-1))  # [B, nh, T, T]
            y = att @ v  # [B, nh, T, hs]
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # [B, T, C]: heads side by side
        return self.resid_dropout(self.c_proj(y))  # [B, T, C]


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gelu(self.c_fc(x))  # [B, T, 4C]
        return self.dropout(self.c_proj(x))  # [B, T, C]


class Block(nn.Module):
    def __init__(self, config: GPTConfig, attention: str = "sdpa") -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, attention)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))  # [B, T, C]
        return x + self.mlp(self.ln_2(x))  # [B, T, C]


class GPT(nn.Module):
    def __init__(self, config: GPTConfig, attention: str = "sdpa", grad_ckpt: bool = False) -> None:
        super().__init__()
        self.config = config
        self.grad_ckpt = grad_ckpt
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)  # token embedding
        self.wpe = nn.Embedding(config.block_size, config.n_embd)  # position embedding
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList([Block(config, attention) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # weight tying: one V x C matrix embeds tokens and scores the next one
        self.wte.weight = self.lm_head.weight

        self.apply(self._init_weights)
        # GPT-2 (section 2.3) scales the residual projections by 1/sqrt(N), N residual layers
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        B, T = idx.size()  # idx: [B, T] token ids
        if T > self.config.block_size:
            raise ValueError(f"sequence of {T} tokens, block_size is {self.config.block_size}")
        pos = torch.arange(T, dtype=torch.long, device=idx.device)  # [T]
        tok_emb = self.wte(idx)  # [B, T, C]
        pos_emb = self.wpe(pos)  # [T, C]
        x = self.drop(tok_emb + pos_emb)  # [B, T, C]
        for block in self.h:
            if self.grad_ckpt and self.training:
                # keep only the block's input; recompute its insides during backward
                x = checkpoint(block, x, use_reentrant=False)  # [B, T, C]
            else:
                x = block(x)  # [B, T, C]
        x = self.ln_f(x)  # [B, T, C]
        return self.lm_head(x)  # [B, T, V] logits
