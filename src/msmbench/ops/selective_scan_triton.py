"""Mamba-1 selective scan in Triton, channels-last, forward and backward (exact up to fp32 rounding).

Semantics are those of `selective_scan.selective_scan_chunked(..., layout="bld")` (see that module's
docstring): u, delta, z: (B, L, D); A: (D, N) (negative); Bm, Cm: (B, L, N); D_skip, delta_bias: (D,);

    dt_t = softplus(delta_t + delta_bias)          (or delta_t + delta_bias without softplus)
    h_t  = a_t * h_{t-1} + dt_t u_t B_t,           a_t = exp(dt_t A) in (0, 1],  h_{-1} = 0
    y_t  = sum_n C_t[n] h_t[n] + D u_t,            out_t = y_t * silu(z_t)   (out in u's dtype)

Everything is computed in fp32 whatever the input dtypes (bf16 under autocast, or fp32).

Work decomposition
------------------
One program per (batch element b, block of BD channels); it walks over time in chunks of T steps. A
chunk is a register tile [T, NP, BD] (time, state padded to a power of two NP >= N, channels). BD is the
fastest axis: the loads of u / delta / z / dout of one step are contiguous over channels, and Triton's
default blocked layout for such a tile (threads fill the fastest axis first) should put the lanes of a warp
along BD, the warps along the state axis and the time axis inside each thread (to be confirmed in the
TTGIR on the H100). Then the scans over time are sequential in-thread (no shuffles), the sums over n
(y, du, d(delta)) are mostly in-thread, and only the sums over channels (dB, dC) need lane shuffles.
Loading a whole chunk of T steps at once issues T independent loads per tensor, where a step-by-step loop
would wait one memory latency per step.

Forward (`_fwd_kernel`), per chunk: a = exp(dt A), b = dt u B as [T, NP, BD] tiles; an inclusive
associative scan over time with the affine combine (a1, b1) then (a2, b2) -> (a1 a2, a2 b1 + b2) gives
h_t = Acum_t h_in + Bcum_t; y = sum_n C h; the state leaving the chunk is the tile's last row. Every
`save_every` steps the state entering that step is written to `hs` (fp32). Nothing is divided by a decay
and every product of decays is <= 1, so large dt*A underflows to exact zeros, never inf/nan.

Backward (`_bwd_kernel`), per program, segments of `save_every` steps in reverse. Phase 1 re-runs the
forward from the segment's saved state to get the state entering each of its K = save_every / T chunks
(held in registers as a [K, NP, BD] tile). Phase 2 walks those chunks in reverse; per chunk:
  * h_t and h_{t-1} from one scan of 4-tuples (a, b, p, q), p = 1, q = 0 per element, combine
        (a1,b1,p1,q1) then (a2,b2,p2,q2) -> (a1 a2, a2 b1 + b2, p2 a1, p2 b1 + q2)
    whose (p, q) at t is the composite of steps < t (an exclusive scan), so h_{t-1} = P_t h_in + Q_t
    exactly (not h_t - b_t, which cancels when the decay underflows).
  * the adjoint r_t = dL/dh_t = C_t dy_t + a_{t+1} r_{t+1} (dy = dout * silu(z)) runs backwards in time.
    Triton's `associative_scan(reverse=True)` has had wrong results for non-commutative combines
    (triton-lang/triton#4362, #8412), so the chunk's per-step inputs are re-loaded in reversed time order
    (row i = step t1-1-i) and scanned forwards. With s_t = a_t r_t the step map s_{t+1} -> s_t is
    s -> a_t s + a_t g_t (g_t = C_t dy_t); the same 4-tuple scan gives s_{t+1} = P s_in + Q, so
    r_t = g_t + s_{t+1} without shifting a tile by one step; s_in = a_{t1} r_{t1} comes from the chunk
    after. h_{t-1} is brought into the reversed order with `tl.flip` (exact bit moves).
  * the gradients, with q_t = r_t a_t h_{t-1} = s_t h_{t-1} and x_t = dt_t u_t:
        dx_t = sum_n B_t[n] r_t[n]          du_t = dt_t dx_t + D dy_t
        d(dt)_t = u_t dx_t + sum_n A[n] q_t[n]      d(delta) = d(dt) * sigmoid(delta + bias) (softplus)
        dA[d, n] = sum_{b,t} dt_t q_t[n]    dB_t[n] = sum_d x_t r_t[n]    dC_t[n] = sum_d dy_t h_t[n]
        dD = sum_{b,t} dy u                 d(bias) = sum_{b,t} d(delta)
        dz_t = dout_t * y_t * silu'(z_t)    (y_t recomputed from h_t)
    dB, dC are sums over channels: each channel block writes its partial sums, [n_blocks, B, L, N] fp32,
    and PyTorch adds them up; dA, dD, d(bias) are written per batch element and summed over it likewise.
    No atomics: the result is deterministic.

Memory saved for the backward: the inputs (u, delta, A, B, C, D, z, delta_bias; not the output) plus
hs = B * ceil(L / save_every) * N * D fp32 (save_every = 32: 0.45 GB per layer at batch 256, L 251,
D 2304, N 24, against 0.3 GB for u in bf16). Backward temporaries: the dB / dC partials, 2 * n_blocks * B * L
* N fp32 (72 blocks of 32 channels: 0.9 GB at that shape), and dA / dD / d(bias) partials (B * D * (N + 2)).

Cost model (why these tile sizes). Per state element and step the forward does 1 exp and ~6 FMA-pipe
ops; the backward ~2 exps (the reversed a is recomputed: the exp unit runs beside the FMA pipe, whereas a
`tl.flip` costs ~5 integer ops) and ~30 ops. At the paper shape there are 3.55e9 (4.7e9 padded, N 24 -> 32)
state elements a layer; an H100 does ~3.7e12 exp/s and ~3e13 fp32 ops/s, i.e. ~1.3 ms per exp pass and
a few ms of FMA work for forward + backward. Registers bound the tile: ~7 tiles are live in the backward,
so T * NP * BD / (32 * num_warps) should be <= 32 registers per tile: T = 8, BD = 32, NP = 32, 8 warps.
`save_every` trades memory (hs) against phase 1 (which recomputes (K-1)/K of a forward per element).
All of this is to be tuned on the H100 through `ScanConfig` (see `DEFAULT_CONFIG`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
from torch import Tensor

from msmbench.ops.selective_scan import check_channels_last, unit_last_stride

try:  # optional: CI has neither triton nor a GPU
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised where triton is missing
    triton = None
    tl = None

HAS_TRITON = triton is not None
LOG2E = math.log2(math.e)
_HINT = "selective_scan_triton needs triton (`pip install triton`, part of `msmbench[gpu]`) and CUDA tensors"


@dataclass(frozen=True)
class ScanConfig:
    """Tile sizes. save_every must be a multiple of both chunks (the backward restarts from saved states)."""

    # The defaults are the fastest of benchmarks/mamba_scan.py's sweeps on an H100 (BENCHMARKS.md)
    save_every: int = 32          # steps between states saved by the forward (memory vs. phase-1 recompute)
    fwd_chunk: int = 8            # T: time steps per register tile
    fwd_block_d: int = 64         # BD: channels per program
    fwd_warps: int = 4
    bwd_chunk: int = 4
    bwd_block_d: int = 32
    bwd_warps: int = 4

    def check(self) -> None:
        for name in ("fwd_chunk", "fwd_block_d", "bwd_chunk", "bwd_block_d"):
            v = getattr(self, name)
            if v < 1 or v & (v - 1):
                raise ValueError(f"ScanConfig.{name} must be a power of two, got {v}")
        if self.save_every % self.fwd_chunk or self.save_every % self.bwd_chunk:
            raise ValueError(f"ScanConfig.save_every ({self.save_every}) must be a multiple of fwd_chunk "
                             f"({self.fwd_chunk}) and bwd_chunk ({self.bwd_chunk})")


DEFAULT_CONFIG = ScanConfig()


if HAS_TRITON:

    @triton.jit
    def _combine(a1, b1, a2, b2):
        # Affine maps h -> a h + b, the first argument earlier in time: h -> a2 (a1 h + b1) + b2.
        return a1 * a2, a2 * b1 + b2

    @triton.jit
    def _combine_excl(a1, b1, p1, q1, a2, b2, p2, q2):
        # (a, b): map across the whole segment; (p, q): map up to, not including, its last step. Joined,
        # the latter is the right part's (p, q) after the whole left part; (p1, q1) is no longer needed.
        return a1 * a2, a2 * b1 + b2, p2 * a1, p2 * b1 + q2

    @triton.jit
    def _log1p_unit(e):
        # log1p(e) for e in [0, 1] as 2 atanh(s), s = e / (2 + e) <= 1/3: accurate to fp32 rounding without
        # relying on an accurate log near 1 (GPU logs are approximate there; dt is often ~1e-3).
        s = e / (2.0 + e)
        s2 = s * s
        p = 1.0 / 15.0
        p = p * s2 + 1.0 / 13.0
        p = p * s2 + 1.0 / 11.0
        p = p * s2 + 1.0 / 9.0
        p = p * s2 + 1.0 / 7.0
        p = p * s2 + 1.0 / 5.0
        p = p * s2 + 1.0 / 3.0
        p = p * s2 + 1.0
        return 2.0 * s * p

    @triton.jit
    def _softplus(x):
        # max(x, 0) + log1p(exp(-|x|)): no overflow; equals x to fp32 rounding above 20, as torch's.
        return tl.maximum(x, 0.0) + _log1p_unit(tl.exp(-tl.abs(x)))

    @triton.jit
    def _sigmoid(x):
        return 1.0 / (1.0 + tl.exp(-x))

    @triton.jit
    def _load_rows(ptr, stride_l, t, cols, mask):
        # [T, width] tile of rows t (time) and contiguous columns `cols`, as fp32
        return tl.load(ptr + t[:, None] * stride_l + cols[None, :], mask=mask, other=0.0).to(tl.float32)

    @triton.jit
    def _load_dt(delta_ptr, stride_l, t, d, mask, bias, SOFTPLUS: tl.constexpr):
        # (dt, delta + bias); dt is 0 on masked rows so that their decay is 1 and the state passes through
        raw = _load_rows(delta_ptr, stride_l, t, d, mask) + bias[None, :]
        dt = _softplus(raw) if SOFTPLUS else raw
        return tl.where(mask, dt, 0.0), raw

    @triton.jit
    def _channel_params(A_ptr, bias_ptr, D_ptr, d, n, N, mask_d, mask_nd, BD: tl.constexpr,
                        HAS_BIAS: tl.constexpr, HAS_D: tl.constexpr):
        """A^T as an [NP, BD] tile (0 where padded: decay 1, and B is 0 there, so padded states stay 0),
        delta_bias and D of this program's channels (zeros when absent)."""
        A = tl.load(A_ptr + d[None, :] * N + n[:, None], mask=mask_nd, other=0.0)
        bias = tl.load(bias_ptr + d, mask=mask_d, other=0.0) if HAS_BIAS else tl.zeros([BD], tl.float32)
        Dsk = tl.load(D_ptr + d, mask=mask_d, other=0.0) if HAS_D else tl.zeros([BD], tl.float32)
        return A, bias, Dsk

    @triton.jit
    def _program_block(A_ptr, bias_ptr, D_ptr, hs_ptr, Dm, N, n_saves, BD: tl.constexpr, NP: tl.constexpr,
                       HAS_BIAS: tl.constexpr, HAS_D: tl.constexpr):
        """This program's share, the same in both passes: batch row b, channel block pid_d (channels d) and
        states n with their masks; the channels' parameters (A also in base 2, for exp2); and the pointers to
        its saved states in hs ([B, n_saves, N, Dm]), which the forward writes and the backward reads."""
        pid_d = tl.program_id(0)
        b = tl.program_id(1).to(tl.int64)
        d = pid_d * BD + tl.arange(0, BD)
        n = tl.arange(0, NP)
        mask_d = d < Dm
        mask_nd = (n < N)[:, None] & mask_d[None, :]
        A, bias, Dsk = _channel_params(A_ptr, bias_ptr, D_ptr, d, n, N, mask_d, mask_nd, BD, HAS_BIAS, HAS_D)
        hs_ptrs = hs_ptr + b * n_saves * N * Dm + n[:, None] * Dm + d[None, :]
        return pid_d, b, d, n, mask_d, mask_nd, A, A * 1.4426950408889634, bias, Dsk, hs_ptrs

    @triton.jit
    def _batch_inputs(b, u_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, s_ub, s_db, s_Bb, s_Cb, s_zb):
        # the inputs' pointers moved to batch row b
        return u_ptr + b * s_ub, delta_ptr + b * s_db, B_ptr + b * s_Bb, C_ptr + b * s_Cb, z_ptr + b * s_zb

    @triton.jit
    def _load_steps(u_ptr, delta_ptr, B_ptr, s_ul, s_dl, s_Bl, t, d, n, L, N, mask_d, bias, SOFTPLUS: tl.constexpr):
        """The masks of steps t ([T, BD] and [T, NP]) and the inputs every pass needs: u, dt, delta + bias, B."""
        m_td = (t < L)[:, None] & mask_d[None, :]
        m_tn = (t < L)[:, None] & (n < N)[None, :]
        u = _load_rows(u_ptr, s_ul, t, d, m_td)
        dt, raw = _load_dt(delta_ptr, s_dl, t, d, m_td, bias, SOFTPLUS)
        Bt = _load_rows(B_ptr, s_Bl, t, n, m_tn)
        return m_td, m_tn, u, dt, raw, Bt

    @triton.jit
    def _chunk_forward(dt, x, Bt, A2, h_in, rows, T: tl.constexpr):
        # states of one chunk, [T, NP, BD], and the state leaving it
        a = tl.exp2(dt[:, None, :] * A2[None, :, :])
        bx = x[:, None, :] * Bt[:, :, None]
        acum, bcum = tl.associative_scan((a, bx), 0, _combine)
        h = acum * h_in[None, :, :] + bcum
        return h, tl.sum(tl.where(rows[:, None, None] == T - 1, h, 0.0), axis=0)

    @triton.jit
    def _fwd_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, hs_ptr,
                    L, Dm, N, n_chunks, n_saves,
                    s_ub, s_ul, s_db, s_dl, s_Bb, s_Bl, s_Cb, s_Cl, s_zb, s_zl, s_ob, s_ol,
                    T: tl.constexpr, K: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr,
                    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
        _pid_d, b, d, n, mask_d, mask_nd, _A, A2, bias, Dsk, hs_ptrs = _program_block(
            A_ptr, bias_ptr, D_ptr, hs_ptr, Dm, N, n_saves, BD, NP, HAS_BIAS, HAS_D)
        u_ptr, delta_ptr, B_ptr, C_ptr, z_ptr = _batch_inputs(b, u_ptr, delta_ptr, B_ptr, C_ptr, z_ptr,
                                                             s_ub, s_db, s_Bb, s_Cb, s_zb)
        out_ptr += b * s_ob
        rows = tl.arange(0, T)
        h = tl.zeros([NP, BD], tl.float32)
        for c in range(n_chunks):
            if c % K == 0:  # the state entering step c*T, for the backward
                tl.store(hs_ptrs + (c // K) * N * Dm, h, mask=mask_nd)
            t = c * T + rows
            m_td, m_tn, u, dt, _raw, Bt = _load_steps(u_ptr, delta_ptr, B_ptr, s_ul, s_dl, s_Bl, t, d, n, L, N,
                                                      mask_d, bias, SOFTPLUS)
            Ct = _load_rows(C_ptr, s_Cl, t, n, m_tn)
            hc, h = _chunk_forward(dt, dt * u, Bt, A2, h, rows, T)
            y = tl.sum(hc * Ct[:, :, None], axis=1) + Dsk[None, :] * u
            if HAS_Z:
                zz = _load_rows(z_ptr, s_zl, t, d, m_td)
                y = y * zz * _sigmoid(zz)
            tl.store(out_ptr + t[:, None] * s_ol + d[None, :], y.to(out_ptr.dtype.element_ty), mask=m_td)

    @triton.jit
    def _bwd_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dout_ptr, hs_ptr,
                    du_ptr, ddelta_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr,
                    L, Dm, N, n_saves, n_batch,
                    s_ub, s_ul, s_db, s_dl, s_Bb, s_Bl, s_Cb, s_Cl, s_zb, s_zl, s_gb, s_gl,
                    T: tl.constexpr, K: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr,
                    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
        pid_d, b, d, n, mask_d, mask_nd, A, A2, bias, Dsk, hs_ptrs = _program_block(
            A_ptr, bias_ptr, D_ptr, hs_ptr, Dm, N, n_saves, BD, NP, HAS_BIAS, HAS_D)
        u_ptr, delta_ptr, B_ptr, C_ptr, z_ptr = _batch_inputs(b, u_ptr, delta_ptr, B_ptr, C_ptr, z_ptr,
                                                             s_ub, s_db, s_Bb, s_Cb, s_zb)
        dout_ptr += b * s_gb
        rows = tl.arange(0, T)
        rrows = T - 1 - rows               # reversed time order within a chunk
        kidx = tl.arange(0, K)
        row_off = b * L * Dm               # du, d(delta), dz: contiguous (B, L, D)
        du_ptr += row_off
        ddelta_ptr += row_off
        dz_ptr += row_off
        part_off = (pid_d * n_batch + b) * L * N   # dB, dC partials: (n_blocks, B, L, N)
        dB_ptr += part_off
        dC_ptr += part_off
        ones = tl.full([T, NP, BD], 1.0, tl.float32)
        zeros = tl.zeros([T, NP, BD], tl.float32)
        dA_acc = tl.zeros([NP, BD], tl.float32)
        dD_acc = tl.zeros([BD], tl.float32)
        dbias_acc = tl.zeros([BD], tl.float32)
        s_in = tl.zeros([NP, BD], tl.float32)  # a_{t1} r_{t1}: the adjoint flowing in from later steps
        for seg_r in range(n_saves):
            seg = n_saves - 1 - seg_r
            # Phase 1: the states entering the K chunks of this segment, from the saved one.
            h = tl.load(hs_ptrs + seg * N * Dm, mask=mask_nd, other=0.0)
            h_k = tl.zeros([K, NP, BD], tl.float32)
            for j in range(K):
                h_k = tl.where(kidx[:, None, None] == j, h[None, :, :], h_k)
                if j < K - 1:
                    t = (seg * K + j) * T + rows
                    m_td, m_tn, u, dt, _raw, Bt = _load_steps(u_ptr, delta_ptr, B_ptr, s_ul, s_dl, s_Bl, t, d, n,
                                                              L, N, mask_d, bias, SOFTPLUS)
                    _states1, h = _chunk_forward(dt, dt * u, Bt, A2, h, rows, T)
            # Phase 2: the chunks in reverse.
            for k_r in range(K):
                k = K - 1 - k_r
                t0 = (seg * K + k) * T
                h_in = tl.sum(tl.where(kidx[:, None, None] == k, h_k, 0.0), axis=0)
                # --- time order: states h_t, h_{t-1}; dC; dz
                t = t0 + rows
                m_td, m_tn, u, dt, _raw, Bt = _load_steps(u_ptr, delta_ptr, B_ptr, s_ul, s_dl, s_Bl, t, d, n, L, N,
                                                          mask_d, bias, SOFTPLUS)
                a = tl.exp2(dt[:, None, :] * A2[None, :, :])
                bx = (dt * u)[:, None, :] * Bt[:, :, None]
                acum, bcum, pcum, qcum = tl.associative_scan((a, bx, ones, zeros), 0, _combine_excl)
                h_t = acum * h_in[None, :, :] + bcum
                h_prev = pcum * h_in[None, :, :] + qcum
                dout = _load_rows(dout_ptr, s_gl, t, d, m_td)
                if HAS_Z:
                    zz = _load_rows(z_ptr, s_zl, t, d, m_td)
                    sig = _sigmoid(zz)
                    dy = dout * zz * sig
                    Ct = _load_rows(C_ptr, s_Cl, t, n, m_tn)
                    y = tl.sum(h_t * Ct[:, :, None], axis=1) + Dsk[None, :] * u
                    dz = dout * y * sig * (1.0 + zz * (1.0 - sig))
                    tl.store(dz_ptr + t[:, None] * Dm + d[None, :], dz.to(dz_ptr.dtype.element_ty), mask=m_td)
                else:
                    dy = dout
                dC = tl.sum(h_t * dy[:, None, :], axis=2)                  # [T, NP]
                tl.store(dC_ptr + t[:, None] * N + n[None, :], dC, mask=m_tn)
                h_prev = tl.flip(h_prev, 0)                               # to reversed time order
                # --- reversed time order (row i = step t0 + T-1-i): the adjoint, then the gradients
                t = t0 + rrows
                m_td, m_tn, u, dt, raw, Bt = _load_steps(u_ptr, delta_ptr, B_ptr, s_ul, s_dl, s_Bl, t, d, n, L, N,
                                                         mask_d, bias, SOFTPLUS)
                Ct = _load_rows(C_ptr, s_Cl, t, n, m_tn)
                dout = _load_rows(dout_ptr, s_gl, t, d, m_td)
                if HAS_Z:
                    zz = _load_rows(z_ptr, s_zl, t, d, m_td)
                    dy = dout * zz * _sigmoid(zz)
                else:
                    dy = dout
                a = tl.exp2(dt[:, None, :] * A2[None, :, :])
                g = Ct[:, :, None] * dy[:, None, :]
                _acum2, _bcum2, pcum, qcum = tl.associative_scan((a, a * g, ones, zeros), 0, _combine_excl)
                r = g + (pcum * s_in[None, :, :] + qcum)                # r_t = g_t + a_{t+1} r_{t+1}
                s = a * r
                s_in = tl.sum(tl.where(rows[:, None, None] == T - 1, s, 0.0), axis=0)
                q = s * h_prev                                            # r_t a_t h_{t-1}
                dx = tl.sum(Bt[:, :, None] * r, axis=1)                   # dL/d(dt u), [T, BD]
                dB = tl.sum((dt * u)[:, None, :] * r, axis=2)             # [T, NP]
                tl.store(dB_ptr + t[:, None] * N + n[None, :], dB, mask=m_tn)
                ddt = u * dx + tl.sum(A[None, :, :] * q, axis=1)
                dA_acc += tl.sum(dt[:, None, :] * q, axis=0)
                if SOFTPLUS:
                    ddt = ddt * _sigmoid(raw)
                ddt = tl.where(m_td, ddt, 0.0)
                dbias_acc += tl.sum(ddt, axis=0)
                dD_acc += tl.sum(dy * u, axis=0)
                du = dt * dx + Dsk[None, :] * dy
                tl.store(du_ptr + t[:, None] * Dm + d[None, :], du.to(du_ptr.dtype.element_ty), mask=m_td)
                tl.store(ddelta_ptr + t[:, None] * Dm + d[None, :], ddt.to(ddelta_ptr.dtype.element_ty),
                         mask=m_td)
        tl.store(dA_ptr + (b * N + n[:, None]) * Dm + d[None, :], dA_acc, mask=mask_nd)
        tl.store(dD_ptr + b * Dm + d, dD_acc, mask=mask_d)
        tl.store(dbias_ptr + b * Dm + d, dbias_acc, mask=mask_d)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _flags(D, z, delta_bias, delta_softplus) -> dict:
    return {"HAS_D": D is not None, "HAS_Z": z is not None, "HAS_BIAS": delta_bias is not None,
                "SOFTPLUS": bool(delta_softplus)}


class _SelectiveScanTriton(torch.autograd.Function):

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, cfg):
        Bt, L, Dm = u.shape
        N = A.shape[1]
        NP = max(2, triton.next_power_of_2(N))
        n_saves = triton.cdiv(L, cfg.save_every)
        A = A.float().contiguous()
        D_ = D.float().contiguous() if D is not None else A
        bias_ = delta_bias.float().contiguous() if delta_bias is not None else A
        z_ = z if z is not None else u
        out = torch.empty((Bt, L, Dm), dtype=u.dtype, device=u.device)
        hs = torch.empty((Bt, n_saves, N, Dm), dtype=torch.float32, device=u.device)
        grid = (triton.cdiv(Dm, cfg.fwd_block_d), Bt)
        _fwd_kernel[grid](u, delta, A, B, C, D_, z_, bias_, out, hs, L, Dm, N, triton.cdiv(L, cfg.fwd_chunk), n_saves,
                          u.stride(0), u.stride(1), delta.stride(0), delta.stride(1), B.stride(0), B.stride(1),
                          C.stride(0), C.stride(1), z_.stride(0), z_.stride(1), out.stride(0), out.stride(1),
                          T=cfg.fwd_chunk, K=cfg.save_every // cfg.fwd_chunk, BD=cfg.fwd_block_d, NP=NP,
                          num_warps=cfg.fwd_warps, **_flags(D, z, delta_bias, delta_softplus))
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, hs)
        ctx.delta_softplus = delta_softplus
        ctx.cfg = cfg
        return out

    @staticmethod
    def backward(ctx, dout):
        u, delta, A, B, C, D, z, delta_bias, hs = ctx.saved_tensors
        cfg = ctx.cfg
        Bt, L, Dm = u.shape
        N = A.shape[1]
        NP = max(2, triton.next_power_of_2(N))
        n_saves = hs.shape[1]
        n_blocks = triton.cdiv(Dm, cfg.bwd_block_d)
        dout = unit_last_stride(dout)
        f32 = {"dtype": torch.float32, "device": u.device}
        du = torch.empty((Bt, L, Dm), dtype=u.dtype, device=u.device)
        ddelta = torch.empty((Bt, L, Dm), dtype=delta.dtype, device=u.device)
        dz = torch.empty((Bt, L, Dm), dtype=z.dtype, device=u.device) if z is not None else None
        dB_part = torch.empty((n_blocks, Bt, L, N), **f32)
        dC_part = torch.empty((n_blocks, Bt, L, N), **f32)
        dA_part = torch.empty((Bt, N, Dm), **f32)
        dD_part = torch.empty((Bt, Dm), **f32)
        dbias_part = torch.empty((Bt, Dm), **f32)
        D_ = D.float().contiguous() if D is not None else A
        bias_ = delta_bias.float().contiguous() if delta_bias is not None else A
        z_ = z if z is not None else u
        _bwd_kernel[(n_blocks, Bt)](
            u, delta, A, B, C, D_, z_, bias_, dout, hs,
            du, ddelta, dz if dz is not None else du, dB_part, dC_part, dA_part, dD_part, dbias_part,
            L, Dm, N, n_saves, Bt,
            u.stride(0), u.stride(1), delta.stride(0), delta.stride(1), B.stride(0), B.stride(1),
            C.stride(0), C.stride(1), z_.stride(0), z_.stride(1), dout.stride(0), dout.stride(1),
            T=cfg.bwd_chunk, K=cfg.save_every // cfg.bwd_chunk, BD=cfg.bwd_block_d, NP=NP,
            num_warps=cfg.bwd_warps, **_flags(D, z, delta_bias, ctx.delta_softplus))
        dA = dA_part.sum(0).t().to(A.dtype)
        dB = dB_part.sum(0).to(B.dtype)
        dC = dC_part.sum(0).to(C.dtype)
        dD = dD_part.sum(0).to(D.dtype) if D is not None else None
        dbias = dbias_part.sum(0).to(delta_bias.dtype) if delta_bias is not None else None
        return du, ddelta, dA, dB, dC, dD, dz, dbias, None, None


def selective_scan_triton(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                          z: Tensor | None = None, delta_bias: Tensor | None = None, delta_softplus: bool = False,
                          config: ScanConfig | None = None) -> Tensor:
    """Selective scan, channels-last: u, delta, z (B, L, D); A (D, N); B, C (B, L, N); D, delta_bias (D,).

    Returns out (B, L, D) in u's dtype; differentiable in every tensor argument. Computes in fp32. Inputs may
    be bf16 / fp16 / fp32 and non-contiguous as long as the last axis has unit stride (slices of a fused
    projection are fine). `config` overrides the tile sizes (module docstring). CUDA tensors only, or any
    device under TRITON_INTERPRET=1 (Triton's CPU interpreter, for tests).
    """
    if not HAS_TRITON:
        raise RuntimeError(f"triton is not installed: {_HINT}")
    if u.device.type != "cuda" and not _interpreting():
        raise RuntimeError(f"{_HINT}; got tensors on {u.device} (set TRITON_INTERPRET=1 before importing this "
                           "module to run the kernels in Triton's CPU interpreter)")
    check_channels_last(u, A, B, C)
    if A.shape[1] > 64:
        raise ValueError(f"d_state N = {A.shape[1]} > 64 is not supported (register tiles)")
    cfg = config or DEFAULT_CONFIG
    cfg.check()
    u, delta, B, C = unit_last_stride(u), unit_last_stride(delta), unit_last_stride(B), unit_last_stride(C)
    z = unit_last_stride(z) if z is not None else None
    return _SelectiveScanTriton.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, cfg)


__all__ = ["DEFAULT_CONFIG", "HAS_TRITON", "ScanConfig", "selective_scan_triton"]
