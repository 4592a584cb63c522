"""SSAST-style ViT encoder (SPEC.md section 2): pre-norm blocks, qkv bias, GELU MLP, final LayerNorm.

Two attention paths with one set of weights: `attention="sdpa"` (PyTorch's fused
scaled_dot_product_attention: flash / memory-efficient kernels on GPU) and `attention="explicit"`
(softmax(q k^T / sqrt(d)) v written out, as in the released code: the reference for parity tests).

Two backward passes of the q, k, v projection with one set of weights: `qkv_grad="split"` (`linear_chunks`:
attention's three gradients go straight into their GEMMs) and `qkv_grad="packed"` (nn.Linear, what autograd
derives: the gradients are stacked into one [B, L, 3D] tensor first).

Two exact placements of the key and value biases with one set of weights (with `qkv_grad="split"`):
`kv_bias="folded"` and `"direct"` (added to k and v, as the released code does). Folded:
- the key bias is left out. It adds q . b_k to all of a query's scores, which softmax ignores, so the output
  cannot depend on it: its exact gradient is zero (autograd's column sum of dk returns rounding noise, which
  Adam's normalisation turns into a random walk of a parameter that changes nothing; Whisper's key
  projection has no bias). b_k keeps its value, and released checkpoints load unchanged;
- the value bias moves through attention into proj's bias: each row of softmax weights sums to one, so
  attention(q, k, v + b_v) = attention(q, k, v) + b_v, and proj(y + b_v) = y Wp^T + (b_p + Wp b_v). Autograd
  through that small matrix-vector product gives b_v, Wp and b_p the same gradients as before.
The function and every gradient are unchanged up to rounding; the backward saves two column sums over
[tokens, width] gradients per layer (the q, k, v GEMMs then add only q's bias).

Two backward passes of the MLP's fc1 + GELU with one set of weights: `mlp_grad="fused"` (`linear_gelu`: GELU's
gradient and fc1's bias gradient in one pass over memory) and `mlp_grad="autograd"` (a second pass for the
bias gradient).

Two precisions of the residual stream under autocast: `residual="float32"` (the released AMP recipe:
the stream, its adds and its gradients stay float32) and `residual="autocast"` (the stream is carried in
the autocast dtype, e.g. bf16, as Megatron-LM does by default: half the memory traffic of the step's
bandwidth-bound part, at the cost of bf16 rounding in the adds). Without autocast both are float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from msmbench.models.linear import linear_chunks, linear_gelu
from msmbench.models.registry import register_backbone

LayerNorm = partial(nn.LayerNorm, eps=1e-6)  # the released code's norm


@dataclass(frozen=True)
class TransformerConfig:
    dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    attention: str = "sdpa"  # "sdpa" (fused) | "explicit" (reference)
    residual: str = "float32"  # "float32" (released AMP recipe) | "autocast" (stream in the autocast dtype)
    qkv_grad: str = "split"  # "split" (linear_chunks) | "packed" (autograd through nn.Linear)
    kv_bias: str = "folded"  # "folded" (b_k left out, b_v moved into proj's bias: exact) | "direct"; needs "split"
    mlp_grad: str = "fused"  # "fused" (linear_gelu) | "autograd" (through nn.Linear and F.gelu)


class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        if cfg.dim % cfg.heads:
            raise ValueError(f"dim {cfg.dim} is not divisible by heads {cfg.heads}")
        if cfg.attention not in ("sdpa", "explicit"):
            raise ValueError(f"attention must be 'sdpa' or 'explicit', got {cfg.attention!r}")
        if cfg.qkv_grad not in ("split", "packed"):
            raise ValueError(f"qkv_grad must be 'split' or 'packed', got {cfg.qkv_grad!r}")
        if cfg.kv_bias not in ("folded", "direct"):
            raise ValueError(f"kv_bias must be 'folded' or 'direct', got {cfg.kv_bias!r}")
        self.heads = cfg.heads
        self.use_sdpa = cfg.attention == "sdpa"
        self.split_grad = cfg.qkv_grad == "split"
        self.fold_kv_bias = self.split_grad and cfg.kv_bias == "folded" and cfg.qkv_bias
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim, bias=cfg.qkv_bias)
        self.proj = nn.Linear(cfg.dim, cfg.dim)

    def forward(self, x: Tensor) -> Tensor:
        B, L, D = x.shape
        if self.split_grad:
            biased = (0,) if self.fold_kv_bias else (0, 1, 2)  # of q, k, v
            chunks = linear_chunks(x, self.qkv.weight, self.qkv.bias, 3, biased)
            q, k, v = (t.view(B, L, self.heads, -1).transpose(1, 2) for t in chunks)  # 3 x [B, H, L, d]
        else:
            q, k, v = self.qkv(x).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        if self.use_sdpa:
            y = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
            y = attn.softmax(dim=-1) @ v
        return F.linear(y.transpose(1, 2).reshape(B, L, D), self.proj.weight, self.proj_bias())

    def proj_bias(self) -> Tensor:
        if not self.fold_kv_bias:
            return self.proj.bias
        value_bias = self.qkv.bias[2 * self.proj.in_features:]
        with torch.autocast(value_bias.device.type, enabled=False):  # in the parameters' float32
            return self.proj.bias + self.proj.weight @ value_bias


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, grad: str = "fused"):
        super().__init__()
        if grad not in ("fused", "autograd"):
            raise ValueError(f"mlp_grad must be 'fused' or 'autograd', got {grad!r}")
        self.fused_grad = grad == "fused"
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        if self.fused_grad:
            return self.fc2(linear_gelu(x, self.fc1.weight, self.fc1.bias))
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.norm1 = LayerNorm(cfg.dim)
        self.attn = Attention(cfg)
        self.norm2 = LayerNorm(cfg.dim)
        self.mlp = MLP(cfg.dim, int(cfg.dim * cfg.mlp_ratio), cfg.mlp_grad)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


TRANSFORMER_SIZES = {
    "cpu": TransformerConfig(dim=64, depth=4, heads=2),
    "tiny": TransformerConfig(dim=192, depth=12, heads=3),
    "small": TransformerConfig(dim=384, depth=12, heads=6),
    "base": TransformerConfig(dim=768, depth=12, heads=12),
}


@register_backbone("transformer", TransformerConfig, TRANSFORMER_SIZES,
                   description="SSAST-style ViT (pre-norm, MHSA + GELU MLP)",
                   paper_params={"tiny": 5.4, "small": 21.5, "base": 85.8})
class TransformerEncoder(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        if cfg.residual not in ("float32", "autocast"):
            raise ValueError(f"residual must be 'float32' or 'autocast', got {cfg.residual!r}")
        self.cfg = cfg
        self.dim = cfg.dim
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = LayerNorm(cfg.dim)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        # The released code: xavier_uniform Linear weights, zero biases; LayerNorm (1, 0).
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, L, D] -> [B, L, D]."""
        if self.cfg.residual == "autocast" and torch.is_autocast_enabled(x.device.type):
            x = x.to(torch.get_autocast_dtype(x.device.type))
        for block in self.blocks:
            x = block(x)
        return self.norm(x)
