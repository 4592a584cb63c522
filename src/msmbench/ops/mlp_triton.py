"""The Transformer's MLP, fc2(gelu(fc1(x))) with exact (erf) GELU and biases, with GELU fused into GEMMs.

Why: unfused, every layer writes and re-reads [M, H] hidden activations around elementwise kernels. At the
Base shape (M = 64256 rows, D 768, H 3072, bf16) one such tensor is 395 MB; the forward's bias + GELU and
the backward's GELU derivative each read and write them again, ~0.9 ms a layer of memory-bound kernels on
an H100 beside the GEMMs. Here that elementwise work runs in the epilogues of two Triton GEMMs, on tiles
still in registers:

  forward   `_linear_gelu_fwd`:  pre = x @ w1^T + b1 (fp32 accumulator, bias added in fp32, stored rounded
            to the input dtype) and post = gelu(pre) from that rounded pre (so post equals what the unfused
            reference computes from cuBLAS's rounded output); out = post @ w2^T + b2 is a cuBLAS GEMM.
  backward  `_linear_dgelu_bwd`: grad_pre = (g @ w2) * gelu'(pre) in fp32, stored in the input dtype, and
            each tile's column sums of the stored (rounded) grad_pre, written to a [row blocks, H] fp32
            buffer and summed by PyTorch: db1 without re-reading grad_pre, and without atomics, so the
            result is bitwise the same run to run. dW2, db2, dW1 and dx are plain cuBLAS / PyTorch.

pre and post are both saved for the backward (post for dW2, pre for gelu'): recomputing post from pre
would be one more elementwise pass over [M, H], the traffic this module exists to avoid.

All inputs share one dtype (bf16, fp16 or fp32; cast beforehand: autocast's casts happen outside the
autograd Function). Dots accumulate in fp32; fp32 inputs use full-precision ("ieee") dots, as cuBLAS does
with TF32 off, on CUDA cores: a parity path, with tiles capped so that they fit (`_tiles`).
"""

from __future__ import annotations

import dataclasses
import math
import os

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor
from triton.tools.tensor_descriptor import TensorDescriptor

DTYPES = (torch.bfloat16, torch.float16, torch.float32)
INV_SQRT2 = tl.constexpr(1 / math.sqrt(2))  # constexpr: the only globals a Triton kernel may read
INV_SQRT_2PI = tl.constexpr(1 / math.sqrt(2 * math.pi))


@dataclasses.dataclass(frozen=True)
class MLPKernelConfig:
    """Launch settings of one kernel (first guesses for an H100 in bf16: 128 x 256 tiles, 3 stages of
    (128 + 256) x 64 bf16 operands = 144 KB shared memory). benchmarks/gelu_mlp.py --sweep times others."""

    block_m: int = 128
    block_n: int = 256
    block_k: int = 64
    group_m: int = 8  # row blocks per super-group: programs that run together share B tiles in L2
    num_warps: int = 8
    num_stages: int = 3


FWD_CONFIG = MLPKernelConfig()
BWD_CONFIG = MLPKernelConfig()


def gelu_mlp_reference(x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> Tensor:
    return F.linear(F.gelu(F.linear(x, w1, b1)), w2, b2)


# --- kernels -------------------------------------------------------------------------------------------------
# Persistent kernels: one program per SM walks the output tiles (GROUP_M-grouped order); operands and the
# [M, H] tiles move by TMA (tensor descriptors, which also zero-fill loads and clip stores at the edges).
@triton.jit
def _tile(tile_id, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """(row block, column block) of a tile. Consecutive tiles walk down GROUP_M row blocks before moving one
    column block right, so the B tiles that programs running together read stay in L2."""
    blocks_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * blocks_n
    first_m = (tile_id // per_group) * GROUP_M
    group_size = min(tl.cdiv(M, BLOCK_M) - first_m, GROUP_M)  # the last group may be short
    return first_m + (tile_id % per_group) % group_size, (tile_id % per_group) // group_size


@triton.jit
def _linear_gelu_fwd(x_desc, w_desc, b_ptr, pre_desc, post_desc, M, N, K,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
                     NUM_PROGRAMS: tl.constexpr, PRECISION: tl.constexpr):
    """pre = x @ w^T + b, post = gelu(pre): x [M, K], w [N, K] (tiles [BLOCK_N, BLOCK_K], used transposed),
    b [N]; pre and post [M, N]."""
    for tile_id in tl.range(tl.program_id(0), tl.cdiv(M, BLOCK_M) * tl.cdiv(N, BLOCK_N), NUM_PROGRAMS):
        pid_m, pid_n = _tile(tile_id, M, N, BLOCK_M, BLOCK_N, GROUP_M)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k in range(tl.cdiv(K, BLOCK_K)):
            a = x_desc.load([pid_m * BLOCK_M, k * BLOCK_K])
            b = w_desc.load([pid_n * BLOCK_N, k * BLOCK_K])
            acc = tl.dot(a, b.T, acc, input_precision=PRECISION)
        cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        acc += tl.load(b_ptr + cols, mask=cols < N, other=0.0).to(tl.float32)[None, :]
        pre = acc.to(pre_desc.dtype)
        p = pre.to(tl.float32)  # GELU of the rounded pre, as the unfused reference computes it
        post = 0.5 * p * (1.0 + tl.erf(p * INV_SQRT2))
        pre_desc.store([pid_m * BLOCK_M, pid_n * BLOCK_N], pre)
        post_desc.store([pid_m * BLOCK_M, pid_n * BLOCK_N], post.to(post_desc.dtype))


@triton.jit
def _linear_dgelu_bwd(g_desc, w_desc, pre_desc, dpre_desc, colsum_ptr, M, N, K, stride_cb,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
                      NUM_PROGRAMS: tl.constexpr, PRECISION: tl.constexpr):
    """dpre = (g @ w) * gelu'(pre): g [M, K], w [K, N], pre and dpre [M, N]; row block i's column sums of the
    stored dpre go to colsum[i, :] (fp32, [cdiv(M, BLOCK_M), N])."""
    for tile_id in tl.range(tl.program_id(0), tl.cdiv(M, BLOCK_M) * tl.cdiv(N, BLOCK_N), NUM_PROGRAMS):
        pid_m, pid_n = _tile(tile_id, M, N, BLOCK_M, BLOCK_N, GROUP_M)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k in range(tl.cdiv(K, BLOCK_K)):
            a = g_desc.load([pid_m * BLOCK_M, k * BLOCK_K])
            b = w_desc.load([k * BLOCK_K, pid_n * BLOCK_N])
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
        p = pre_desc.load([pid_m * BLOCK_M, pid_n * BLOCK_N]).to(tl.float32)
        dgelu = 0.5 * (1.0 + tl.erf(p * INV_SQRT2)) + p * tl.exp(-0.5 * p * p) * INV_SQRT_2PI
        dpre = (acc * dgelu).to(dpre_desc.dtype)
        dpre_desc.store([pid_m * BLOCK_M, pid_n * BLOCK_N], dpre)
        # rows past M are exact zeros (g was zero-filled there), so they add nothing
        cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        tl.store(colsum_ptr + pid_m * stride_cb + cols, tl.sum(dpre.to(tl.float32), axis=0), mask=cols < N)


# --- launchers -----------------------------------------------------------------------------------------------
def _tiles(config: MLPKernelConfig, dtype: torch.dtype) -> MLPKernelConfig:
    # fp32 operands take twice the shared memory and "ieee" dots hold them in registers: 128 x 256 x 64
    # would not fit, so fp32 (a parity path) runs at most 64 x 64 x 32 tiles with 4 warps
    if dtype != torch.float32:
        return config
    return dataclasses.replace(config, block_m=min(config.block_m, 64), block_n=min(config.block_n, 64),
                               block_k=min(config.block_k, 32), num_warps=min(config.num_warps, 4))


def _num_programs(device: torch.device, tiles: int) -> int:
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4
    return max(1, min(sms, tiles))


def _desc(t: Tensor, rows: int, cols: int) -> TensorDescriptor:
    return TensorDescriptor.from_tensor(t, [rows, cols])


def _launch(kernel, c: MLPKernelConfig, like: Tensor, M: int, N: int, *args) -> None:
    tiles = triton.cdiv(M, c.block_m) * triton.cdiv(N, c.block_n)
    sms = torch.cuda.get_device_properties(like.device).multi_processor_count if like.is_cuda else 4
    programs = max(1, min(sms, tiles))  # persistent: at most one program per SM
    kernel[(programs,)](*args, BLOCK_M=c.block_m, BLOCK_N=c.block_n, BLOCK_K=c.block_k, GROUP_M=c.group_m,
                        NUM_PROGRAMS=programs, PRECISION="ieee" if like.dtype == torch.float32 else "tf32",
                        num_warps=c.num_warps, num_stages=c.num_stages)


def linear_gelu(x: Tensor, w1: Tensor, b1: Tensor, config: MLPKernelConfig | None = None) -> tuple[Tensor, Tensor]:
    """(pre, post) for x [M, D], w1 [H, D], b1 [H] (rows contiguous): the forward kernel alone."""
    (M, K), N = x.shape, w1.shape[0]
    c = _tiles(config or FWD_CONFIG, x.dtype)
    pre = x.new_empty(M, N)
    post = torch.empty_like(pre)
    _launch(_linear_gelu_fwd, c, x, M, N, _desc(x, c.block_m, c.block_k), _desc(w1, c.block_n, c.block_k), b1,
            _desc(pre, c.block_m, c.block_n), _desc(post, c.block_m, c.block_n), M, N, K)
    return pre, post


def linear_dgelu(g: Tensor, w2: Tensor, pre: Tensor, config: MLPKernelConfig | None = None) -> tuple[Tensor, Tensor]:
    """(grad_pre, db1) for g [M, D], w2 [D, H], pre [M, H] (rows contiguous): the backward kernel alone (db1
    in fp32)."""
    (M, K), N = g.shape, w2.shape[1]
    c = _tiles(config or BWD_CONFIG, g.dtype)
    dpre = torch.empty_like(pre)
    partials = torch.empty(triton.cdiv(M, c.block_m), N, device=g.device, dtype=torch.float32)
    _launch(_linear_dgelu_bwd, c, g, M, N, _desc(g, c.block_m, c.block_k), _desc(w2, c.block_k, c.block_n),
            _desc(pre, c.block_m, c.block_n), _desc(dpre, c.block_m, c.block_n), partials, M, N, K,
            partials.stride(0))
    return dpre, partials.sum(0)


# The kernels as custom operators: torch.compile keeps each as one opaque node of its graph (no graph break)
# and fuses the LayerNorms and residual adds around them as usual.
@torch.library.custom_op("msmbench::linear_gelu", mutates_args=())
def _linear_gelu_op(x: Tensor, w1: Tensor, b1: Tensor) -> tuple[Tensor, Tensor]:
    return linear_gelu(x, w1, b1)


@_linear_gelu_op.register_fake
def _(x, w1, b1):
    pre = x.new_empty(x.shape[0], w1.shape[0])
    return pre, torch.empty_like(pre)


@torch.library.custom_op("msmbench::linear_dgelu", mutates_args=())
def _linear_dgelu_op(g: Tensor, w2: Tensor, pre: Tensor) -> tuple[Tensor, Tensor]:
    return linear_dgelu(g, w2, pre)


@_linear_dgelu_op.register_fake
def _(g, w2, pre):
    return torch.empty_like(pre), pre.new_empty(pre.shape[1], dtype=torch.float32)


def _tma_ready(t: Tensor) -> Tensor:
    """t, or a contiguous copy where TMA could not read it (it needs unit last stride, 16-byte aligned rows)."""
    aligned = t.stride(-1) == 1 and t.data_ptr() % 16 == 0
    aligned &= t.dim() == 1 or (t.stride(0) * t.element_size()) % 16 == 0
    return t if aligned else t.contiguous()


def _check(x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> None:
    dtypes = {t.dtype for t in (x, w1, b1, w2, b2)}
    if len(dtypes) != 1 or x.dtype not in DTYPES:
        raise ValueError(f"gelu_mlp_triton needs x, w1, b1, w2, b2 in one dtype out of {DTYPES} (cast them "
                         f"beforehand), got {[t.dtype for t in (x, w1, b1, w2, b2)]}")
    H, D = w1.shape
    if x.shape[-1] != D or tuple(b1.shape) != (H,) or tuple(w2.shape) != (D, H) or tuple(b2.shape) != (D,):
        raise ValueError(f"gelu_mlp_triton needs x [..., D], w1 [H, D], b1 [H], w2 [D, H], b2 [D], got "
                         f"{[tuple(t.shape) for t in (x, w1, b1, w2, b2)]}")
    if (D * x.element_size()) % 16 or (H * x.element_size()) % 16:  # rows that TMA can address
        raise ValueError(f"gelu_mlp_triton needs D and H to be multiples of 16 bytes ({16 // x.element_size()} "
                         f"{str(x.dtype).removeprefix('torch.')} values), got D {D}, H {H}")
    if not x.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError("gelu_mlp_triton needs CUDA tensors (or Triton's interpreter, TRITON_INTERPRET=1)")


class _GeluMLP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2):
        # autocast off: the dtype contract is the caller's, and F.linear must not recast post or w2
        with torch.autocast(x.device.type, enabled=False):
            x2 = _tma_ready(x.reshape(-1, x.shape[-1]))
            w1, b1, w2 = (_tma_ready(t) for t in (w1, b1, w2))
            pre, post = _linear_gelu_op(x2, w1, b1)
            out = F.linear(post, w2, b2)
        need_w1, need_w2 = ctx.needs_input_grad[1], ctx.needs_input_grad[3]
        ctx.save_for_backward(x2 if need_w1 else None, pre, post if need_w2 else None, w1, w2)
        ctx.x_shape = x.shape
        return out.reshape(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad_out):
        x2, pre, post, w1, w2 = ctx.saved_tensors
        need_x, need_w1, need_b1, need_w2, need_b2 = ctx.needs_input_grad
        dx = dw1 = db1 = dw2 = db2 = None
        with torch.autocast(pre.device.type, enabled=False):
            g = _tma_ready(grad_out.reshape(-1, grad_out.shape[-1]).to(pre.dtype))
            if need_w2:
                dw2 = g.t() @ post
            if need_b2:
                db2 = g.sum(0)
            if need_x or need_w1 or need_b1:
                dpre, db1 = _linear_dgelu_op(g, w2, pre)  # db1 costs a [row blocks, H] buffer: always made
                db1 = db1.to(pre.dtype) if need_b1 else None
                if need_w1:
                    dw1 = dpre.t() @ x2
                if need_x:
                    dx = (dpre @ w1).reshape(ctx.x_shape)
        return dx, dw1, db1, dw2, db2


def gelu_mlp_triton(x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> Tensor:
    """gelu_mlp_reference(x, w1, b1, w2, b2) with GELU and its derivative fused into Triton GEMMs.
    x [..., D], w1 [H, D], b1 [H], w2 [D, H], b2 [D], all in one dtype (bf16, fp16 or fp32)."""
    _check(x, w1, b1, w2, b2)
    return _GeluMLP.apply(x, w1, b1, w2, b2)
