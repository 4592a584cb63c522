"""Linear layers with hand-written backward passes: the fast paths for the q, k, v projection and for fc1 + GELU.

`linear_chunks(x, weight, bias, chunks)` is `F.linear(x, weight, bias).chunk(chunks, -1)`. Attention returns
the gradients of q, k and v as three tensors; autograd through the packed projection first stacks them into
one [tokens, 3 x width] tensor (a bandwidth-bound copy, ~0.2 ms per Base layer on an H100) for the packed
weight's GEMMs. Here each gradient goes straight into its own GEMMs: the input gradient sums grad_i @ W_i
into one buffer (`matmul_sum`), the weight gradient is one GEMM per chunk. The forward is one GEMM per chunk
too, so each output is a dense tensor: cuDNN's attention backward returns dq in q's layout only when q is
dense, and for a [B, L, D] slice of a packed [B, L, 3D] output it returns [B, H, L, d], which must be copied
back to [B, L, D] (seen on an H100). Under autocast the matmuls run in the autocast dtype, as nn.Linear's
would, and the cast input is what is saved.

`biased` lists the chunks that add their slice of `bias` (all, by default); the others add none, and their
slice's gradient is zero (no column sum over their [tokens, width] gradient). The Transformer leaves out the
key and value biases here and accounts for them exactly elsewhere (`msmbench.models.transformer`).

`linear_gelu(x, weight, bias)` is `F.gelu(F.linear(x, weight, bias))` (exact erf GELU). Autograd's backward
writes GELU's gradient and then reads it all again for the bias gradient (~0.14 ms per Base layer on an
H100); here one pass does both (`msmbench.ops.gelu.gelu_backward_colsum`), and the GEMMs follow as before. Its
forward calls ATen's GELU kernel as an opaque op (`aten_gelu`): nothing around it fuses (a GEMM writes its input,
GEMMs read its output), and on an H100 ATen's kernel took 0.30 ms at the Base MLP's shape where the one Inductor
generates took 0.38 (BENCHMARKS.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

from msmbench.ops.gelu import gelu_backward_colsum


@torch.library.custom_op("msmbench::matmul_sum", mutates_args=())
def matmul_sum(a: list[Tensor], b: list[Tensor]) -> Tensor:
    """sum_i a[i] @ b[i], accumulated in place by the GEMMs (beta=1). An opaque op because the compiler's
    out-of-place addmm would copy the accumulator before every GEMM."""
    out = a[0] @ b[0]
    for ai, bi in zip(a[1:], b[1:]):
        out.addmm_(ai, bi)
    return out


@matmul_sum.register_fake
def _(a: list[Tensor], b: list[Tensor]) -> Tensor:
    return a[0].new_empty(a[0].shape[0], b[0].shape[1])


@register_flop_formula(torch.ops.msmbench.matmul_sum)
def _(a_shapes, b_shapes, *args, out_shape=None, **kwargs) -> int:  # so that MFU counts these GEMMs
    return sum(2 * m * k * n for (m, k), (_, n) in zip(a_shapes, b_shapes))


@torch.library.custom_op("msmbench::aten_gelu", mutates_args=())
def aten_gelu(x: Tensor) -> Tensor:
    """F.gelu(x) (exact erf form) as ATen computes it, kept out of torch.compile's codegen. No autograd formula:
    only for forward passes of hand-written autograd Functions."""
    return F.gelu(x)


@aten_gelu.register_fake
def _(x: Tensor) -> Tensor:
    return torch.empty_like(x)


def _compute_dtype(x: Tensor) -> torch.dtype:
    """What nn.Linear would compute in: the autocast dtype when autocast is on, else x's dtype."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


class LinearChunks(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, chunks: int, biased: tuple[int, ...]):
        dtype = _compute_dtype(x)
        x, weight = x.to(dtype), weight.to(dtype)
        ctx.save_for_backward(x, weight)
        ctx.has_bias, ctx.biased = bias is not None, biased
        biases = [None] * chunks
        if bias is not None:
            biases = [b if i in biased else None for i, b in enumerate(bias.to(dtype).chunk(chunks))]
        return tuple(F.linear(x, w, b) for w, b in zip(weight.chunk(chunks), biases))  # dense: see the docstring

    @staticmethod
    def backward(ctx, *grads: Tensor):
        x, weight = ctx.saved_tensors
        x2 = x.flatten(0, -2)
        grads = [g.flatten(0, -2).to(x.dtype) for g in grads]  # [B, L, out_i] -> [B*L, out_i]
        dx = matmul_sum(grads, list(weight.chunk(len(grads))))
        dweight = torch.cat([g.t() @ x2 for g in grads])
        dbias = None
        if ctx.has_bias:
            dbias = torch.cat([g.sum(0) if i in ctx.biased else g.new_zeros(g.shape[1]) for i, g in enumerate(grads)])
        return dx.view_as(x), dweight, dbias, None, None


def linear_chunks(x: Tensor, weight: Tensor, bias: Tensor | None = None, chunks: int = 1,
                  biased: tuple[int, ...] | None = None) -> tuple[Tensor, ...]:
    """F.linear(x, weight, bias).chunk(chunks, -1), whose backward never concatenates the chunks' gradients.
    Only the chunks listed in `biased` (default: all) add their slice of `bias`."""
    if weight.shape[0] % chunks:
        raise ValueError(f"{weight.shape[0]} output features do not split into {chunks} chunks")
    biased = tuple(range(chunks)) if biased is None else tuple(biased)
    if not all(0 <= i < chunks for i in biased):
        raise ValueError(f"biased {biased} names chunks outside 0..{chunks - 1}")
    return LinearChunks.apply(x, weight, bias, chunks, biased)


class LinearGelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None):
        dtype = _compute_dtype(x)
        x, weight = x.to(dtype), weight.to(dtype)
        pre = F.linear(x, weight, None if bias is None else bias.to(dtype))
        ctx.save_for_backward(x, weight, pre)
        ctx.has_bias = bias is not None
        return aten_gelu(pre)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight, pre = ctx.saved_tensors
        dpre, dbias = gelu_backward_colsum(grad.flatten(0, -2), pre.flatten(0, -2))  # [B*L, hidden], [hidden]
        dx = dpre @ weight
        dweight = dpre.t() @ x.flatten(0, -2)
        return dx.view_as(x), dweight, dbias if ctx.has_bias else None


def linear_gelu(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """F.gelu(F.linear(x, weight, bias)), whose backward computes GELU's gradient and the bias gradient in one pass."""
    return LinearGelu.apply(x, weight, bias)
