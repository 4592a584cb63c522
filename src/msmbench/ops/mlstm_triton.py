"""The mLSTM cell as a tiled Triton kernel over the parallel form: exact, O(S) memory, forward and backward.

Same function as `msmbench.ops.mlstm._parallel_form` (the module docstring of msmbench.ops.mlstm defines it);
the kernel computes it flash-attention style, one query block against the key blocks at or below the
diagonal, never storing an S x S matrix. That is quadratic in time, so sequences longer than WHOLE_MAX steps
run chunkwise (`_chunkwise`): the same kernels restricted to keys in the query's own chunk (their CHUNK
argument), and the earlier chunks through per-chunk (DH x DH) states computed with batched matmuls in
PyTorch, so time is linear in S. Both forms compute the same function; the tests check each against the
float64 parallel form.

Forward. Per batch and head, with F_t = sum_{s<=t} logsigmoid(fgate_s) and scale = DH**-0.5,

    u_j = igate_j - F_j                (column term)
    r_t = max_{j<=t} u_j               (row term: torch.cummax, so the stabiliser is known up front and
    m_t = F_t + r_t                     the kernel needs no online rescaling; m_t = max_j log D_tj)
    w_tj = exp(u_j - r_t) for j <= t, 0 otherwise   (= exp(log D_tj - m_t) <= 1)
    s_tj = scale * q_t . k_j,   c_tj = s_tj w_tj
    S_t = sum_j c_tj,   A_t = sum_j c_tj v_j,   n_t = max(|S_t|, exp(-m_t)),   h_t = A_t / (n_t + eps)

u, r, m are computed in PyTorch (autograd differentiates logsigmoid, cumsum and cummax); the kernel takes
q, k, v, u, r, m and also stores S_t and n_t (float32, O(S)) for the backward.

Backward. Given dh, with delta_t = dh_t . h_t and the row statistics (PyTorch, O(S DH)):

    dA_t = dh_t / (n_t + eps),   dn_t = -delta_t / (n_t + eps)
    |S_t| wins the max:  dS_t = dn_t sign(S_t),  dm_t = 0
    exp(-m_t) wins:      dS_t = 0,  dm_t = -dn_t exp(-m_t) = delta_t / (1 + eps / n_t)   (no inf * 0)
    dc_tj = dA_t . v_j + dS_t,   ds_tj = dc_tj w_tj,   g_tj = dc_tj c_tj   (g: gradient of the exponent)
    dq_t = scale sum_j ds_tj k_j          dk_j = scale sum_t ds_tj q_t        dv_j = sum_t c_tj dA_t
    du_j = sum_t g_tj = v_j . dv_j + sum_t c_tj dS_t   (column reduction, in the dv kernel)
    dr_t = -sum_j g_tj = -(dA_t . A_t + dS_t S_t) = -(delta_t + dS_t S_t)   (row statistics, no kernel)

m enters the kernel only through the normaliser, so dm is the "exp(-m) wins" term alone (autograd adds
the paths through u, r, m back together; their sum for the gates is O(eps)). Three backward kernels, as in
flash-attention 2 but without atomics (deterministic), each with a single [rows, DH] float32 accumulator
(registers at DH 384): per key block dv and du (recomputes c = s w), per key block dk, per query block dq
(dk and dq need dc = dA . v + dS and w, not s). FLOPs per (query, key) tile in units of BLOCK_M x BLOCK_N x
DH multiply-adds: forward 2 (q k^T, c v), backward 6 (k q^T, c^T dA; v dA^T, ds^T q; dA v^T, ds k): no more
than a fused dk/dv kernel, at the price of streaming q and dh through both key-block kernels. dA is never
formed: 1/(n_t + eps) scales the [BLOCK_M, BLOCK_N] tiles instead.
At exact ties |S_t| = exp(-m_t) torch.maximum splits the gradient in half; here the |S_t| branch takes it.

Precision: dots accumulate in float32; bfloat16 inputs use bfloat16 tensor cores (c and ds are rounded to
bfloat16 before their matmuls, as flash attention does with P and dS); float32 inputs use full-precision
dots (input_precision="ieee": no TF32; these run on CUDA cores, not tensor cores, so the float32 path is
for parity checks, with small tiles; train under bfloat16 autocast). Gate terms and row statistics are float32; h is returned in q's
dtype and dq, dk, dv in the inputs' dtype.

Head dims: Triton tiles are powers of two, so DH is covered by NUM_D <= 4 chunks of a power-of-two
BLOCK_D (e.g. 384 = 3 x 128, 96 = 3 x 32, 192 = 3 x 64; others are masked up to the next fit), written
out as named chunks because Triton has no lists of tensors. Any S (the last block is masked).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor
from torch.utils.checkpoint import checkpoint
from triton.runtime.errors import OutOfResources

EPS = 1e-6  # = msmbench.ops.mlstm.EPS (not imported: mlstm.py imports this module lazily)
LOG2E = 1.4426950408889634  # exp(x) = exp2(x * LOG2E); u and r are handed to the kernels pre-scaled
MAX_CHUNKS, MAX_BLOCK_D = 4, 128  # head dims up to 512
# Sequences up to WHOLE_MAX steps run as one tiled sweep (quadratic time, the least memory); longer ones
# chunkwise in chunks of CHUNK steps (linear time). On an H100 at 64k tokens a step (BENCHMARKS.md), one
# Base cell: 4,096 steps whole 22 ms vs chunkwise 31 ms; 16,384 steps whole 80 ms vs chunkwise 34 ms.
WHOLE_MAX, CHUNK = 4096, 1024  # CHUNK: a multiple of every tile length below
DTYPES = (torch.float32, torch.bfloat16)


# --- tiles -------------------------------------------------------------------------------------------------
# A [rows, DH] tile is held as NUM_D chunks x0..x3 of [rows, BLOCK_D] (unused ones alias x0 and are never
# read): Triton has no lists of tensors, and power-of-two tiles of the padded DH would waste FLOPs.
@triton.jit
def _load_chunk(base, rows, row_ok, d: tl.constexpr, DH: tl.constexpr, BLOCK_D: tl.constexpr,
                EVEN_D: tl.constexpr):
    """Rows `rows` of the d-th BLOCK_D-column chunk of a row-major [S, DH] matrix, zeros outside."""
    cols = d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask = row_ok[:, None] if EVEN_D else row_ok[:, None] & (cols[None, :] < DH)
    return tl.load(base + rows[:, None] * DH + cols[None, :], mask=mask, other=0.0)


@triton.jit
def _load_chunks(base, rows, row_ok, DH: tl.constexpr, BLOCK_D: tl.constexpr, NUM_D: tl.constexpr,
                 EVEN_D: tl.constexpr):
    x0 = _load_chunk(base, rows, row_ok, 0, DH, BLOCK_D, EVEN_D)
    x1, x2, x3 = x0, x0, x0
    if NUM_D > 1:
        x1 = _load_chunk(base, rows, row_ok, 1, DH, BLOCK_D, EVEN_D)
    if NUM_D > 2:
        x2 = _load_chunk(base, rows, row_ok, 2, DH, BLOCK_D, EVEN_D)
    if NUM_D > 3:
        x3 = _load_chunk(base, rows, row_ok, 3, DH, BLOCK_D, EVEN_D)
    return x0, x1, x2, x3


@triton.jit
def _store_chunk(base, x, rows, row_ok, d: tl.constexpr, DH: tl.constexpr, BLOCK_D: tl.constexpr,
                 EVEN_D: tl.constexpr):
    cols = d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask = row_ok[:, None] if EVEN_D else row_ok[:, None] & (cols[None, :] < DH)
    tl.store(base + rows[:, None] * DH + cols[None, :], x.to(base.dtype.element_ty), mask=mask)


@triton.jit
def _store_chunks(base, x0, x1, x2, x3, factor, rows, row_ok, DH: tl.constexpr, BLOCK_D: tl.constexpr,
                  NUM_D: tl.constexpr, EVEN_D: tl.constexpr):
    """Store factor * x (factor: a scalar or a [rows, 1] column)."""
    _store_chunk(base, x0 * factor, rows, row_ok, 0, DH, BLOCK_D, EVEN_D)
    if NUM_D > 1:
        _store_chunk(base, x1 * factor, rows, row_ok, 1, DH, BLOCK_D, EVEN_D)
    if NUM_D > 2:
        _store_chunk(base, x2 * factor, rows, row_ok, 2, DH, BLOCK_D, EVEN_D)
    if NUM_D > 3:
        _store_chunk(base, x3 * factor, rows, row_ok, 3, DH, BLOCK_D, EVEN_D)


@triton.jit
def _dot_nt(a0, a1, a2, a3, b0, b1, b2, b3, NUM_D: tl.constexpr, PRECISION: tl.constexpr):
    """a @ b^T over the head dim, chunk by chunk: [rows_a, rows_b] in float32."""
    acc = tl.dot(a0, tl.trans(b0), input_precision=PRECISION)
    if NUM_D > 1:
        acc = tl.dot(a1, tl.trans(b1), acc, input_precision=PRECISION)
    if NUM_D > 2:
        acc = tl.dot(a2, tl.trans(b2), acc, input_precision=PRECISION)
    if NUM_D > 3:
        acc = tl.dot(a3, tl.trans(b3), acc, input_precision=PRECISION)
    return acc


@triton.jit
def _dot_acc(p, b0, b1, b2, b3, acc0, acc1, acc2, acc3, NUM_D: tl.constexpr, PRECISION: tl.constexpr):
    """acc += p @ b, chunk by chunk (p: [rows, k], b: [k, DH] as chunks)."""
    acc0 = tl.dot(p, b0, acc0, input_precision=PRECISION)
    if NUM_D > 1:
        acc1 = tl.dot(p, b1, acc1, input_precision=PRECISION)
    if NUM_D > 2:
        acc2 = tl.dot(p, b2, acc2, input_precision=PRECISION)
    if NUM_D > 3:
        acc3 = tl.dot(p, b3, acc3, input_precision=PRECISION)
    return acc0, acc1, acc2, acc3


@triton.jit
def _decay(u_ptr, r_ptr, rows, cols, row_ok, col_ok, CHUNK):
    """w_tj = exp(u_j - r_t) on the causal, in-range, same-chunk part of a [rows, cols] tile, else 0 (u, r
    are pre-scaled by log2 e). The exponent is masked before exp2: no entry is inf, so no inf * 0 later."""
    u = tl.load(u_ptr + cols, mask=col_ok, other=0.0)
    r = tl.load(r_ptr + rows, mask=row_ok, other=0.0)
    chunk_start = rows - rows % CHUNK
    valid = (cols[None, :] <= rows[:, None]) & (cols[None, :] >= chunk_start[:, None]) & row_ok[:, None]
    return tl.exp2(tl.where(valid, u[None, :] - r[:, None], -float("inf")))


@triton.jit
def _decay_t(u_ptr, r_ptr, cols, rows, col_ok, row_ok, CHUNK):
    """The transposed tile: w_tj at [j, t] for key rows `cols` and query columns `rows`."""
    u = tl.load(u_ptr + cols, mask=col_ok, other=0.0)
    r = tl.load(r_ptr + rows, mask=row_ok, other=0.0)
    chunk_start = rows - rows % CHUNK
    valid = (cols[:, None] <= rows[None, :]) & (cols[:, None] >= chunk_start[None, :]) & row_ok[None, :]
    return tl.exp2(tl.where(valid, u[:, None] - r[None, :], -float("inf")))


@triton.jit
def _first_key(first_row, CHUNK, BLOCK_N: tl.constexpr):
    """The first key block a query block starting at `first_row` can see: its chunk's start, rounded down
    to a key-block boundary."""
    return (first_row - first_row % CHUNK) // BLOCK_N * BLOCK_N


@triton.jit
def _query_end(last_key, S, CHUNK):
    """One past the last query a key block ending at `last_key` can reach: the end of that key's chunk."""
    return tl.minimum(S, last_key - last_key % CHUNK + CHUNK)


# --- kernels ------------------------------------------------------------------------------------------------
# grid (blocks along S, B * NH); each program owns one block of rows (queries: fwd, dq) or of keys (dv, dk)
# and loops over the blocks of the other side that the causal mask lets through.
@triton.jit
def _fwd_kernel(Q, K, V, U2, R2, M, H, ROWSUM, NORM, S, CHUNK, scale, eps,
                DH: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                NUM_D: tl.constexpr, EVEN_D: tl.constexpr, PRECISION: tl.constexpr, NORMALIZE: tl.constexpr):
    """One query block: h_t = A_t / (n_t + eps) (NORMALIZE), or A_t unnormalised (the chunkwise form adds
    the earlier chunks' share first); S_t always goes to ROWSUM."""
    # heaviest query blocks (most keys) first, so the short ones fill the tail of the grid
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    Q, K, V, H = Q + bh * S * DH, K + bh * S * DH, V + bh * S * DH, H + bh * S * DH
    U2, R2, M, ROWSUM, NORM = U2 + bh * S, R2 + bh * S, M + bh * S, ROWSUM + bh * S, NORM + bh * S
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < S
    dtype = Q.dtype.element_ty

    q0, q1, q2, q3 = _load_chunks(Q, rows, row_ok, DH, BLOCK_D, NUM_D, EVEN_D)
    acc0 = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    acc1, acc2, acc3 = acc0, acc0, acc0
    rowsum = tl.zeros([BLOCK_M], tl.float32)
    end = tl.minimum((pid_m + 1) * BLOCK_M, S)  # causal: no key after the block's last row
    for start_n in range(_first_key(pid_m * BLOCK_M, CHUNK, BLOCK_N), end, BLOCK_N):
        cols = start_n + tl.arange(0, BLOCK_N)
        col_ok = cols < S
        k0, k1, k2, k3 = _load_chunks(K, cols, col_ok, DH, BLOCK_D, NUM_D, EVEN_D)
        c = _dot_nt(q0, q1, q2, q3, k0, k1, k2, k3, NUM_D, PRECISION) * scale
        c = c * _decay(U2, R2, rows, cols, row_ok, col_ok, CHUNK)
        rowsum += tl.sum(c, 1)
        v0, v1, v2, v3 = _load_chunks(V, cols, col_ok, DH, BLOCK_D, NUM_D, EVEN_D)
        acc0, acc1, acc2, acc3 = _dot_acc(c.to(dtype), v0, v1, v2, v3, acc0, acc1, acc2, acc3, NUM_D, PRECISION)

    tl.store(ROWSUM + rows, rowsum, mask=row_ok)
    if NORMALIZE:
        m = tl.load(M + rows, mask=row_ok, other=0.0)
        norm = tl.maximum(tl.abs(rowsum), tl.exp(-m))
        tl.store(NORM + rows, norm, mask=row_ok)
        inv = (1.0 / (norm + eps))[:, None]
        _store_chunks(H, acc0, acc1, acc2, acc3, inv, rows, row_ok, DH, BLOCK_D, NUM_D, EVEN_D)
    else:
        _store_chunks(H, acc0, acc1, acc2, acc3, 1.0, rows, row_ok, DH, BLOCK_D, NUM_D, EVEN_D)


@triton.jit
def _bwd_dv_kernel(Q, K, V, DO, U2, R2, INV, DS, DV, DU, S, CHUNK, scale,
                   DH: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                   NUM_D: tl.constexpr, EVEN_D: tl.constexpr, PRECISION: tl.constexpr):
    """One key block: dv_j = sum_t c_tj dh_t / (n_t + eps) and du_j = v_j . dv_j + sum_t c_tj dS_t,
    on transposed [keys, queries] tiles (the key rows are the dots' M side). INV = 1 / (n + eps)."""
    pid_n = tl.program_id(0)  # the first key blocks see the most queries: they start first
    bh = tl.program_id(1).to(tl.int64)
    Q, K, V, DO, DV = Q + bh * S * DH, K + bh * S * DH, V + bh * S * DH, DO + bh * S * DH, DV + bh * S * DH
    U2, R2, INV, DS, DU = U2 + bh * S, R2 + bh * S, INV + bh * S, DS + bh * S, DU + bh * S
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < S
    dtype = Q.dtype.element_ty

    k0, k1, k2, k3 = _load_chunks(K, cols, col_ok, DH, BLOCK_D, NUM_D, EVEN_D)
    dv0 = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv1, dv2, dv3 = dv0, dv0, dv0
    c_ds = tl.zeros([BLOCK_N], tl.float32)  # sum_t c_tj dS_t
    first = (pid_n * BLOCK_N // BLOCK_M) * BLOCK_M  # causal: no query before the block's first key
    for start_m in range(first, _query_end(pid_n * BLOCK_N + BLOCK_N - 1, S, CHUNK), BLOCK_M):
        rows = start_m + tl.arange(0, BLOCK_M)
        row_ok = rows < S
        inv = tl.load(INV + rows, mask=row_ok, other=0.0)[None, :]
        d_s = tl.load(DS + rows, mask=row_ok, other=0.0)[None, :]
        q0, q1, q2, q3 = _load_chunks(Q, rows, row_ok, DH, BLOCK_D, NUM_D, EVEN_D)
        ct = _dot_nt(k0, k1, k2, k3, q0, q1, q2, q3, NUM_D, PRECISION) * scale
        ct = ct * _decay_t(U2, R2, cols, rows, col_ok, row_ok, CHUNK)
        c_ds += tl.sum(ct * d_s, 1)
        do0, do1, do2, do3 = _load_chunks(DO, rows, row_ok, DH, BLOCK_D, NUM_D, EVEN_D)
        dv0, dv1, dv2, dv3 = _dot_acc((ct * inv).to(dtype), do0, do1, do2, do3, dv0, dv1, dv2, dv3, NUM_D,
                                      PRECISION)

    v0, v1, v2, v3 = _load_chunks(V, cols, col_ok, DH, BLOCK_D, NUM_D, EVEN_D)
    du = c_ds + tl.sum(v0.to(tl.float32) * dv0, 1)  # from the float32 dv, before it is rounded
    if NUM_D > 1:
        du += tl.sum(v1.to(tl.float32) * dv1, 1)
    if NUM_D > 2:
        du += tl.sum(v2.to(tl.float32) * dv2, 1)
    if NUM_D > 3:
        du += tl.sum(v3.to(tl.float32) * dv3, 1)
    tl.store(DU + cols, du, mask=col_ok)
    _store_chunks(DV, dv0, dv1, dv2, dv3, 1.0, cols, col_ok, DH, BLOCK_D, NUM_D, EVEN_D)


@triton.jit
def _bwd_dk_kernel(Q, V, DO, U2, R2, INV, DS, DK, S, CHUNK, scale,
                   DH: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                   NUM_D: tl.constexpr, EVEN_D: tl.constexpr, PRECISION: tl.constexpr):
    """One key block: dk_j = scale sum_t (dA_t . v_j + dS_t) w_tj q_t (k itself is not needed)."""
    pid_n = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    Q, V, DO, DK = Q + bh * S * DH, V + bh * S * DH, DO + bh * S * DH, DK + bh * S * DH
    U2, R2, INV, DS = U2 + bh * S, R2 + bh * S, INV + bh * S, DS + bh * S
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < S
    dtype = Q.dtype.element_ty

    v0, v1, v2, v3 = _load_chunks(V, cols, col_ok, DH, BLOCK_D, NUM_D, EVEN_D)
    dk0 = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dk1, dk2, dk3 = dk0, dk0, dk0
    first = (pid_n * BLOCK_N // BLOCK_M) * BLOCK_M
    for start_m in range(first, _query_end(pid_n * BLOCK_N + BLOCK_N - 1, S, CHUNK), BLOCK_M):
        rows = start_m + tl.arange(0, BLOCK_M)
        row_ok = rows < S
        inv = tl.load(INV + rows, mask=row_ok, other=0.0)[None, :]
        d_s = tl.load(DS + rows, mask=row_ok, other=0.0)[None, :]
        do0, do1, do2, do3 = _load_chunks(DO, rows, row_ok, DH, BLOCK_D, NUM_D, EVEN_D)
        dct = _dot_nt(v0, v1, v2, v3, do0, do1, do2, do3, NUM_D, PRECISION) * inv + d_s
        dst = (dct * _decay_t(U2, R2, cols, rows, col_ok, row_ok, CHUNK)).to(dtype)
        q0, q1, q2, q3 = _load_chunks(Q, rows, row_ok, DH, BLOCK_D, NUM_D, EVEN_D)
        dk0, dk1, dk2, dk3 = _dot_acc(dst, q0, q1, q2, q3, dk0, dk1, dk2, dk3, NUM_D, PRECISION)

    _store_chunks(DK, dk0, dk1, dk2, dk3, scale, cols, col_ok, DH, BLOCK_D, NUM_D, EVEN_D)


@triton.jit
def _bwd_dq_kernel(K, V, DO, U2, R2, INV, DS, DQ, S, CHUNK, scale,
                   DH: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                   NUM_D: tl.constexpr, EVEN_D: tl.constexpr, PRECISION: tl.constexpr):
    """One query block: dq_t = scale sum_j (dA_t . v_j + dS_t) w_tj k_j (q itself is not needed)."""
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)  # heaviest first, as in the forward
    bh = tl.program_id(1).to(tl.int64)
    K, V, DO, DQ = K + bh * S * DH, V + bh * S * DH, DO + bh * S * DH, DQ + bh * S * DH
    U2, R2, INV, DS = U2 + bh * S, R2 + bh * S, INV + bh * S, DS + bh * S
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < S
    dtype = K.dtype.element_ty

    do0, do1, do2, do3 = _load_chunks(DO, rows, row_ok, DH, BLOCK_D, NUM_D, EVEN_D)
    inv = tl.load(INV + rows, mask=row_ok, other=0.0)[:, None]
    d_s = tl.load(DS + rows, mask=row_ok, other=0.0)[:, None]
    dq0 = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    dq1, dq2, dq3 = dq0, dq0, dq0
    end = tl.minimum((pid_m + 1) * BLOCK_M, S)
    for start_n in range(_first_key(pid_m * BLOCK_M, CHUNK, BLOCK_N), end, BLOCK_N):
        cols = start_n + tl.arange(0, BLOCK_N)
        col_ok = cols < S
        v0, v1, v2, v3 = _load_chunks(V, cols, col_ok, DH, BLOCK_D, NUM_D, EVEN_D)
        dc = _dot_nt(do0, do1, do2, do3, v0, v1, v2, v3, NUM_D, PRECISION) * inv + d_s
        ds = (dc * _decay(U2, R2, rows, cols, row_ok, col_ok, CHUNK)).to(dtype)
        k0, k1, k2, k3 = _load_chunks(K, cols, col_ok, DH, BLOCK_D, NUM_D, EVEN_D)
        dq0, dq1, dq2, dq3 = _dot_acc(ds, k0, k1, k2, k3, dq0, dq1, dq2, dq3, NUM_D, PRECISION)

    _store_chunks(DQ, dq0, dq1, dq2, dq3, scale, rows, row_ok, DH, BLOCK_D, NUM_D, EVEN_D)


# TRITON_INTERPRET=1 at import: the kernels were defined for Triton's CPU interpreter (the tests use it)
INTERPRETED = not isinstance(_fwd_kernel, triton.runtime.JITFunction)


# --- launch ------------------------------------------------------------------------------------------------
def split_head_dim(dh: int) -> tuple[int, int]:
    """(BLOCK_D, NUM_D): the fewest padded columns NUM_D * BLOCK_D >= dh, then the fewest chunks, with
    BLOCK_D a power of two in [16, 128] (16: the smallest tensor-core K) and NUM_D <= 4."""
    fits = []
    for num in range(1, MAX_CHUNKS + 1):
        block = max(16, triton.next_power_of_2(-(-dh // num)))
        if block <= MAX_BLOCK_D:
            fits.append((num * block, num, block))
    if not fits:
        raise ValueError(f"mlstm_triton supports head dims up to {MAX_CHUNKS * MAX_BLOCK_D}, got {dh}")
    _, num, block = min(fits)
    return block, num


# (BLOCK_M, BLOCK_N, num_warps, num_stages) per (kernel, padded DH > 128, float32 inputs), first choice
# first; a launch that does not fit the GPU's shared memory falls through to the next (`_launch`). First
# guesses, not timed: chosen from sm_90 compiles (Triton 3.6, ptxas -v: shared memory, registers, spills,
# wgmma) made without a GPU. BLOCK_M is the query block, BLOCK_N the key block; the side whose rows carry
# the [rows, DH] float32 accumulator (queries: fwd, dq; keys: dv, dk) is 64 rows (the wgmma M); at DH 384
# that accumulator is 96 registers a thread with 8 warps, and the streamed side is 32 rows so its tiles
# fit in shared memory. float32 ("ieee" dots run on CUDA cores, not tensor cores): small tiles, no spills.
_CONFIGS = {
    ("fwd", False, False): [(64, 64, 4, 2), (64, 64, 4, 1), (32, 32, 4, 1)],
    ("dq", False, False): [(64, 64, 4, 2), (64, 64, 4, 1), (32, 32, 4, 1)],
    ("dv", False, False): [(64, 64, 4, 2), (64, 64, 4, 1), (32, 32, 4, 1)],
    ("dk", False, False): [(64, 64, 4, 2), (64, 64, 4, 1), (32, 32, 4, 1)],
    ("fwd", True, False): [(64, 32, 8, 2), (64, 32, 8, 1), (32, 32, 4, 1)],
    ("dq", True, False): [(64, 32, 8, 2), (64, 32, 8, 1), (32, 32, 4, 1)],
    ("dv", True, False): [(32, 64, 8, 2), (32, 64, 8, 1), (32, 32, 4, 1)],
    ("dk", True, False): [(32, 64, 8, 2), (32, 64, 8, 1), (32, 32, 4, 1)],
}
_CONFIGS.update({(kind, big, True): [(16, 16, 4, 1)] for kind, big, _ in list(_CONFIGS)})
_chosen: dict[tuple, tuple[int, int, int, int]] = {}


def configs(kind: str, dh: int, dtype: torch.dtype) -> list[tuple[int, int, int, int]]:
    block, num = split_head_dim(dh)
    return _CONFIGS[(kind, block * num > 128, dtype == torch.float32)]


def _launch(kind: str, kernel, rows_of, x: Tensor, args: tuple, **constexprs) -> None:
    """Run `kernel` over grid (blocks, B*NH) with the first config that fits; remember it per shape class.
    rows_of(config) -> the block length along S that one program owns."""
    BH, S, DH = x.shape
    block_d, num_d = split_head_dim(DH)
    key = (kind, DH, x.dtype, x.device)
    candidates = [_chosen[key]] if key in _chosen else configs(kind, DH, x.dtype)
    for i, (bm, bn, warps, stages) in enumerate(candidates):
        grid = (triton.cdiv(S, rows_of((bm, bn))), BH)
        try:
            kernel[grid](*args, DH=DH, BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=block_d, NUM_D=num_d,
                         EVEN_D=block_d * num_d == DH,
                         PRECISION="ieee" if x.dtype == torch.float32 else "tf32",
                         num_warps=warps, num_stages=stages, **constexprs)
        except OutOfResources:  # raised when loading the compiled kernel, before it runs
            if i == len(candidates) - 1:
                raise
            continue
        _chosen[key] = (bm, bn, warps, stages)
        return


def _forward(q, k, v, u2, r2, m, eps, chunk: int, normalize: bool = True):
    """normalize: (h, S_t, n_t); else (A_t unnormalised, S_t, None). h and A in q's dtype, S and n in
    float32. Keys are seen only within each query's chunk of `chunk` steps (chunk >= S: the whole past)."""
    BH, S, DH = q.shape
    out = torch.empty_like(q)
    rowsum = torch.empty(BH, S, device=q.device, dtype=torch.float32)
    norm = torch.empty_like(rowsum) if normalize else rowsum  # not written when not normalising
    _launch("fwd", _fwd_kernel, lambda c: c[0], q,
            (q, k, v, u2, r2, m, out, rowsum, norm, S, chunk, DH ** -0.5, eps), NORMALIZE=normalize)
    return out, rowsum, norm if normalize else None


def _backward(q, k, v, do, u2, r2, inv, d_s, chunk: int):
    BH, S, DH = q.shape
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    du = torch.empty(BH, S, device=q.device, dtype=torch.float32)
    scale = DH ** -0.5
    # dv and dk in two kernels, not one: each keeps a single [BLOCK_N, DH] accumulator (registers at DH
    # 384), and neither recomputes anything the other needs (dk needs no q . k), so no extra FLOPs
    _launch("dv", _bwd_dv_kernel, lambda c: c[1], q, (q, k, v, do, u2, r2, inv, d_s, dv, du, S, chunk, scale))
    _launch("dk", _bwd_dk_kernel, lambda c: c[1], q, (q, v, do, u2, r2, inv, d_s, dk, S, chunk, scale))
    _launch("dq", _bwd_dq_kernel, lambda c: c[0], q, (k, v, do, u2, r2, inv, d_s, dq, S, chunk, scale))
    return dq, dk, dv, du


class _MLSTMCell(torch.autograd.Function):
    """h from q, k, v [BH, S, DH] (one dtype, contiguous) and float32 u, r, m [BH, S] (module docstring)."""

    @staticmethod
    def forward(ctx, q, k, v, u, r, m, eps):
        S = q.shape[1]
        u2, r2 = u * LOG2E, r * LOG2E  # the kernels use exp2
        h, rowsum, norm = _forward(q, k, v, u2, r2, m, eps, chunk=S)
        ctx.save_for_backward(q, k, v, u2, r2, h, rowsum, norm)
        ctx.eps = eps
        return h

    @staticmethod
    def backward(ctx, dh):
        q, k, v, u2, r2, h, rowsum, norm = ctx.saved_tensors
        dh = dh.to(q.dtype).contiguous()
        delta = (dh.float() * h.float()).sum(-1)  # dh_t . h_t = dA_t . A_t
        inv = torch.reciprocal(norm + ctx.eps)
        s_wins = rowsum.abs() >= norm  # norm = max(|S|, exp(-m)): which side of the max was taken
        d_s = torch.where(s_wins, -delta * inv * torch.sign(rowsum), 0.0)
        dm = torch.where(s_wins, 0.0, delta / (1.0 + ctx.eps / norm))
        dr = -(delta + d_s * rowsum)
        dq, dk, dv, du = _backward(q, k, v, dh, u2, r2, inv, d_s, chunk=q.shape[1])
        return dq, dk, dv, du, dr, dm, None


class _MLSTMWithinChunks(torch.autograd.Function):
    """The within-chunk share, unnormalised: A_t = sum_{j in t's chunk, j <= t} c_tj v_j (q's dtype) and
    S_t = sum c_tj (float32), from q, k, v [BH, S, DH] and float32 u, r [BH, S]. Backward: the same three
    kernels with dA in place of dh and 1 / (n + eps) = 1; dr_t = -(dA_t . A_t + dS_t S_t) (the module
    docstring's rule)."""

    @staticmethod
    def forward(ctx, q, k, v, u, r, chunk):
        u2, r2 = u * LOG2E, r * LOG2E
        a, rowsum, _ = _forward(q, k, v, u2, r2, r2, 0.0, chunk, normalize=False)  # m unused: r2 stands in
        ctx.save_for_backward(q, k, v, u2, r2, a, rowsum)
        ctx.chunk = chunk
        return a, rowsum

    @staticmethod
    def backward(ctx, da, d_s):
        q, k, v, u2, r2, a, rowsum = ctx.saved_tensors
        d_s = d_s.float().contiguous()
        dr = -((da.float() * a).sum(-1) + d_s * rowsum)
        ones = torch.ones_like(rowsum)
        dq, dk, dv, du = _backward(q, k, v, da.to(q.dtype).contiguous(), u2, r2, ones, d_s, ctx.chunk)
        return dq, dk, dv, du, dr, None


def _chunkwise(q, k, v, u, r, m, eps: float, chunk: int) -> Tensor:
    """h in linear time: the tiled kernel within chunks of `chunk` steps, then the earlier chunks' share
    (`_add_earlier_chunks`), recomputed in the backward rather than stored: its float32 intermediates
    would cost several times the cell's activations."""
    a, rowsum = _MLSTMWithinChunks.apply(q, k, v, u, r, chunk)
    return checkpoint(_add_earlier_chunks, q, k, v, u, r, m, a, rowsum, eps, chunk, use_reentrant=False)


def _add_earlier_chunks(q, k, v, u, r, m, a, rowsum, eps: float, chunk: int) -> Tensor:
    """Add what the earlier chunks contribute to A_t and S_t, then normalise (float32 PyTorch; autograd
    differentiates it). With rho_c = r at the end of chunk c - 1 (= max_{j < c L} u_j), a row t of chunk c
    adds
        A_t += scale exp(rho_c - r_t) q_t C_c,   S_t += scale exp(rho_c - r_t) q_t . n_c,
        C_c = sum_{j < c L} exp(u_j - rho_c) k_j v_j^T,   n_c = sum_{j < c L} exp(u_j - rho_c) k_j,
    and C_c = sum_{c' < c} exp(rho_{c'+1} - rho_c) P_c' with P_c' chunk c''s own sum weighted by
    exp(u_j - rho_{c'+1}): one lower-triangular matmul over the chunk axis instead of a loop. rho is a
    running maximum, so every exponent is <= 0 (no overflow)."""
    BH, S, DH = q.shape
    nc = -(-S // chunk)
    pad = nc * chunk - S
    qf, kf, vf = (F.pad(t.float(), (0, 0, 0, pad)).view(BH, nc, chunk, DH) for t in (q, k, v))
    rho = r[:, chunk - 1::chunk][:, :nc - 1]  # [BH, nc - 1]: rho_1 .. rho_{nc-1}
    weight = torch.exp(u[:, :(nc - 1) * chunk].view(BH, nc - 1, chunk) - rho[..., None])
    kw = kf[:, :-1] * weight[..., None]
    own = (kw.transpose(-1, -2) @ vf[:, :-1]).flatten(2)  # P_c': [BH, nc - 1, DH * DH]
    own_n = kw.sum(-2)  # [BH, nc - 1, DH]
    later = torch.ones(nc - 1, nc - 1, dtype=torch.bool, device=q.device).tril()  # [c - 1, c'], c' < c
    carry = torch.exp((rho[:, None, :] - rho[:, :, None]).masked_fill(~later, -torch.inf))
    state, state_n = (carry @ own).view(BH, nc - 1, DH, DH), carry @ own_n
    gain = torch.exp(rho[..., None] - F.pad(r, (0, pad), value=torch.inf).view(BH, nc, chunk)[:, 1:])
    gain = gain * DH ** -0.5  # [BH, nc - 1, chunk]; padded rows get 0
    past = gain[..., None] * (qf[:, 1:] @ state)
    past_n = gain * (qf[:, 1:] @ state_n[..., None]).squeeze(-1)
    a = a.float() + F.pad(past.reshape(BH, -1, DH), (0, 0, chunk, 0))[:, :S]
    rowsum = rowsum + F.pad(past_n.reshape(BH, -1), (chunk, 0))[:, :S]
    norm = torch.maximum(rowsum.abs(), torch.exp(-m))
    return (a / (norm + eps)[..., None]).to(q.dtype)


def _check(q: Tensor, k: Tensor, v: Tensor, igate: Tensor, fgate: Tensor) -> None:
    if q.ndim != 4 or k.shape != q.shape or v.shape != q.shape or igate.shape != q.shape[:3] \
            or fgate.shape != q.shape[:3]:
        raise ValueError(f"expected q/k/v [B, NH, S, DH] and gates [B, NH, S]; got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}, igate {tuple(igate.shape)}, "
                         f"fgate {tuple(fgate.shape)}")
    if q.dtype not in DTYPES:
        raise ValueError(f"mlstm_triton supports {DTYPES} inputs, got {q.dtype}")
    if not q.is_cuda and not INTERPRETED:
        raise RuntimeError(f"mlstm_triton needs CUDA tensors (or TRITON_INTERPRET=1 before triton's kernels are "
                           f"defined, for the CPU interpreter), got device {q.device}")
    split_head_dim(q.shape[-1])


@torch.compiler.disable  # torch.compile compiles the block around it; Inductor does not re-compile these kernels
def mlstm_triton(q: Tensor, k: Tensor, v: Tensor, igate: Tensor, fgate: Tensor, *, chunk_size: int | None = None,
                 eps: float = EPS) -> Tensor:
    """h = mLSTM(q, k, v, igate, fgate), exact (forward and gradient) with O(S) memory. q, k, v:
    [B, NH, S, DH] (float32 or bfloat16; k, v are cast to q's dtype); igate, fgate: [B, NH, S]
    pre-activations -> h [B, NH, S, DH] in q's dtype. chunk_size None: one tiled sweep up to WHOLE_MAX
    steps, chunkwise in chunks of CHUNK steps beyond (`_chunkwise`, time linear in S); an int: chunkwise
    in chunks of that length whenever S exceeds it."""
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    whole_max, chunk = (WHOLE_MAX, CHUNK) if chunk_size is None else (chunk_size, chunk_size)
    _check(q, k, v, igate, fgate)
    B, NH, S, DH = q.shape
    with torch.autocast(q.device.type, enabled=False):  # gate terms in float32 even under autocast
        log_f = F.logsigmoid(fgate.float()).cumsum(-1)
        u = igate.float() - log_f
        r = u.cummax(-1).values  # m_t - F_t: the row maximum of log D, known before the kernel runs
        m = log_f + r
        flat = [t.to(q.dtype).reshape(B * NH, S, DH).contiguous() for t in (q, k, v)]
        gates = [t.reshape(B * NH, S).contiguous() for t in (u, r, m)]
        if S <= whole_max:
            h = _MLSTMCell.apply(*flat, *gates, eps)
        else:
            h = _chunkwise(*flat, *gates, eps, chunk)
    return h.reshape(B, NH, S, DH)

__all__ = ["mlstm_triton", "split_head_dim"]
