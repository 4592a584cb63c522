"""GELU's backward and the column sums of its result in one pass over memory (Triton, CUDA).

For a row-major [M, N] pre-activation `pre` and incoming gradient `grad`:

    out    = grad * GELU'(pre)      GELU'(x) = Phi(x) + x phi(x)  (exact erf GELU, as nn.GELU())
    colsum = sum over rows of out   (fc1's bias gradient when pre = x W^T + b)

computed in float32; `out` is rounded to pre's dtype, and `colsum` adds up the rounded values, as autograd's
sum of the stored gradient does. Autograd (and Inductor) read the [M, N] gradient a second time for the sum;
here each program owns a column block and a run of ROWS rows, writes `out` tile by tile and keeps the column
sums in registers (one [BLOCK_M, BLOCK_N] float32 accumulator, summed over its rows once at the end, not
at every tile). The [row programs, N] float32 partials are added up by PyTorch: no atomics, deterministic.
The reference is `msmbench.ops.gelu.gelu_backward_colsum_ref`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

# Tiles measured on an H100 at the Base MLP's shape ([64,256 x 3,072] bf16; benchmarks/gelu_backward.py).
TILES = dict(rows=512, block_m=32, block_n=128, num_warps=4, stages=3)


@triton.jit
def _gelu_backward_colsum_kernel(grad_ptr, pre_ptr, out_ptr, partial_ptr, M, N, ROWS: tl.constexpr,
                                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, STAGES: tl.constexpr,
                                 EVEN: tl.constexpr):
    pid_m = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    rows = tl.arange(0, BLOCK_M)
    # The program's first row as a 64-bit scalar offset, the tile's offsets in 32 bits (ROWS x N < 2**31):
    # per-element 64-bit index arithmetic costs as much as the GELU itself at this bandwidth.
    first = pid_m.to(tl.int64) * ROWS * N
    grad_ptr, pre_ptr, out_ptr = grad_ptr + first, pre_ptr + first, out_ptr + first
    tile = rows[:, None] * N + cols[None, :]
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)  # summed over rows once, after the loop
    for start in tl.range(0, ROWS, BLOCK_M, num_stages=STAGES):
        offsets = tile + start * N
        if EVEN:  # no partial tiles: no masks
            x = tl.load(pre_ptr + offsets).to(tl.float32)
            g = tl.load(grad_ptr + offsets).to(tl.float32)
        else:
            mask = (pid_m * ROWS + start + rows < M)[:, None] & (cols < N)[None, :]
            x = tl.load(pre_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
            g = tl.load(grad_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        cdf = 0.5 * (1.0 + tl.erf(x * 0.7071067811865476))   # Phi(x); 0.7071... = 1 / sqrt(2)
        pdf = tl.exp(-0.5 * x * x) * 0.3989422804014327      # phi(x); 0.3989... = 1 / sqrt(2 pi)
        out = (g * (cdf + x * pdf)).to(out_ptr.dtype.element_ty)
        if EVEN:
            tl.store(out_ptr + offsets, out)
        else:
            tl.store(out_ptr + offsets, out, mask=mask)
        acc += out.to(tl.float32)                              # masked entries are exact zeros
    tl.store(partial_ptr + pid_m * N + cols, tl.sum(acc, axis=0), mask=cols < N)


def gelu_backward_colsum(grad: Tensor, pre: Tensor, rows: int = TILES["rows"], block_m: int = TILES["block_m"],
                         block_n: int = TILES["block_n"], num_warps: int = TILES["num_warps"],
                         stages: int = TILES["stages"]) -> tuple[Tensor, Tensor]:
    """(grad * GELU'(pre) in pre's dtype, its float32 column sums) for 2-D CUDA tensors of one shape."""
    if rows % block_m:
        raise ValueError(f"rows ({rows}) must be a multiple of block_m ({block_m})")
    grad, pre = grad.contiguous(), pre.contiguous()
    M, N = pre.shape
    if rows * N >= 2**31:
        raise ValueError(f"rows x N = {rows} x {N} does not fit the kernel's 32-bit tile offsets")
    out = torch.empty_like(pre)
    partial = torch.empty(triton.cdiv(M, rows), N, device=pre.device, dtype=torch.float32)
    grid = (partial.shape[0], triton.cdiv(N, block_n))
    _gelu_backward_colsum_kernel[grid](grad, pre, out, partial, M, N, ROWS=rows, BLOCK_M=block_m,
                                       BLOCK_N=block_n, STAGES=stages,
                                       EVEN=M % rows == 0 and N % block_n == 0, num_warps=num_warps)
    return out, partial.sum(0)
