"""Causal depthwise conv1d (+ SiLU) in CUDA, channels-last: the Mamba mixer's conv on the "cuda" kernel.

Same function as `selective_scan.causal_conv1d` (the reference) on x (B, L, D), weight (D, K), bias (D,):

    pre_l = bias + sum_k w_k x_(l-K+1+k)   (zeros before the start)        y_l = silu(pre_l) or pre_l

computed in float32, stored in x's dtype (what autocast's nn.Conv1d would return). The kernels
(`causal_conv1d.cu`, compiled at first use by NVRTC) give each thread one channel and a block of steps, with
the last K inputs in registers, so x is read once and y written once: the conv is memory-bound and this is
its floor. Only x is saved for the backward, which recomputes pre (K multiply-adds) instead of storing it.
Backward, with gp = dy silu'(pre):

    dx_m = sum_k w_k gp_(m+K-1-k)            dw_k = sum_(b,l) gp_l x_(l-K+1+k)            dbias = sum gp

dw and dbias are summed per block of steps and batch rows in registers and over blocks by PyTorch: no
atomics, deterministic. x may be a slice of a wider projection (its last axis needs unit stride only).
Parity: tests/test_causal_conv1d_cuda.py. The launches are custom ops, so torch.compile and CUDA graphs call
them as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from msmbench.ops.nvrtc import ELEM_CODES, compile_kernels, cuda_kernels_available
from msmbench.ops.selective_scan import unit_last_stride


@dataclass(frozen=True)
class CudaConvConfig:
    """Launch shape: channels (threads) per block, steps per block, batch rows per backward block."""

    channels: int = 128
    steps: int = 64
    rows: int = 4

    def check(self) -> None:
        if self.channels % 32 or not 32 <= self.channels <= 1024:
            raise ValueError(f"CudaConvConfig.channels must be a multiple of 32 in [32, 1024], got {self.channels}")
        if self.steps < 1 or self.rows < 1:
            raise ValueError(f"CudaConvConfig.steps and rows must be positive, got {self.steps}, {self.rows}")


DEFAULT_CONV_CONFIG = CudaConvConfig()


def _kernels(device: torch.device, elem: int, width: int, silu: bool, channels: int, steps: int, rows: int):
    """(forward, backward) kernels for one device, storage type, width and launch shape (compiled once)."""
    return compile_kernels("causal_conv1d.cu", ("conv_fwd", "conv_bwd"), device, ELEM=elem, KW=width, SILU=int(silu),
                           CHB=channels, STEPS=steps, ROWS=rows)


def _grid(Dm: int, L: int, batch_blocks: int, channels: int, steps: int) -> tuple[int, int, int]:
    return (-(-Dm // channels), -(-L // steps), batch_blocks)


@torch.library.custom_op("msmbench::causal_conv1d_cuda_fwd", mutates_args=())
def _conv_fwd(x: Tensor, weight: Tensor, bias: Tensor, silu: bool, channels: int, steps: int, rows: int) -> Tensor:
    batch, L, Dm = x.shape
    y = torch.empty((batch, L, Dm), dtype=x.dtype, device=x.device)
    fwd, _ = _kernels(x.device, ELEM_CODES[x.dtype], weight.shape[1], silu, channels, steps, rows)
    fwd(grid=_grid(Dm, L, batch, channels, steps), block=(channels, 1, 1),
        args=[x, weight, bias, y, L, Dm, x.stride(0), x.stride(1)])
    return y


@_conv_fwd.register_fake
def _(x, weight, bias, silu, channels, steps, rows):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("msmbench::causal_conv1d_cuda_bwd", mutates_args=())
def _conv_bwd(dy: Tensor, x: Tensor, weight: Tensor, bias: Tensor, silu: bool, channels: int, steps: int,
              rows: int) -> tuple[Tensor, Tensor, Tensor]:
    batch, L, Dm = x.shape
    dy = unit_last_stride(dy.to(x.dtype))
    grid = _grid(Dm, L, -(-batch // rows), channels, steps)
    parts = grid[1] * grid[2]
    dx = torch.empty((batch, L, Dm), dtype=x.dtype, device=x.device)
    dw_part = torch.empty((parts, Dm, weight.shape[1]), dtype=torch.float32, device=x.device)
    dbias_part = torch.empty((parts, Dm), dtype=torch.float32, device=x.device)
    _, bwd = _kernels(x.device, ELEM_CODES[x.dtype], weight.shape[1], silu, channels, steps, rows)
    bwd(grid=grid, block=(channels, 1, 1),
        args=[x, dy, weight, bias, dx, dw_part, dbias_part, L, Dm, batch, x.stride(0), x.stride(1),
              dy.stride(0), dy.stride(1)])
    return dx, dw_part.sum(0), dbias_part.sum(0)


@_conv_bwd.register_fake
def _(dy, x, weight, bias, silu, channels, steps, rows):
    return (torch.empty_like(x, memory_format=torch.contiguous_format), torch.empty_like(weight),
            torch.empty_like(bias))


def _setup_context(ctx, inputs, output):
    x, weight, bias, *flags = inputs
    ctx.save_for_backward(x, weight, bias)
    ctx.flags = flags


def _backward(ctx, dy):
    x, weight, bias = ctx.saved_tensors
    dx, dw, dbias = _conv_bwd(dy, x, weight, bias, *ctx.flags)
    return dx, dw, dbias, *(None for _ in ctx.flags)


torch.library.register_autograd("msmbench::causal_conv1d_cuda_fwd", _backward, setup_context=_setup_context)


def causal_conv1d_cuda(x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = None,
                       config: CudaConvConfig | None = None) -> Tensor:
    """Causal depthwise conv1d on channels-last x (B, L, D) with weight (D, K) or (D, 1, K) and bias (D,).

    Returns (B, L, D) in x's dtype (float32, bfloat16 or float16), computed in float32; differentiable in x,
    weight and bias. activation: None or "silu". CUDA tensors only; `config` overrides the launch shape.
    """
    if activation not in (None, "silu", "swish"):
        raise ValueError(f"activation must be None or 'silu', got {activation!r}")
    if not cuda_kernels_available():
        raise RuntimeError("causal_conv1d_cuda needs a CUDA device and torch >= 2.8 (torch.cuda._compile_kernel)")
    if x.device.type != "cuda":
        raise RuntimeError(f"causal_conv1d_cuda needs CUDA tensors, got {x.device}")
    if x.dtype not in ELEM_CODES:
        raise ValueError(f"causal_conv1d_cuda takes float32, bfloat16 or float16 input, got {x.dtype}")
    if weight.dim() == 3:
        weight = weight[:, 0]
    if x.dim() != 3 or weight.dim() != 2 or weight.shape[0] != x.shape[-1]:
        raise ValueError(f"causal_conv1d_cuda expects x (B, L, D) and weight (D, K); got {tuple(x.shape)} and "
                         f"{tuple(weight.shape)}")
    cfg = config or DEFAULT_CONV_CONFIG
    cfg.check()
    Dm = x.shape[-1]
    weight = weight.float().contiguous()
    bias = bias.float().contiguous() if bias is not None else x.new_zeros(Dm, dtype=torch.float32)
    return _conv_fwd(unit_last_stride(x), weight, bias, activation is not None, cfg.channels, cfg.steps, cfg.rows)


__all__ = ["CudaConvConfig", "DEFAULT_CONV_CONFIG", "causal_conv1d_cuda"]
