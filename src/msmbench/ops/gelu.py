"""GELU's backward with the column sums of its result: the backward of fc1 + GELU without a second pass.

`gelu_backward_colsum(grad, pre)` returns (grad * GELU'(pre), the float32 column sums of that), for 2-D
[M, N] tensors; fc1's bias gradient is the column sum. On CUDA with Triton installed one kernel produces both
(`msmbench.ops.gelu_triton`); elsewhere `gelu_backward_colsum_ref`, which is what autograd computes. It is a
custom op so that torch.compile calls the kernel as it is instead of tracing into it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from msmbench.ops import triton_installed


def gelu_backward_colsum_ref(grad: Tensor, pre: Tensor) -> tuple[Tensor, Tensor]:
    """The definition: autograd's GELU backward (exact erf form), then a float32 sum over rows."""
    out = torch.ops.aten.gelu_backward(grad, pre)
    return out, out.sum(0, dtype=torch.float32)


@torch.library.custom_op("msmbench::gelu_backward_colsum", mutates_args=())
def gelu_backward_colsum(grad: Tensor, pre: Tensor) -> tuple[Tensor, Tensor]:
    if grad.shape != pre.shape or pre.dim() != 2:
        raise ValueError(f"gelu_backward_colsum needs two [M, N] tensors of one shape, got {tuple(grad.shape)} "
                         f"and {tuple(pre.shape)}")
    grad = grad.to(pre.dtype)
    if pre.is_cuda and triton_installed():
        from msmbench.ops.gelu_triton import gelu_backward_colsum as fused
        return fused(grad, pre)
    return gelu_backward_colsum_ref(grad, pre)


@gelu_backward_colsum.register_fake
def _(grad: Tensor, pre: Tensor) -> tuple[Tensor, Tensor]:
    return torch.empty_like(pre), pre.new_empty(pre.shape[1], dtype=torch.float32)
