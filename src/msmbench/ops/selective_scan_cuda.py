"""Mamba-1 selective scan in CUDA: one thread per channel and group of states, time step by step.

Same semantics and signature as `selective_scan_triton.selective_scan_triton` (channels-last u, delta, z
(B, L, D); A (D, N); B, C (B, L, N); D, delta_bias (D,)), computed in float32 whatever the storage type:

    dt_t = softplus(delta_t + delta_bias)          h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t,   h_{-1} = 0
    y_t  = C_t . h_t + D u_t                       out_t = y_t silu(z_t)

The kernels (`selective_scan.cu`, compiled at first use by NVRTC through `torch.cuda._compile_kernel`, a
second or so per configuration) keep a channel's state in registers, split over NG threads (SPT = N / NG
states each), and walk the sequence one step at a time. At the paper's length (251 steps) there are
B x D = 590k independent recurrences, far more than the GPU has threads, so nothing is gained by scanning
time in parallel, and a sequential walk does the least work: one exp and three multiply-adds per state and
step forward. A block holds CH channels; it stages SEG steps of its inputs in shared memory at a time
(coalesced loads, dt = softplus(delta + bias) computed once per channel and step rather than per state).

Forward: besides the output, the state entering every SEG-th step is saved (fp32, B x L/SEG x D x N).
Backward, segment by segment from the end: the segment's SEG states are recomputed from the saved one into
registers; then the adjoint r_t = C_t dy_t + a_{t+1} r_{t+1} runs backwards and gives, with h_{t-1} from
registers, every gradient of the step (see the forward formulas; q = r_t a_t h_{t-1}):

    du = dt (B . r) + D dy          d(dt) = u (B . r) + A . q          dA = sum_(b,t) dt q
    dB_t = sum_d dt u r             dC_t = sum_d dy h_t               dz = dout y silu'(z)

The sums over channels (dB, dC) are taken over a warp with shuffles, over the block's warps in shared
memory, and over blocks by PyTorch from per-block partials; dA, dD, d(bias) are summed over the batch the
same way. No atomics: results are deterministic. A decay is never divided by, so exp(dt A) underflowing to
0 is harmless. Parity: tests/test_selective_scan_cuda.py (against the float64 reference and our Triton
kernel); speed: benchmarks/mamba_scan.py.

The launches are custom ops (`msmbench::selective_scan_cuda_fwd` / `_bwd`), so torch.compile and CUDA graphs
call them as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from msmbench.ops.nvrtc import ELEM_CODES, compile_kernels, cuda_kernels_available
from msmbench.ops.selective_scan import check_channels_last, unit_last_stride

SHARED_LIMIT = 48 * 1024   # static shared memory per block


@dataclass(frozen=True)
class CudaScanConfig:
    """Launch shape. threads_per_channel must divide 32; channels * threads_per_channel a multiple of 32."""

    threads_per_channel: int = 4   # NG: a channel's states are split over this many lanes
    channels: int = 32             # CH: channels per block
    segment: int = 8               # SEG: steps staged at once; the forward saves the state every SEG steps
    reduce_steps: int = 2          # KG: steps whose sums over channels (dB, dC) are taken together

    def check(self, n_state: int | None = None) -> None:
        ng, ch = self.threads_per_channel, self.channels
        if ng not in (1, 2, 4, 8, 16, 32):
            raise ValueError(f"CudaScanConfig.threads_per_channel must divide 32, got {ng}")
        if (ng * ch) % 32 or ng * ch > 1024:
            raise ValueError(f"CudaScanConfig: channels * threads_per_channel = {ng * ch} must be a multiple of "
                             "32 and at most 1024")
        if self.segment < 1 or self.reduce_steps < 1 or self.segment % self.reduce_steps:
            raise ValueError(f"CudaScanConfig.segment ({self.segment}) must be a positive multiple of reduce_steps "
                             f"({self.reduce_steps})")
        if n_state is not None and self.backward_shared_bytes(n_state) > SHARED_LIMIT:
            raise ValueError(f"{self} needs {self.backward_shared_bytes(n_state)} bytes of shared memory at d_state "
                             f"{n_state}, more than {SHARED_LIMIT}: use fewer channels or a shorter segment")

    def backward_shared_bytes(self, n_state: int) -> int:
        """Static shared memory of the backward kernel (the larger of the two), as selective_scan.cu lays it
        out: nine [SEG, CH] tiles, B and C [SEG, NP], and per-warp sums [warps, SEG, NP] for dB and dC."""
        ng, ch, seg = self.threads_per_channel, self.channels, self.segment
        n_pad = ng * -(-n_state // ng)
        return 4 * seg * (9 * ch + 2 * n_pad + 2 * (ng * ch // 32) * n_pad)


DEFAULT_CUDA_CONFIG = CudaScanConfig()
# For rows (batch x d_inner) too few to give the default a block per SM: twice the lanes a channel, half the
# channels a block, so 4x the blocks and half the states per thread. Base at batch 1 x 64,001: 60.2 ms fwd +
# bwd against the default's 85.7 (the best of the sweep, BENCHMARKS.md); at batch 4 it is the slower one.
FEW_ROWS_CUDA_CONFIG = CudaScanConfig(threads_per_channel=8, channels=16, segment=16, reduce_steps=4)


def default_grid_fills_gpu(rows: int, device: torch.device) -> bool:
    """Whether the default launch shape, one block per `channels` rows, has a block for every SM of `device`."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return -(-rows // DEFAULT_CUDA_CONFIG.channels) >= sms


def launch_config(rows: int, device: torch.device) -> CudaScanConfig:
    """The launch shape for `rows` independent recurrences (batch x d_inner) on `device`."""
    return DEFAULT_CUDA_CONFIG if default_grid_fills_gpu(rows, device) else FEW_ROWS_CUDA_CONFIG


def _kernels(device: torch.device, elem: int, n_state: int, ng: int, ch: int, seg: int, kg: int, has_z: bool,
             softplus: bool):
    """(forward, backward) kernels for one device, storage type, d_state and launch shape (compiled once)."""
    return compile_kernels("selective_scan.cu", ("scan_fwd", "scan_bwd"), device, ELEM=elem, NSTATE=n_state,
                           NG=ng, SPT=-(-n_state // ng), CH=ch, SEG=seg, KG=kg, HAS_Z=int(has_z),
                           SOFTPLUS=int(softplus))


def _rows(x: Tensor, dtype: torch.dtype) -> Tensor:
    """x in the kernels' storage type with unit stride on its last axis (slices of a projection are fine)."""
    return unit_last_stride(x.to(dtype))


def _strides(*tensors: Tensor) -> list[int]:
    """(batch, step) strides of each (B, L, X) tensor, whose last axis has unit stride."""
    return [int(s) for t in tensors for s in t.stride()[:2]]


@torch.library.custom_op("msmbench::selective_scan_cuda_fwd", mutates_args=())
def _scan_fwd(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, z: Tensor, delta_bias: Tensor,
              has_z: bool, softplus: bool, ng: int, ch: int, seg: int, kg: int) -> tuple[Tensor, Tensor]:
    batch, L, Dm = u.shape
    N = A.shape[1]
    nseg = -(-L // seg)
    out = torch.empty((batch, L, Dm), dtype=u.dtype, device=u.device)
    hs = torch.empty((batch, nseg, Dm, N), dtype=torch.float32, device=u.device)
    fwd, _ = _kernels(u.device, ELEM_CODES[u.dtype], N, ng, ch, seg, kg, has_z, softplus)
    fwd(grid=(-(-Dm // ch), batch, 1), block=(ch * ng, 1, 1),
        args=[u, delta, z, B, C, A, D, delta_bias, out, hs, L, Dm, nseg, *_strides(u, delta, z, B, C)])
    return out, hs


@_scan_fwd.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, has_z, softplus, ng, ch, seg, kg):
    batch, L, Dm = u.shape
    return u.new_empty((batch, L, Dm)), u.new_empty((batch, -(-L // seg), Dm, A.shape[1]), dtype=torch.float32)


@torch.library.custom_op("msmbench::selective_scan_cuda_bwd", mutates_args=())
def _scan_bwd(dout: Tensor, hs: Tensor, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor,
              z: Tensor, delta_bias: Tensor, has_z: bool, softplus: bool, ng: int, ch: int, seg: int, kg: int
              ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    batch, L, Dm = u.shape
    N = A.shape[1]
    nseg = hs.shape[1]
    n_blocks = -(-Dm // ch)
    dout = _rows(dout, u.dtype)
    du, ddelta = (torch.empty((batch, L, Dm), dtype=u.dtype, device=u.device) for _ in range(2))
    dz = torch.empty((batch, L, Dm) if has_z else (0,), dtype=u.dtype, device=u.device)
    f32 = {"dtype": torch.float32, "device": u.device}
    dB_part, dC_part = torch.empty((n_blocks, batch, L, N), **f32), torch.empty((n_blocks, batch, L, N), **f32)
    dA_part, dD_part, dbias_part = (torch.empty((batch, Dm, N), **f32), torch.empty((batch, Dm), **f32),
                                    torch.empty((batch, Dm), **f32))
    _, bwd = _kernels(u.device, ELEM_CODES[u.dtype], N, ng, ch, seg, kg, has_z, softplus)
    bwd(grid=(n_blocks, batch, 1), block=(ch * ng, 1, 1),
        args=[u, delta, z, B, C, A, D, delta_bias, dout, hs, du, ddelta, dz if has_z else du,
              dB_part, dC_part, dA_part, dD_part, dbias_part, L, Dm, nseg, batch,
              *_strides(u, delta, z, B, C, dout)])
    return (du, ddelta, dz, dA_part.sum(0), dB_part.sum(0), dC_part.sum(0), dD_part.sum(0), dbias_part.sum(0))


@_scan_bwd.register_fake
def _(dout, hs, u, delta, A, B, C, D, z, delta_bias, has_z, softplus, ng, ch, seg, kg):
    batch, L, Dm = u.shape
    N = A.shape[1]
    f32 = {"dtype": torch.float32}
    return (u.new_empty((batch, L, Dm)), u.new_empty((batch, L, Dm)),
            u.new_empty((batch, L, Dm) if has_z else (0,)), u.new_empty((Dm, N), **f32),
            u.new_empty((batch, L, N), **f32), u.new_empty((batch, L, N), **f32), u.new_empty((Dm,), **f32),
            u.new_empty((Dm,), **f32))


def _setup_context(ctx, inputs, output):
    u, delta, A, B, C, D, z, delta_bias, *flags = inputs
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, output[1])
    ctx.flags = flags


def _backward(ctx, dout, _dhs):
    u, delta, A, B, C, D, z, delta_bias, hs = ctx.saved_tensors
    du, ddelta, dz, dA, dB, dC, dD, dbias = _scan_bwd(dout, hs, u, delta, A, B, C, D, z, delta_bias, *ctx.flags)
    return (du, ddelta, dA, dB.to(B.dtype), dC.to(C.dtype), dD, dz if ctx.flags[0] else None, dbias,
            *(None for _ in ctx.flags))


torch.library.register_autograd("msmbench::selective_scan_cuda_fwd", _backward, setup_context=_setup_context)


def selective_scan_cuda(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                        z: Tensor | None = None, delta_bias: Tensor | None = None, delta_softplus: bool = False,
                        config: CudaScanConfig | None = None) -> Tensor:
    """Selective scan, channels-last: u, delta, z (B, L, D); A (D, N); B, C (B, L, N); D, delta_bias (D,).

    Returns out (B, L, D) in u's dtype (float32, bfloat16 or float16; delta, z, B and C are cast to it);
    differentiable in every tensor argument. CUDA tensors only. `config` overrides the launch shape
    (`launch_config`'s choice by the number of rows).
    """
    if not cuda_kernels_available():
        raise RuntimeError("selective_scan_cuda needs a CUDA device and torch >= 2.8 (torch.cuda._compile_kernel)")
    if u.device.type != "cuda":
        raise RuntimeError(f"selective_scan_cuda needs CUDA tensors, got {u.device}")
    if u.dtype not in ELEM_CODES:
        raise ValueError(f"selective_scan_cuda computes in float32 from float32, bfloat16 or float16 inputs; "
                         f"got u of {u.dtype}")
    check_channels_last(u, A, B, C)
    cfg = config or launch_config(u.shape[0] * u.shape[2], u.device)
    cfg.check(A.shape[1])
    dtype = u.dtype
    u, delta, B, C = (_rows(t, dtype) for t in (u, delta, B, C))
    has_z = z is not None
    z = _rows(z, dtype) if has_z else u
    Dm = u.shape[-1]
    A = A.float().contiguous()
    D = D.float().contiguous() if D is not None else u.new_zeros(Dm, dtype=torch.float32)
    bias = delta_bias.float().contiguous() if delta_bias is not None else u.new_zeros(Dm, dtype=torch.float32)
    out, _ = _scan_fwd(u, delta, A, B, C, D, z, bias, has_z, bool(delta_softplus), cfg.threads_per_channel,
                       cfg.channels, cfg.segment, cfg.reduce_steps)
    return out


__all__ = ["DEFAULT_CUDA_CONFIG", "FEW_ROWS_CUDA_CONFIG", "CudaScanConfig", "default_grid_fills_gpu", "launch_config",
           "selective_scan_cuda"]
