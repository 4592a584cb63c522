"""AxLSTM encoder (SPEC.md section 2): Vision-LSTM (ViL) blocks of mLSTM layers, alternating direction.

Layout, as in the authors' code (axlstm-official src/models/vision_lstm.py: ViLBlock / ViLLayer /
MatrixLSTMCell, taken from NX-AI/vision-lstm; alternation from src/models/xlstm_ssast.py):

    block(x)     = x + layer(norm(x))                  norm: bias-free LayerNorm, eps 1e-5, weight as 1 + w
    layer(x)     = flip( proj_down(h) )  of  x = flip(x)      (flip only in odd blocks: "ROWWISE_FROM_BOT_RIGHT")
      x_m, z     = split(proj_up(x))                   D -> 2 * E, E = proj_factor * D, no bias
      c          = silu(causal_conv1d(x_m))            depthwise, kernel 4, with bias
      q, k, v    = headwise(c), headwise(c), headwise(x_m)   block-diagonal, blocks of 4 x 4, no bias
      h~         = outnorm(mLSTM(q, k, v, igate, fgate))    4 heads of E/4; gates: Linear(3E -> 4) on [q,k,v]
      h          = (h~ + learnable_skip * c) * silu(z)
      out        = proj_down(h)                        E -> D, no bias
    encoder(x)   = final_norm(block_11(... block_0(x)))

No MLP. The released code computes the mLSTM with the quadratic parallel form; here `kernel` picks the
cell's computation (msmbench.ops.mlstm): "auto" = our exact Triton kernel on CUDA (msmbench.ops.mlstm_triton,
memory linear in S), mlstm_kernels' chunkwise native PyTorch kernel on CPU; "parallel" is the reference.
All paths share one set of weights and compute the same function with the same gradient.

Relation to the xlstm package: the ViL layer *is* xlstm's mLSTMLayer (xlstm/blocks/mlstm/layer.py) plus
the direction flip: same sub-modules, parameter names, shapes and init. It is built here from the
package's components (LinearHeadwiseExpand, CausalConv1d, LayerNorm, MultiHeadLayerNorm, small_init /
wang_init / bias_linspace_init) rather than by subclassing mLSTMLayer, because that class hard-wires its
cell to the parallel backend with a [context_length, context_length] mask buffer; the cell here calls
msmbench.ops.mlstm (mlstm_kernels' chunkwise kernels). tests/test_xlstm.py loads an xlstm mLSTMLayer's
state dict into `ViLLayer` and checks that the outputs agree. Two details follow ViL, not mLSTMLayer:
the inner width is proj_factor * D exactly (mLSTMLayer rounds it up to a multiple of 64; equal for every
preset) and there is no dropout. Parameter names and shapes also match the authors' checkpoints
(blocks.{i}.norm.weight, blocks.{i}.layer.proj_up.weight, ..., layer.mlstm_cell.{igate,fgate,outnorm}).

Final norm: the released encoder (BaseSSAST.encoder_norm) is torch's LayerNorm(eps=1e-6) *with* a bias;
`final_norm_bias=True` (the default) reproduces that; False gives a bias-free final norm like the blocks'.

"xlstm-slstm" (an extension, not in the paper): every `slstm_every`-th block (indices slstm_every-1,
2*slstm_every-1, ...: blocks 3, 7, 11 of 12) is the xlstm package's sLSTMBlock (pre-norm sLSTM layer with
4 heads and a causal conv, plus its gated feed-forward, proj_factor 1.3) instead of a ViL block; it follows
the same direction alternation. sLSTM backend "vanilla" (PyTorch loop over time) on CPU, "cuda" (the
package's fused kernel, compiled on first use) on GPU; "auto" picks by torch.cuda.is_available() when the
model is built, so build it on the machine that runs it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from xlstm.components.conv import CausalConv1d, CausalConv1dConfig
from xlstm.components.init import bias_linspace_init_, small_init_init_, wang_init_
from xlstm.components.linear_headwise import LinearHeadwiseExpand, LinearHeadwiseExpandConfig
from xlstm.components.ln import LayerNorm, MultiHeadLayerNorm

from msmbench.models.registry import register_backbone
from msmbench.ops.mlstm import KERNELS, mlstm


@dataclass(frozen=True)
class XLSTMConfig:
    dim: int = 768                 # token width D
    depth: int = 12
    num_heads: int = 4             # mLSTM cell heads (ViL passes qkv_block_size = 4 here)
    proj_factor: float = 2.0       # up-projection E = proj_factor * D (ViL "expansion")
    qkv_proj_blocksize: int = 4    # q/k/v projections are block-diagonal with blocks of this size
    conv_kernel_size: int = 4      # causal depthwise conv
    cell: str = "mlstm"            # "mlstm" (AxLSTM) | "slstm_mix" (extension, see module docstring)
    slstm_every: int = 4           # slstm_mix: blocks i with (i + 1) % slstm_every == 0 are sLSTM blocks
    slstm_backend: str = "auto"    # "auto" | "vanilla" | "cuda"
    kernel: str = "auto"           # msmbench.ops.mlstm kernel: auto | parallel | chunkwise_native | ...
    chunk_size: int = 64           # chunk length of the chunkwise kernels
    fused_projections: bool = True  # fast path: q/k (and v) as tiled matmuls, both gates as one Linear
    final_norm_bias: bool = True   # released code: nn.LayerNorm(D, eps=1e-6) with bias as the final norm

    @property
    def inner_dim(self) -> int:
        return round(self.proj_factor * self.dim)


class MLSTMCell(nn.Module):
    """mLSTM cell with ViL's parameters (igate, fgate: Linear(3E, NH); outnorm: per-head LayerNorm).

    q, k, v: [B, S, E] -> h: [B, S, E]. The gates read the concatenation [q, k, v].
    """

    def __init__(self, inner_dim: int, num_heads: int, kernel: str = "auto", chunk_size: int = 64):
        super().__init__()
        if inner_dim % num_heads:
            raise ValueError(f"inner dim {inner_dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.kernel = kernel
        self.chunk_size = chunk_size
        self.igate = nn.Linear(3 * inner_dim, num_heads)
        self.fgate = nn.Linear(3 * inner_dim, num_heads)
        self.outnorm = MultiHeadLayerNorm(ndim=inner_dim, weight=True, bias=False)
        self.use_fast_path = True  # one Linear for both gates (same weights)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # xLSTM / ViL: forget gate bias linearly spaced in [3, 6] (remember by default), zero gate weights,
        # input gate bias N(0, 0.1).
        self.outnorm.reset_parameters()
        nn.init.zeros_(self.fgate.weight)
        bias_linspace_init_(self.fgate.bias, start=3.0, end=6.0)
        nn.init.zeros_(self.igate.weight)
        nn.init.normal_(self.igate.bias, mean=0.0, std=0.1)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        B, S, E = q.shape
        qkv = torch.cat([q, k, v], dim=-1)  # [B, S, 3E]
        if self.use_fast_path:
            gates = F.linear(qkv, torch.cat([self.igate.weight, self.fgate.weight]),
                             torch.cat([self.igate.bias, self.fgate.bias]))
            igate, fgate = gates.transpose(1, 2).chunk(2, dim=1)  # 2 x [B, NH, S]
        else:
            igate, fgate = self.igate(qkv).transpose(1, 2), self.fgate(qkv).transpose(1, 2)
        q, k, v = (t.reshape(B, S, self.num_heads, -1).transpose(1, 2) for t in (q, k, v))  # [B, NH, S, DH]
        h = mlstm(q, k, v, igate, fgate, kernel=self.kernel, chunk_size=self.chunk_size)  # [B, NH, S, DH]
        return self.outnorm(h).transpose(1, 2).reshape(B, S, E)


class ViLLayer(nn.Module):
    """ViL's mLSTM layer: [B, S, D] -> [B, S, D]; `flip` scans the sequence backwards (odd blocks)."""

    def __init__(self, cfg: XLSTMConfig, flip: bool = False):
        super().__init__()
        D, E = cfg.dim, cfg.inner_dim
        if E % cfg.qkv_proj_blocksize:
            raise ValueError(f"inner dim {E} is not divisible by qkv_proj_blocksize {cfg.qkv_proj_blocksize}")
        self.dim, self.inner_dim, self.flip = D, E, flip
        self.fused_projections = cfg.fused_projections
        self.proj_up = nn.Linear(D, 2 * E, bias=False)
        proj = LinearHeadwiseExpandConfig(in_features=E, num_heads=E // cfg.qkv_proj_blocksize, bias=False)
        self.q_proj, self.k_proj, self.v_proj = (LinearHeadwiseExpand(proj) for _ in range(3))
        self.conv1d = CausalConv1d(CausalConv1dConfig(feature_dim=E, kernel_size=cfg.conv_kernel_size))
        self.mlstm_cell = MLSTMCell(E, cfg.num_heads, cfg.kernel, cfg.chunk_size)
        self.mlstm_cell.use_fast_path = cfg.fused_projections
        self.learnable_skip = nn.Parameter(torch.ones(E))
        self.proj_down = nn.Linear(E, D, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # ViLLayer.reset_parameters == xlstm mLSTMLayer.reset_parameters with num_blocks = 1:
        # small_init (std sqrt(2 / 5D)) for proj_up and q/k/v (with the *embedding* dim D),
        # wang_init (std 2 / sqrt(D)) for proj_down, learnable skip 1, conv1d torch default.
        small_init_init_(self.proj_up.weight, dim=self.dim)
        wang_init_(self.proj_down.weight, dim=self.dim, num_blocks=1)
        nn.init.ones_(self.learnable_skip)
        for proj in (self.q_proj, self.k_proj, self.v_proj):
            small_init_init_(proj.weight, dim=self.dim)
        self.conv1d.reset_parameters()
        self.mlstm_cell.reset_parameters()

    def _headwise(self, x: Tensor, projs: tuple[LinearHeadwiseExpand, ...]) -> tuple[Tensor, ...]:
        """Block-diagonal projections of one input: [..., E] -> one [..., E] per projection.

        Fast path (fused_projections): the 4 x 4 blocks of all `projs` are gathered into block-diagonal
        32 x 32 tiles and applied as one batched matmul. Same weights and result as calling each
        LinearHeadwiseExpand (xlstm's einsum over 4 x 4 blocks), about half the CPU time at E = 128.
        """
        if not self.fused_projections:
            return tuple(p(x) for p in projs)
        w = torch.stack([p.weight for p in projs])  # [P, nh, o, d]
        P, nh, o, d = w.shape
        G = max(g for g in range(1, max(1, 32 // d) + 1) if nh % g == 0)  # blocks per tile
        eye = torch.eye(G, dtype=w.dtype, device=w.device)
        tiles = torch.einsum("pnbod,bc->npbocd", w.view(P, nh // G, G, o, d), eye)
        tiles = tiles.reshape(nh // G, P, G * o, G * d)  # block-diagonal tiles
        y = torch.einsum("...nd,npjd->p...nj", x.view(*x.shape[:-1], nh // G, G * d), tiles)
        return tuple(y.reshape(P, *x.shape[:-1], nh * o).unbind(0))

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, S, D] -> [B, S, D]."""
        if self.flip:
            x = x.flip(1)
        x_m, z = self.proj_up(x).chunk(2, dim=-1)  # 2 x [B, S, E]
        c = F.silu(self.conv1d(x_m))  # causal depthwise conv + SiLU
        q, k = self._headwise(c, (self.q_proj, self.k_proj))  # block-diagonal, blocks of 4
        (v,) = self._headwise(x_m, (self.v_proj,))
        h = self.mlstm_cell(q, k, v) + self.learnable_skip * c  # [B, S, E]
        y = self.proj_down(h * F.silu(z))  # output gate SiLU(z), down-projection
        return y.flip(1) if self.flip else y


class ViLBlock(nn.Module):
    """Pre-norm residual: x + layer(norm(x)); norm is bias-free (xlstm LayerNorm, eps 1e-5)."""

    def __init__(self, cfg: XLSTMConfig, flip: bool = False):
        super().__init__()
        self.norm = LayerNorm(ndim=cfg.dim, weight=True, bias=False)
        self.layer = ViLLayer(cfg, flip=flip)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.layer(self.norm(x))


class SLSTMBlock(nn.Module):
    """The xlstm package's sLSTMBlock (norm + sLSTM layer + norm + gated FFN, both residual), optionally
    scanning the flipped sequence."""

    def __init__(self, cfg: XLSTMConfig, block_idx: int, flip: bool = False):
        super().__init__()
        from xlstm.blocks.slstm.block import sLSTMBlock, sLSTMBlockConfig
        from xlstm.blocks.slstm.layer import sLSTMLayerConfig
        from xlstm.components.feedforward import FeedForwardConfig

        backend = cfg.slstm_backend
        if backend == "auto":
            backend = "cuda" if torch.cuda.is_available() else "vanilla"
        if backend not in ("vanilla", "cuda"):
            raise ValueError(f"slstm_backend must be 'auto', 'vanilla' or 'cuda', got {cfg.slstm_backend!r}")
        layer = sLSTMLayerConfig(embedding_dim=cfg.dim, num_heads=cfg.num_heads, backend=backend,
                                 conv1d_kernel_size=cfg.conv_kernel_size,
                                 # the CUDA kernel computes in bf16 (the package default); vanilla in the
                                 # inputs' dtype
                                 dtype="bfloat16" if backend == "cuda" else "float32")
        self.flip = flip
        ffn = FeedForwardConfig(proj_factor=1.3, act_fn="gelu")  # the package's default sLSTM-block FFN
        self.block = sLSTMBlock(sLSTMBlockConfig(slstm=layer, feedforward=ffn, _num_blocks=cfg.depth,
                                                 _block_idx=block_idx))

    def forward(self, x: Tensor) -> Tensor:
        if self.flip:
            return self.block(x.flip(1)).flip(1)
        return self.block(x)


XLSTM_SIZES = {
    # cpu: the default for 2-core pretraining; 4 heads of 32, 128-wide inner. Chunk 32 was the fastest
    # chunkwise-native setting on 2 CPU cores, batch 32 x 251 tokens, fwd+bwd (16: +4-9%, 64: +2-5%);
    # ~2x the Transformer's `cpu` size there (benchmarks/cpu_backbones.py).
    "cpu": XLSTMConfig(dim=64, depth=4, chunk_size=32),
    "tiny": XLSTMConfig(dim=192),
    "small": XLSTMConfig(dim=384),
    "base": XLSTMConfig(dim=768),
}
XLSTM_SLSTM_SIZES = {name: dataclasses.replace(cfg, cell="slstm_mix") for name, cfg in XLSTM_SIZES.items()}


class _XLSTMEncoderBase(nn.Module):
    def __init__(self, cfg: XLSTMConfig):
        super().__init__()
        if cfg.cell not in ("mlstm", "slstm_mix"):
            raise ValueError(f"cell must be 'mlstm' or 'slstm_mix', got {cfg.cell!r}")
        if cfg.kernel not in KERNELS:
            raise ValueError(f"unknown mLSTM kernel {cfg.kernel!r}; choose from {KERNELS}")
        if cfg.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {cfg.chunk_size}")
        self.cfg = cfg
        self.dim = cfg.dim
        blocks = []
        for i in range(cfg.depth):
            flip = i % 2 == 1  # even: ROWWISE_FROM_TOP_LEFT (forward), odd: ROWWISE_FROM_BOT_RIGHT (flipped)
            if cfg.cell == "slstm_mix" and (i + 1) % cfg.slstm_every == 0:
                blocks.append(SLSTMBlock(cfg, i, flip=flip))
            else:
                blocks.append(ViLBlock(cfg, flip=flip))
        self.blocks = nn.ModuleList(blocks)
        if cfg.final_norm_bias:
            self.norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        else:
            self.norm = LayerNorm(ndim=cfg.dim, weight=True, bias=False, eps=1e-6)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        # Each block initialises itself in its constructor (ViL / xlstm init: see ViLLayer.reset_parameters
        # and MLSTMCell.reset_parameters); BaseSSAST.initialize_weights only resets torch LayerNorms to
        # (1, 0), i.e. the final norm. Nothing else is re-initialised (no xavier pass over the blocks).
        if isinstance(self.norm, nn.LayerNorm):
            nn.init.ones_(self.norm.weight)
            nn.init.zeros_(self.norm.bias)
        else:
            self.norm.reset_parameters()

    def set_kernel(self, kernel: str, chunk_size: int | None = None) -> None:
        """Switch every mLSTM cell's kernel (e.g. to "parallel" for a reference run); weights unchanged."""
        if kernel not in KERNELS:
            raise ValueError(f"unknown mLSTM kernel {kernel!r}; choose from {KERNELS}")
        for m in self.modules():
            if isinstance(m, MLSTMCell):
                m.kernel = kernel
                if chunk_size is not None:
                    m.chunk_size = chunk_size

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, L, D] (cls first, positions added) -> [B, L, D]."""
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


@register_backbone("xlstm", XLSTMConfig, XLSTM_SIZES,
                   description="AxLSTM: ViL mLSTM blocks (no MLP), alternating scan direction, chunkwise kernels",
                   paper_params={"tiny": 2.9, "small": 11.2, "base": 44.0})
class XLSTMEncoder(_XLSTMEncoderBase):
    pass


@register_backbone("xlstm-slstm", XLSTMConfig, XLSTM_SLSTM_SIZES,
                   description="extension: AxLSTM with every 4th block an xlstm sLSTM block (+ gated FFN)")
class XLSTMSLSTMEncoder(_XLSTMEncoderBase):
    pass


__all__ = [
    "XLSTM_SIZES",
    "XLSTM_SLSTM_SIZES",
    "MLSTMCell",
    "SLSTMBlock",
    "ViLBlock",
    "ViLLayer",
    "XLSTMConfig",
    "XLSTMEncoder",
    "XLSTMSLSTMEncoder",
]
