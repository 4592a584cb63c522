"""Selective scan of Mamba-1 (the S6 layer): a reference, an exact vectorised CPU scan, and a dispatcher.

All three functions share mamba-ssm's signature and shape conventions
(mamba_ssm/ops/selective_scan_interface.py):

    u:          (B, D, L)   input
    delta:      (B, D, L)   step size before bias and softplus
    A:          (D, N)      real, negative in Mamba (A = -exp(A_log))
    B, C:       (B, N, L)   input-dependent ("selective") input / output matrices
    D:          (D,) | None skip connection
    z:          (B, D, L) | None gate: out * silu(z)
    delta_bias: (D,) | None added to delta before the softplus
    out:        (B, D, L), dtype of u; with return_last_state also the final state (B, D, N)

The recurrence, per batch b, channel d and state n (dt = softplus(delta + delta_bias) or delta):

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * u_t * B_t,   h_{-1} = 0
    y_t = sum_n C_t[n] h_t[n] + D * u_t,                out = y * silu(z)

- `selective_scan_ref`: a plain loop over time (mamba-ssm's `selective_scan_ref`, real Mamba-1 case only),
  computed in float32 (float64 for float64 inputs). The reference for tests; slow.
- `selective_scan_chunked`: the project's exact scan in pure PyTorch, with no Python loop over time steps.
  Algorithm (see `_ChunkedScan`): the work is cut into tiles, a block of the batch times a chunk of T time
  steps (T = 16 on CPU), processed chunk after chunk with the state carried between them (a loop over the
  L / T chunks; tiles of ~1M state elements keep the working set in cache). Inside a chunk the linear
  recurrence h_t = a_t h_{t-1} + b_t (a_t = exp(dt_t A) <= 1, b_t = dt_t u_t B_t) is solved by an in-place,
  work-efficient tree scan (odd/even reduction): the pairs (2k, 2k+1) combine into
  (a_{2k+1} a_{2k}, a_{2k+1} b_{2k} + b_{2k+1}), the half-length problem on the odd positions is solved the
  same way (log2(T) levels of strided tensor ops), and the even positions are filled in with one
  multiply-add each. Every factor is a product of decays in (0, 1]: nothing is divided by a decay and no
  positive cumulative sum is exponentiated, so large dt*A underflows to exact zeros, never to inf/nan
  (the cumsum / segment-sum forms, exp(S_t) * cumsum(exp(-S_j) b_j), overflow there). The backward pass is
  written by hand: the adjoint r_t = dL/dh_t follows the mirror-image recurrence r_t = a_{t+1} r_{t+1} +
  C_t dy_t (a reverse tree scan), and every input gradient is a reduction of r, h and the inputs. Each
  tile's states are recomputed from the saved chunk-boundary states, so memory is O(B D N L / T) beyond
  the inputs, not O(B D N L). Exact up to rounding: the same products and sums, associated differently.
  `layout="bld"` takes channels-last tensors ((B, L, D), B and C (B, L, N)), as the mixer uses it.
  Measured accuracy (tests/test_mamba.py): ~1e-16 relative to the float64 recurrence in float64 (L up to
  4096), ~1e-7 in float32 (the same as the reference computed in float32), gradients alike.
- `selective_scan_fn`: mamba-ssm's fused CUDA kernel when it is installed and the tensors are on CUDA,
  else `selective_scan_chunked`. `use_fast_path=True` forces the kernel (error with an install hint if
  missing), False forces the chunked scan, None picks.
- `causal_conv1d`: the mixer's causal depthwise conv (+ SiLU) on channels-last input, the CPU counterpart of
  causal-conv1d's `causal_conv1d_fn`.
"""

from __future__ import annotations

import functools
import math
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import Tensor

INSTALL_HINT = ("the fused Mamba kernels need mamba-ssm (and causal-conv1d for the fully fused mixer) built for "
                "this GPU: `pip install msmbench[gpu]`, or on the lab's GPU image run `.gpu/build_gpu_deps.sh` "
                "(see shared/DEPS.md)")


@functools.lru_cache(maxsize=None)
def mamba_kernels() -> SimpleNamespace:
    """The optional mamba-ssm / causal-conv1d kernels, imported on first use; missing ones are None.

    mamba-ssm raises at import without its compiled CUDA extension (`import selective_scan_cuda` is not
    guarded), so any Exception means "not available", not only ImportError.
    """
    try:
        from mamba_ssm.ops.selective_scan_interface import mamba_inner_fn, selective_scan_fn
    except Exception:  # noqa: BLE001 - ImportError, OSError (missing .so), RuntimeError (CUDA) ...
        mamba_inner_fn = selective_scan_fn = None
    try:
        from causal_conv1d import causal_conv1d_fn
        import causal_conv1d_cuda  # noqa: F401  - mamba_inner_fn needs the raw extension too
    except Exception:  # noqa: BLE001
        causal_conv1d_fn = None
    return SimpleNamespace(selective_scan_fn=selective_scan_fn, mamba_inner_fn=mamba_inner_fn,
                           causal_conv1d_fn=causal_conv1d_fn)


def has_fused_scan() -> bool:
    return mamba_kernels().selective_scan_fn is not None


def has_fused_mixer() -> bool:
    k = mamba_kernels()
    return k.mamba_inner_fn is not None and k.causal_conv1d_fn is not None


def check_channels_last(u: Tensor, A: Tensor, B: Tensor, C: Tensor) -> None:
    """The argument checks of the channels-last GPU scans (Triton and CUDA): u (B, L, D), A (D, N) real,
    B and C (B, L, N)."""
    if u.dim() != 3 or B.dim() != 3 or C.dim() != 3 or A.dim() != 2:
        raise ValueError("expected u, delta, z (B, L, D), B, C (B, L, N) and A (D, N) (layout 'bld')")
    if A.is_complex():
        raise ValueError("complex A is not supported")


def unit_last_stride(x: Tensor) -> Tensor:
    """x with unit stride on its last axis (the GPU scans take the outer strides; projection slices are fine)."""
    return x if x.stride(-1) == 1 else x.contiguous()


def _compute_dtype(u: Tensor) -> torch.dtype:
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def _prepare_delta(delta: Tensor, delta_bias: Tensor | None, delta_softplus: bool, dtype: torch.dtype) -> Tensor:
    delta = delta.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    return F.softplus(delta) if delta_softplus else delta


def _finish(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None, dtype_in: torch.dtype) -> Tensor:
    """y: (B, D, L) in compute dtype -> (y + D u) * silu(z), cast to the input dtype."""
    if D is not None:
        y = y + u.to(y.dtype) * D.to(y.dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(dtype_in)


# --------------------------------------------------------------------------------------------------
# Reference: a loop over time
# --------------------------------------------------------------------------------------------------
def selective_scan_ref(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                       z: Tensor | None = None, delta_bias: Tensor | None = None, delta_softplus: bool = False,
                       return_last_state: bool = False):
    """Step-by-step recurrence (shapes in the module docstring). Slow; for tests and as the definition."""
    dtype = _compute_dtype(u)
    dt = _prepare_delta(delta, delta_bias, delta_softplus, dtype)          # (B, D, L)
    uu, A, B, C = u.to(dtype), A.to(dtype), B.to(dtype), C.to(dtype)
    deltaA = torch.exp(torch.einsum("bdl,dn->bdln", dt, A))                # (B, D, L, N)
    deltaB_u = torch.einsum("bdl,bnl,bdl->bdln", dt, B, uu)                # (B, D, L, N)
    h = uu.new_zeros(u.shape[0], A.shape[0], A.shape[1])                   # (B, D, N)
    ys = []
    for t in range(u.shape[2]):
        h = deltaA[:, :, t] * h + deltaB_u[:, :, t]
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, :, t]))
    y = torch.stack(ys, dim=2)                                              # (B, D, L)
    out = _finish(y, u, D, z, u.dtype)
    return (out, h) if return_last_state else out


# --------------------------------------------------------------------------------------------------
# The chunked tree scan
# --------------------------------------------------------------------------------------------------
def _scan_plan(a: Tensor, b: Tensor, scratch: Tensor | None = None) -> list:
    """The in-place ops (fn, args, kwargs) that turn b into h along dim 1: h_t = a_t h_{t-1} + b_t, h_{-1} = 0.

    a[:, 0] is unused. Odd/even reduction: fold each pair (2k, 2k+1) into position 2k+1, solve the
    half-length problem on the odd positions (strided views, recursively), then fill in the even positions.
    The pair products of a go to `scratch` (ceil(T/2) long on dim 1) when given, so a survives; otherwise
    a is clobbered. Returned as a list so that the views are built once per tile shape and the ops replayed
    for every tile (building the views each time costs as much as the ops on small tiles).
    """
    plan = []
    T = b.shape[1]
    if T <= 1:
        return plan
    b_odd = b[:, 1::2]
    plan.append((Tensor.addcmul_, (b_odd, a[:, 1::2], b[:, 0:T - 1:2]), {}))        # b_{2k+1} + a_{2k+1} b_{2k}
    if scratch is None:
        a_pairs = a[:, 1::2]
        plan.append((Tensor.mul_, (a_pairs, a[:, 0:T - 1:2]), {}))                  # a_{2k+1} a_{2k}
    else:
        a_pairs = scratch[:b.shape[0], :T // 2]
        plan.append((torch.mul, (a[:, 1::2], a[:, 0:T - 1:2]), {"out": a_pairs}))
    plan += _scan_plan(a_pairs, b_odd)                                               # odd positions: h_{2k+1}
    plan.append((Tensor.addcmul_, (b[:, 2::2], a[:, 2::2], b[:, 1:T - 1:2]), {}))    # h_{2k} = a_{2k} h_{2k-1} + b_{2k}
    return plan


def _scan_rev_plan(alpha: Tensor, g: Tensor) -> list:
    """The in-place ops that turn g into r along dim 1: r_t = alpha_t r_{t+1} + g_t, r_T = 0 (the adjoint).

    alpha has length T - 1 (alpha_t for t < T - 1) and is clobbered. The mirror image of `_scan_plan`:
    pairs (t, t+1) fold into the earlier position t, t = p, p+2, ..., T-2 with p = T % 2.
    """
    plan = []
    T = g.shape[1]
    if T <= 1:
        return plan
    p = T % 2
    g_keep, al_keep = g[:, p:T - 1:2], alpha[:, p:T - 1:2]
    plan.append((Tensor.addcmul_, (g_keep, al_keep, g[:, p + 1:T:2]), {}))          # g_t + alpha_t g_{t+1}
    plan.append((Tensor.mul_, (al_keep[:, :-1], alpha[:, p + 1::2]), {}))           # alpha_t alpha_{t+1}
    plan += _scan_rev_plan(al_keep[:, :-1], g_keep)
    plan.append((Tensor.addcmul_, (g[:, 1 - p:T - 1:2], alpha[:, 1 - p:T - 1:2], g[:, 2 - p:T:2]), {}))
    return plan


def _run(plan: list) -> None:
    for fn, args, kwargs in plan:
        fn(*args, **kwargs)


def _scan_inplace(a: Tensor, b: Tensor, scratch: Tensor | None = None) -> None:
    """b <- h in place (see `_scan_plan`)."""
    _run(_scan_plan(a, b, scratch))


def _scan_rev_inplace(alpha: Tensor, g: Tensor) -> None:
    """g <- r in place (see `_scan_rev_plan`)."""
    _run(_scan_rev_plan(alpha, g))


def _auto_tiles(batch: int, state_width: int, length: int, device_type: str = "cpu") -> tuple[int, int]:
    """(chunk, batch_block): the scan works on tiles (batch_block, chunk, N, D).

    CPU (measured on a 2-core EPYC, 2 threads, benchmarks/cpu_backbones.py): tiles of ~1M elements (4 MB
    in float32) keep the backward's five work buffers in L3 while amortising the per-op overhead (Python
    dispatch, thread fork/join) of the ~60 ops a tile takes; at Mamba-cpu size (B 32, L 251, N 16, D 192)
    tiles (16 x 16) ran fwd+bwd ~15% faster than (8 x 16) and (16 x 32). Chunks of 16 keep the saved
    chunk-boundary states (1/16 of all states) small, which matters because writing fresh memory costs page
    faults. GPU (the fallback without mamba-ssm): few, large tiles, since each op is a kernel launch.
    Batch blocks are balanced (48 at 21 a block -> 16+16+16, not 21+21+6).
    """
    target, chunk = (1 << 20, 16) if device_type == "cpu" else (1 << 27, 32)
    while chunk > 4 and chunk * state_width > target:
        chunk //= 2
    chunk = max(1, min(chunk, length))
    block = max(1, min(batch, target // max(1, chunk * state_width)))
    n_blocks = -(-batch // block)
    return chunk, -(-batch // n_blocks)


def _decays(dt_c: Tensor, At2: Tensor, out: Tensor) -> Tensor:
    # exp(dt A) computed as exp2(dt (A log2 e)): PyTorch's CPU exp2 is ~3x faster than its exp (measured,
    # AVX512), at the cost of one rounding of A log2(e), below the rounding of dt*A itself.
    return torch.mul(dt_c, At2, out=out).exp2_()


def _tiles(batch: int, length: int, chunk: int, block: int):
    """(b0, b1, i, t0, t1) for every tile: batch blocks, then chunks in time order."""
    for b0 in range(0, batch, block):
        for i, t0 in enumerate(range(0, length, chunk)):
            yield b0, min(b0 + block, batch), i, t0, min(t0 + chunk, length)


class _Workspace:
    """Work buffers of one call, reused by every tile, and per-tile-shape views and scan plans.

    Fresh multi-MB tensors per tile would cost page faults; rebuilding the views per tile, Python time.
    """

    def __init__(self, like: Tensor, block: int, chunk: int, N: int, D: int, names: tuple[str, ...],
                 scratch: bool = False):
        self.bufs = {n: like.new_empty(block, chunk, N, D) for n in names}
        self.scratch = like.new_empty(block, (chunk + 1) // 2, N, D) if scratch else None
        self._cache = {}

    def views(self, b: int, T: int) -> SimpleNamespace:
        if (b, T) not in self._cache:
            v = SimpleNamespace(**{n: buf[:b, :T] for n, buf in self.bufs.items()})
            v.fwd_plan = _scan_plan(v.a, v.h, self.scratch)
            if "r" in self.bufs:
                v.rev_plan = _scan_rev_plan(v.a[:, 1:], v.r)
            self._cache[b, T] = v
        return self._cache[b, T]


class _ChunkedScan(torch.autograd.Function):
    """y_t = C_t . h_t with h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t, tile by tile, hand-written backward.

    Layout inside: (batch, time, N, D). Each time step's state block is contiguous with the channel axis D
    innermost, so the contractions over N (with B_t, C_t, A) reduce over a middle axis while vectorising
    over D, and those over D reduce a long contiguous axis; both run at memory speed on CPU. The work goes
    tile by tile: a block of the batch times a chunk of time, chunks in time order (the state is carried).
    u, dt: (Bt, L, D); At = A^T: (N, D); B, C: (Bt, L, N), all contiguous in one float dtype.
    Returns y (Bt, L, D) and the last state (Bt, N, D) (no gradient through the latter, as in mamba-ssm).
    """

    @staticmethod
    def forward(ctx, u, dt, At, B, C, chunk, block):
        Bt, L, Dm = u.shape
        N = At.shape[0]
        n_chunks = -(-L // chunk)
        with torch.autocast(u.device.type, enabled=False):
            At2 = At * math.log2(math.e)
            x = dt * u                                                    # (Bt, L, D)
            y = torch.empty_like(u)
            last = u.new_empty(Bt, N, Dm)
            h0 = u.new_empty(Bt, n_chunks, N, Dm)  # state entering each chunk, kept for the backward
            h0[:, 0].zero_()
            ws = _Workspace(u, min(block, Bt), min(chunk, L), N, Dm, ("a", "h"))
            for b0, b1, i, t0, t1 in _tiles(Bt, L, chunk, block):
                v = ws.views(b1 - b0, t1 - t0)
                _decays(dt[b0:b1, t0:t1, None, :], At2, v.a)                  # (b, T, N, D), in (0, 1]
                torch.mul(x[b0:b1, t0:t1, None, :], B[b0:b1, t0:t1, :, None], out=v.h)  # dt u B
                if i > 0:
                    v.h[:, 0].addcmul_(v.a[:, 0], h0[b0:b1, i])               # carry the state in
                _run(v.fwd_plan)                                              # v.h[:, t] = h_t
                y[b0:b1, t0:t1] = torch.matmul(C[b0:b1, t0:t1, None, :], v.h).squeeze(2)  # sum_n C_t[n] h_t[n]
                (h0[b0:b1, i + 1] if i + 1 < n_chunks else last[b0:b1]).copy_(v.h[:, -1])
        ctx.tiles = (chunk, block)
        ctx.save_for_backward(u, dt, At, B, C, h0)
        ctx.mark_non_differentiable(last)
        return y, last

    @staticmethod
    def backward(ctx, dy, _dlast):
        u, dt, At, B, C, h0 = ctx.saved_tensors
        chunk, block = ctx.tiles
        Bt, L, Dm = u.shape
        N = At.shape[0]
        need_A, need_B, need_C = ctx.needs_input_grad[2:5]
        with torch.autocast(u.device.type, enabled=False):
            At2 = At * math.log2(math.e)
            dy = dy.contiguous()
            x = dt * u
            dx = torch.empty_like(u)                                       # dL/d(dt u)
            ddt = torch.empty_like(dt)                                     # dL/d(dt) through the decays
            dAt = torch.zeros_like(At)
            dB, dC = torch.zeros_like(B), torch.zeros_like(C)
            ws = _Workspace(u, min(block, Bt), min(chunk, L), N, Dm, ("a", "h", "r", "tmp"), scratch=True)
            carry_buf = u.new_empty(min(block, Bt), N, Dm)  # a_{t1} r_{t1}: the adjoint from the next chunk
            for b0, b1, i, t0, t1 in reversed(list(_tiles(Bt, L, chunk, block))):
                v = ws.views(b1 - b0, t1 - t0)
                if t1 == L:
                    carry = carry_buf[:b1 - b0].zero_()
                dt_c, x_c, B_c = dt[b0:b1, t0:t1, None, :], x[b0:b1, t0:t1, None, :], B[b0:b1, t0:t1, :, None]
                dy_c = dy[b0:b1, t0:t1, None, :]                           # (b, T, 1, D)
                # Recompute this tile's states h_t from the saved state entering it (a is kept).
                _decays(dt_c, At2, v.a)
                torch.mul(x_c, B_c, out=v.h)
                v.h[:, 0].addcmul_(v.a[:, 0], h0[b0:b1, i])
                _run(v.fwd_plan)
                if need_C:                                                 # dC_t[n] = sum_d dy_t[d] h_t[n, d]
                    dC[b0:b1, t0:t1] = torch.matmul(dy_c, v.h.transpose(-1, -2)).squeeze(2)
                # Adjoint r_t = dL/dh_t = C_t dy_t + a_{t+1} r_{t+1}.
                torch.mul(dy_c, C[b0:b1, t0:t1, :, None], out=v.r)
                v.r[:, -1].add_(carry)
                _run(v.rev_plan)
                torch.mul(v.a[:, 0], v.r[:, 0], out=carry)
                # dL/d(dt u)_t = sum_n B_t[n] r_t[n, :]; dB_t[n] = sum_d r_t[n, d] (dt u)_t[d]
                dx[b0:b1, t0:t1] = torch.matmul(B[b0:b1, t0:t1, None, :], v.r).squeeze(2)
                if need_B:
                    dB[b0:b1, t0:t1] = torch.matmul(x_c, v.r.transpose(-1, -2)).squeeze(2)
                # dL/d(dt A) at t = r_t * a_t h_{t-1} = r_t * (h_t - dt_t u_t B_t)
                q = v.h.addcmul_(x_c, B_c, value=-1.0).mul_(v.r)           # (b, T, N, D)
                if need_A:                                                 # dA[d, n] = sum_{b,t} q dt
                    dAt += torch.mul(q, dt_c, out=v.tmp).sum((0, 1))
                ddt[b0:b1, t0:t1] = q.mul_(At).sum(-2)                     # sum_n q A
            ddt.addcmul_(dx, u)
            du = dx.mul_(dt)
        return (du, ddt, (dAt if need_A else None), (dB if need_B else None), (dC if need_C else None),
                None, None)


def selective_scan_chunked(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                           z: Tensor | None = None, delta_bias: Tensor | None = None, delta_softplus: bool = False,
                           return_last_state: bool = False, chunk_size: int | None = None,
                           batch_block: int | None = None, layout: str = "bdl"):
    """Exact vectorised selective scan (module docstring); same signature and result as `selective_scan_ref`.

    Computes in float32 (float64 for float64 inputs) and returns u's dtype; differentiable in every
    tensor argument. chunk_size, batch_block: the tile, time steps x batch elements (None: `_auto_tiles`).
    layout="bld" takes and returns channels-last tensors instead: u, delta, z, out (B, L, D), B and C
    (B, L, N), last state (B, D, N); it saves the transposes (and the mixed-stride gradients they cause,
    which make PyTorch's CPU elementwise kernels several times slower) when the caller works in (B, L, D).
    """
    if layout not in ("bdl", "bld"):
        raise ValueError(f"layout must be 'bdl' or 'bld', got {layout!r}")
    if B.dim() != 3 or C.dim() != 3:
        raise ValueError("selective_scan_chunked supports input-dependent B, C of shape (batch, N, L) only "
                         f"(the Mamba-1 case); got B {tuple(B.shape)}, C {tuple(C.shape)}")
    if A.is_complex():
        raise ValueError("complex A is not supported")
    dtype = _compute_dtype(u)
    if layout == "bdl":  # to channels-last; gradients come back through the transposes
        u, delta, B, C = (t.transpose(1, 2) for t in (u, delta, B, C))
        z = z.transpose(1, 2) if z is not None else None
    Bt, L, Dm = u.shape
    dt = delta.to(dtype)
    if delta_bias is not None:
        dt = dt + delta_bias.to(dtype)
    if delta_softplus:
        dt = F.softplus(dt)
    chunk, block = _auto_tiles(Bt, Dm * A.shape[1], L, u.device.type)
    if chunk_size:
        chunk = chunk_size
    if batch_block:
        block = batch_block
    y, last = _ChunkedScan.apply(u.to(dtype).contiguous(), dt.contiguous(), A.to(dtype).t().contiguous(),
                                 B.to(dtype).contiguous(), C.to(dtype).contiguous(), chunk, block)
    if D is not None:
        y = torch.addcmul(y, u.to(dtype), D.to(dtype))
    if z is not None:
        y = y * F.silu(z.to(dtype))
    out = y.to(u.dtype)
    if layout == "bdl":
        out = out.transpose(1, 2)
    return (out, last.transpose(1, 2)) if return_last_state else out


# --------------------------------------------------------------------------------------------------
# Causal depthwise convolution, channels-last (the CPU counterpart of causal_conv1d_fn)
# --------------------------------------------------------------------------------------------------
class _CausalConv1d(torch.autograd.Function):
    """out[b, l, d] = act(bias[d] + sum_k w[d, k] x[b, l - (K-1) + k, d]), zero before the start."""

    @staticmethod
    def forward(ctx, x, weight, bias, silu):
        L, K = x.shape[1], weight.shape[1]
        w = weight.t()                                                    # (K, D)
        out = x * w[K - 1] if bias is None else torch.addcmul(bias, x, w[K - 1])
        for k in range(K - 1):                                            # taps reaching s = K-1-k steps back
            s_ = K - 1 - k
            if s_ < L:
                out[:, s_:].addcmul_(x[:, :L - s_], w[k])
        ctx.silu = silu
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, weight, out)
        return F.silu(out) if silu else out

    @staticmethod
    def backward(ctx, g):
        x, weight, pre = ctx.saved_tensors
        L, K = x.shape[1], weight.shape[1]
        w = weight.t()
        g = torch.ops.aten.silu_backward(g.contiguous(), pre) if ctx.silu else g.contiguous()
        dx = g * w[K - 1]
        dw = torch.empty_like(w)                                          # (K, D)
        dw[K - 1] = (g * x).sum((0, 1))
        for k in range(K - 1):
            s_ = K - 1 - k
            if s_ < L:
                dx[:, :L - s_].addcmul_(g[:, s_:], w[k])
                dw[k] = (g[:, s_:] * x[:, :L - s_]).sum((0, 1))
            else:
                dw[k] = 0
        dbias = g.sum((0, 1)) if ctx.has_bias else None
        return dx, dw.t(), dbias, None


def causal_conv1d(x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = None) -> Tensor:
    """Causal depthwise conv1d on channels-last input: x (B, L, D), weight (D, K) or (D, 1, K), bias (D,).

    Same result as nn.Conv1d(D, D, K, groups=D, padding=K-1) on x^T cut to the first L outputs (what
    mamba_simple does), or causal_conv1d_fn(x^T, weight, bias, activation). activation: None | "silu".
    Written out (K shifted multiply-adds, hand-written backward) because PyTorch's CPU depthwise conv on a
    transposed input, and the mixed memory layouts it leaves behind, cost more than the rest of the mixer
    outside the scan.
    """
    if activation not in (None, "silu", "swish"):
        raise ValueError(f"activation must be None or 'silu', got {activation!r}")
    if weight.dim() == 3:
        weight = weight[:, 0]
    return _CausalConv1d.apply(x, weight, bias, activation is not None)


# --------------------------------------------------------------------------------------------------
# Dispatcher
# --------------------------------------------------------------------------------------------------
def use_fused_kernels(device: torch.device | str, use_fast_path: bool | None, need_mixer: bool = False) -> bool:
    """Whether to take mamba-ssm's kernels: None = when installed and on CUDA; True = required (raises)."""
    available = has_fused_mixer() if need_mixer else has_fused_scan()
    on_cuda = torch.device(device).type == "cuda"
    if use_fast_path is None:
        return available and on_cuda
    if use_fast_path:
        if not available:
            raise RuntimeError(f"use_fast_path=True but {'mamba_inner_fn' if need_mixer else 'selective_scan_fn'} "
                               f"is not available: {INSTALL_HINT}")
        if not on_cuda:
            raise RuntimeError("use_fast_path=True needs CUDA tensors; the fused kernels have no CPU version")
        return True
    return False


def selective_scan_fn(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                      z: Tensor | None = None, delta_bias: Tensor | None = None, delta_softplus: bool = False,
                      return_last_state: bool = False, use_fast_path: bool | None = None):
    """mamba-ssm's CUDA selective scan if installed and on CUDA (or forced), else `selective_scan_chunked`."""
    if use_fused_kernels(u.device, use_fast_path):
        return mamba_kernels().selective_scan_fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                                 return_last_state)
    return selective_scan_chunked(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)


__all__ = ["selective_scan_ref", "selective_scan_chunked", "selective_scan_fn", "causal_conv1d", "mamba_kernels",
           "has_fused_scan", "has_fused_mixer", "use_fused_kernels", "INSTALL_HINT"]
