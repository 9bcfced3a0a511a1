"""The V-JEPA attentive classifier: learned query token(s) cross-attending to frozen tokens, then a linear head.

As `facebookresearch/jepa` (src/models/attentive_pooler.py, V-JEPA 1: one cross-attention
block whose attention has an output projection) and `facebookresearch/vjepa2` (the same
module, `depth - 1` self-attention blocks over the tokens first, no output projection in
the cross-attention). Pre-norm blocks, LayerNorm eps 1e-5, GELU MLP, qkv biases; weights
initialised as both repositories do (truncated normal std 0.02, zero biases, the residual
output layers divided by sqrt(2 * layer)); the linear head keeps PyTorch's default init.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

INIT_STD = 0.02


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, N, C) -> (B, heads, N, C / heads)."""
    b, n, c = x.shape
    return x.reshape(b, n, num_heads, c // num_heads).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, c) -> (B, N, heads * c)."""
    b, h, n, c = x.shape
    return x.transpose(1, 2).reshape(b, n, h * c)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (_heads(part, self.num_heads) for part in self.qkv(x).chunk(3, dim=-1))
        return self.proj(_merge(F.scaled_dot_product_attention(q, k, v)))


class CrossAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, proj: bool):
        super().__init__()
        self.num_heads = num_heads
        self.q, self.kv = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim) if proj else None

    def forward(self, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        k, v = (_heads(part, self.num_heads) for part in self.kv(x).chunk(2, dim=-1))
        out = _merge(F.scaled_dot_product_attention(_heads(self.q(q), self.num_heads), k, v))
        return self.proj(out) if self.proj is not None else out


class Block(nn.Module):
    """Pre-norm self-attention block: x + attn(norm1(x)), then + mlp(norm2(.))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn, self.mlp = SelfAttention(dim, num_heads), Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CrossAttentionBlock(nn.Module):
    """q + xattn(q, norm1(x)), then + mlp(norm2(.)): the queries never pass through a norm before attending."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, proj: bool):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.xattn, self.mlp = CrossAttention(dim, num_heads, proj), Mlp(dim, int(dim * mlp_ratio))

    def forward(self, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        q = q + self.xattn(q, self.norm1(x))
        return q + self.mlp(self.norm2(q))


class AttentiveClassifier(nn.Module):
    """Tokens (B, L, D) -> class logits (B, K): `depth - 1` self-attention blocks, one cross-attention block from
    `queries` learned tokens (averaged when there are several), a linear layer."""

    def __init__(self, dim: int, classes: int, num_heads: int, depth: int = 1, mlp_ratio: float = 4.0,
                 cross_proj: bool = True, queries: int = 1):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"the token width {dim} is not divisible by num_heads {num_heads}")
        self.query_tokens = nn.Parameter(torch.zeros(1, queries, dim))
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio) for _ in range(depth - 1))
        self.cross_attention_block = CrossAttentionBlock(dim, num_heads, mlp_ratio, cross_proj)
        nn.init.trunc_normal_(self.query_tokens, std=INIT_STD)
        for module in [*self.blocks.modules(), *self.cross_attention_block.modules()]:
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=INIT_STD)
                nn.init.zeros_(module.bias)
        with torch.no_grad():
            for layer, block in enumerate(self.blocks, 1):
                block.attn.proj.weight.div_(math.sqrt(2.0 * layer))
                block.mlp.fc2.weight.div_(math.sqrt(2.0 * layer))
            cross = self.cross_attention_block
            if cross.xattn.proj is not None:
                cross.xattn.proj.weight.div_(math.sqrt(2.0))
            cross.mlp.fc2.weight.div_(math.sqrt(2.0 * max(1, len(self.blocks))))
        self.linear = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        q = self.cross_attention_block(self.query_tokens.expand(len(x), -1, -1), x)
        return self.linear(q.mean(1))
