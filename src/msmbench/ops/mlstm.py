"""The mLSTM cell as pure functions: a quadratic parallel reference beside chunkwise kernels.

All functions share one signature and compute one function (xLSTM paper, Beck et al. 2024, eqs. 19-27;
the parallel form is `parallel_stabilized_simple` of the xlstm / Vision-LSTM / AxLSTM code):

    q, k, v:       [B, NH, S, DH]
    igate, fgate:  [B, NH, S]      gate *pre-activations*
    ->  h:         [B, NH, S, DH]

    log f_t  = logsigmoid(fgate_t)                          (sigmoid forget gate, in log space)
    log D_tj = sum_{s=j+1..t} log f_s + igate_j  for j <= t  (exponential input gate), -inf for j > t
    m_t      = max_j log D_tj                               (stabiliser)
    C_tj     = (q_t . k_j / sqrt(DH)) * exp(log D_tj - m_t)
    n_t      = max(|sum_j C_tj|, exp(-m_t))
    h_t      = sum_j C_tj v_j / (n_t + eps),  eps = 1e-6

Kernels (`kernel=`):
- "parallel": the quadratic form above, written out here in float32 (the reference; O(S^2) memory).
- "chunkwise_native": mlstm_kernels' "chunkwise--native_autograd" (pure PyTorch, any device). Chunks of
  `chunk_size` steps are computed in parallel, the (C, n, m) state is carried between chunks: memory is
  linear in S.
- "chunkwise_triton": mlstm_kernels' "chunkwise--triton_xl_chunk" (Triton, CUDA only), run in float32 and
  wrapped to restore the normaliser's gradient (see "Gradients" below; on the H100 its gradients still
  failed parity, so "auto" never picks it).
- "triton": our own Triton kernel (msmbench.ops.mlstm_triton; CUDA): exact forward and gradient, O(S)
  memory, float32 or bfloat16 inputs. Up to 4,096 steps one tiled sweep of the parallel form (at 251
  tokens x 256, 12 Base cells run 4x faster than "parallel" in a quarter of its memory on an H100,
  BENCHMARKS.md); longer sequences run chunkwise, linear in S: the tiled kernel within chunks of 1,024
  steps, the (DH x DH) states across them. Its chunking is its own (`chunk_size` below is not passed).
- "auto": exact kernels only: on CUDA "triton" when Triton is installed, else "parallel" up to 1024 steps
  and "chunkwise_native" beyond; on CPU "chunkwise_native" (see `resolve_kernel`).

Why this Triton kernel, in float32 (measured on an H100, torch 2.11 + triton 3.6.0, mlstm_kernels 2.0.6,
BENCHMARKS.md): "chunkwise--triton_limit_chunk" failed parity against the parallel form (float32 outputs
off by 0.27 relative; bfloat16 gradients wrong), and "triton_xl_chunk" with bfloat16 inputs aborts
Triton's compiler (an LLVM SLPVectorizer assertion), so bf16 inputs are cast to float32 for the cell.
Even so, with the exact-gradient wrapper its gradients still failed parity at some shapes (dq 0.24 and
dfgate 0.44 relative at B8 x 4 heads x 96 x 256 in float32; dq 3e4 at B2 x 251 with bf16 inputs), while
its outputs agree to 1.6e-3 (TF32). It is therefore not chosen by "auto"; it stays available, forced,
for the speed and memory measurements (it is 20x faster than chunkwise native at 16k steps).

Same function on every path: the kernels take the same pre-activations, apply exp / logsigmoid
themselves, use qk scale DH**-0.5, the normaliser max(|n|, exp(-m)) and the same eps. One difference is
inherent to the recurrence: a chunkwise kernel starts from the state (C, n, m) = (0, 0, 0), so its
stabiliser is m_t = max(max_j log D_tj, sum_{s<=t} log f_s) instead of the row maximum. Unscaled (below),
h_t = Num_t / (max(|Den_t|, 1) + eps * exp(m_t)), so the two stabilisers change h only through the eps
term, by at most eps (1e-6) relative. `_parallel_form(..., zero_initial_state=True)` reproduces the kernels'
convention exactly (tests check both: ~1e-12 in float64, < 1e-5 in float32).

Gradients. mlstm_kernels' hand-written backwards (the Triton kernels, and "native_custbw", which shares
their math and runs on CPU) hold the normaliser n and the stabiliser m constant. m is harmless (h depends on
it only through eps), but n is not: dq, dk, digate, dfgate then differ from the gradient of the function
above (what autograd gives through the released parallel form) by O(1) in our tests. Unscaled,

    h_t = Num_t / (max(|Den_t|, 1) + eps * exp(m_t)),  Num_t = sum_j a_tj v_j,  Den_t = sum_j a_tj,
    a_tj = q_t.k_j / sqrt(DH) * exp(log D_tj),

so `_exact_normaliser_grad` moves the normalisation out of the kernel: it scales q_t by a constant
alpha_t small enough that the kernel's max always takes exp(-m) (alpha_t |Den_t| <= 1/2; then the kernel is
linear in v and its n is a true constant), appends a column of ones to v (that output column is alpha-scaled
Den_t), and normalises in PyTorch, where autograd differentiates max(|Den|, 1). Same value (the
kernel's own eps term included), exact gradient; alpha cancels. "chunkwise_triton*" use it; the tests check
it on CPU around native_custbw.

The chunkwise kernels need S to be a multiple of the chunk size: the sequence is right-padded (zeros for
q, k, v; forget gate open, input gate closed) and the output cut back. The recurrence is causal, so the
padding cannot change the first S outputs.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from msmbench.ops import triton_installed

try:  # mlstm_kernels is a dependency, but keep the reference usable without it (STYLE.md 3).
    from mlstm_kernels.torch.chunkwise.native import mlstm_chunkwise__native_autograd
except ImportError:  # pragma: no cover
    mlstm_chunkwise__native_autograd = None

EPS = 1e-6
KERNELS = ("auto", "parallel", "chunkwise_native", "chunkwise_triton", "triton")
_TRITON_KERNELS = {"chunkwise_triton": "chunkwise--triton_xl_chunk"}
_triton_cache: dict[str, object] = {}

_INSTALL_HINT = ("pip install 'mlstm_kernels>=2.0.6' triton (the Triton kernels need a CUDA GPU; "
                 "on CPU use kernel='chunkwise_native' or 'parallel')")


# --- reference ---------------------------------------------------------------------------------------
def _parallel_form(q: Tensor, k: Tensor, v: Tensor, igate: Tensor, fgate: Tensor, eps: float = EPS,
                   zero_initial_state: bool = False, stop_grad_normaliser: bool = False) -> Tensor:
    """The stabilised parallel form in the inputs' dtype. zero_initial_state: use the chunkwise kernels'
    stabiliser (an initial state m_0 = 0 joins the maximum; see the module docstring).
    stop_grad_normaliser: hold n and m constant in the backward, as mlstm_kernels' custom backwards do."""
    S, DH = q.shape[-2], q.shape[-1]
    log_f = F.logsigmoid(fgate).cumsum(-1)  # [B, NH, S], sum_{s<=t} log f_s
    causal = torch.ones(S, S, dtype=torch.bool, device=q.device).tril()
    log_d = (log_f[..., :, None] - log_f[..., None, :]).masked_fill(~causal, -math.inf) + igate[..., None, :]
    m = log_d.amax(dim=-1, keepdim=True)  # [B, NH, S, 1]
    if zero_initial_state:
        m = torch.maximum(m, log_f[..., None])
    if stop_grad_normaliser:
        m = m.detach()
    c = (q @ k.transpose(-2, -1)) * (DH ** -0.5) * torch.exp(log_d - m)  # [B, NH, S, S]
    n = torch.maximum(c.sum(dim=-1, keepdim=True).abs(), torch.exp(-m))
    if stop_grad_normaliser:
        n = n.detach()
    return (c / (n + eps)) @ v


def mlstm_parallel(q: Tensor, k: Tensor, v: Tensor, igate: Tensor, fgate: Tensor, *,
                   chunk_size: int = 64, eps: float = EPS) -> Tensor:
    """Reference: the quadratic parallel form (as the released AxLSTM code computes it), in float32, cast
    back. O(S^2) memory. chunk_size is unused."""
    dtype = q.dtype
    with torch.autocast(q.device.type, enabled=False):  # float32 even inside an autocast region
        return _parallel_form(*(t.float() for t in (q, k, v, igate, fgate)), eps=eps).to(dtype)


# --- chunkwise kernels -------------------------------------------------------------------------------
def _pad_to_chunks(q, k, v, igate, fgate, chunk: int):
    """Right-pad the sequence axis to a multiple of `chunk`; padded steps have forget gate ~1 and input
    gate ~0 (as mlstm_kernels' wrap_chunkwise__pad_zeros), and no influence on earlier steps anyway."""
    S = q.shape[-2]
    pad = -S % chunk
    if pad == 0:
        return q, k, v, igate, fgate
    q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    return q, k, v, F.pad(igate, (0, pad), value=-25.0), F.pad(fgate, (0, pad), value=25.0)


def mlstm_chunkwise_native(q: Tensor, k: Tensor, v: Tensor, igate: Tensor, fgate: Tensor, *,
                           chunk_size: int = 64, eps: float = EPS) -> Tensor:
    """mlstm_kernels' chunkwise--native_autograd (pure PyTorch), computed in float32, cast back."""
    if mlstm_chunkwise__native_autograd is None:
        raise ImportError(f"kernel 'chunkwise_native' needs mlstm_kernels: {_INSTALL_HINT}")
    S, dtype = q.shape[-2], q.dtype
    chunk = max(1, min(chunk_size, S))
    with torch.autocast(q.device.type, enabled=False):  # float32 even inside an autocast region
        args = _pad_to_chunks(*(t.float() for t in (q, k, v, igate, fgate)), chunk)
        h = mlstm_chunkwise__native_autograd(*args, eps=eps, chunk_size=chunk)
    return h[..., :S, :].to(dtype)


def _stabiliser(igate: Tensor, fgate: Tensor) -> Tensor:
    """m_t of the chunkwise kernels (zero initial state), O(S): [B, NH, S] -> [B, NH, S, 1].
    m_t = max(F_t, max_{j<=t} (F_t - F_j + i_j)) = F_t + max(0, cummax_j (i_j - F_j)), F = cumsum log f."""
    log_f = F.logsigmoid(fgate.float()).cumsum(-1)
    return (log_f + (igate.float() - log_f).cummax(-1).values.clamp_min(0.0))[..., None]


def _exact_normaliser_grad(kernel_fn, q: Tensor, k: Tensor, v: Tensor, igate: Tensor, fgate: Tensor,
                           eps: float = EPS, **kwargs) -> Tensor:
    """Run a kernel whose backward holds n (and m) constant so that h gets the exact gradient (see the
    module docstring). kernel_fn(q, k, v, igate, fgate, eps=eps, **kwargs) -> [B, NH, S, DHV]."""
    with torch.no_grad():
        m = _stabiliser(igate, fgate)  # [B, NH, S, 1], >= max_j log D_tj
        # |Den_t| <= |q_t| sum_{j<=t} |k_j| exp(m_t) / sqrt(DH)  =>  alpha_t |Den_t| <= 1/2 with
        log_alpha = (0.5 * math.log(q.shape[-1]) + math.log(0.5) - m
                     - q.float().norm(dim=-1, keepdim=True).clamp_min(1e-30).log()
                     - k.float().norm(dim=-1).cumsum(-1)[..., None].clamp_min(1e-30).log())
        # a power of two (exact in every dtype, so q * alpha is exact and alpha cancels exactly), <= 1
        # (1 needs no scaling), >= 2^-110 (no underflow in float32 / bfloat16)
        alpha = torch.exp2(torch.floor(log_alpha / math.log(2.0)).clamp(-110.0, 0.0))
        tau = torch.reciprocal(1.0 + eps * m.clamp(max=80.0).exp())  # exp(-m) / (exp(-m) + eps)
    DH = v.shape[-1]
    extra = torch.zeros_like(v[..., :1]).expand(*v.shape[:-1], -(DH + 1) % 8 + 1).clone()
    extra[..., 0] = 1.0  # the ones column, then zeros up to a multiple of 8 columns (16-byte rows in bf16)
    y_aug = kernel_fn(q * alpha.to(q.dtype), k, torch.cat([v, extra], dim=-1), igate, fgate, eps=eps, **kwargs)
    # kernel: y = alpha Num / (1 + eps e^m), r = alpha Den / (1 + eps e^m)  ->  h = Num / (max(|Den|, 1) + eps e^m)
    y, r = y_aug[..., :DH].float(), y_aug[..., DH:DH + 1].float()
    h = y / (torch.maximum(r.abs(), alpha * tau) + alpha * (1.0 - tau))
    return h.to(y_aug.dtype)


def _triton_kernel(kernel: str):
    if kernel not in _triton_cache:
        if not torch.cuda.is_available():
            raise RuntimeError(f"kernel {kernel!r} needs a CUDA GPU; {_INSTALL_HINT}")
        try:
            import triton  # noqa: F401
            from mlstm_kernels.torch import get_mlstm_kernel
            _triton_cache[kernel] = get_mlstm_kernel(_TRITON_KERNELS[kernel])
        except (ImportError, ValueError) as err:  # ValueError: registry built without Triton
            raise ImportError(f"kernel {kernel!r} needs Triton + mlstm_kernels: {_INSTALL_HINT}") from err
    return _triton_cache[kernel]


def _triton_chunk(S: int, chunk_size: int) -> int:
    # Triton tiles need a power-of-two chunk of at least 16 (tensor-core size); short sequences get a
    # smaller chunk instead of being padded to a full one.
    if chunk_size < 16 or chunk_size & (chunk_size - 1):
        raise ValueError(f"Triton kernels need a power-of-two chunk_size >= 16, got {chunk_size}")
    return min(chunk_size, max(16, 1 << max(0, S - 1).bit_length()))


def _mlstm_triton(kernel: str, q, k, v, igate, fgate, chunk_size: int, eps: float) -> Tensor:
    fn = _triton_kernel(kernel)
    if not q.is_cuda:
        raise RuntimeError(f"kernel {kernel!r} needs CUDA tensors, got device {q.device}")
    S, dtype = q.shape[-2], q.dtype
    chunk = _triton_chunk(S, chunk_size)
    if q.dtype == torch.float16:
        raise ValueError("the Triton mLSTM path supports float32 and bfloat16 (float16 cannot hold the "
                         "normaliser's scale factors); use bfloat16 autocast")
    # float32 in the kernel whatever the input dtype: its bfloat16 build aborts Triton's compiler here
    # (module docstring). Under autocast the kernel's custom_fwd casts to autocast_kernel_dtype.
    kdtype = torch.float32
    args = _pad_to_chunks(*(t.to(kdtype) for t in (q, k, v, igate, fgate)), chunk)
    h = _exact_normaliser_grad(fn, *args, eps=eps, chunk_size=chunk, autocast_kernel_dtype=kdtype)
    return h[..., :S, :].to(dtype)


def mlstm_chunkwise_triton(q: Tensor, k: Tensor, v: Tensor, igate: Tensor, fgate: Tensor, *,
                           chunk_size: int = 64, eps: float = EPS) -> Tensor:
    """mlstm_kernels' chunkwise--triton_xl_chunk (CUDA), in float32; h is returned in q's dtype."""
    return _mlstm_triton("chunkwise_triton", q, k, v, igate, fgate, chunk_size, eps)


def mlstm_triton(q: Tensor, k: Tensor, v: Tensor, igate: Tensor, fgate: Tensor, *,
                 chunk_size: int = 64, eps: float = EPS) -> Tensor:
    """Our Triton kernel (msmbench.ops.mlstm_triton), imported on first use: this module stays importable
    without Triton. chunk_size is not passed: the kernel's own chunking (msmbench.ops.mlstm_triton.WHOLE_MAX,
    CHUNK) suits its tiles and head dims, where the model's chunk_size (64) is the chunkwise native kernel's."""
    try:
        from msmbench.ops.mlstm_triton import mlstm_triton as kernel_fn
    except ImportError as err:
        raise ImportError("kernel 'triton' needs Triton: pip install triton (and a CUDA GPU)") from err
    return kernel_fn(q, k, v, igate, fgate, eps=eps)


# --- dispatch ----------------------------------------------------------------------------------------
@functools.cache
def triton_available() -> bool:
    """CUDA + Triton + mlstm_kernels' Triton kernels importable (checked once per process)."""
    try:
        _triton_kernel("chunkwise_triton")
        return True
    except (ImportError, RuntimeError):
        return False


PARALLEL_MAX_LEN = 1024  # "auto" on CUDA: the exact parallel form up to this length, chunkwise beyond


def resolve_kernel(kernel: str, device: torch.device | str, seq_len: int | None = None) -> str:
    """'auto' -> an exact kernel: on CUDA our Triton kernel ("triton": exact, O(S) memory, the fastest at
    every length measured, BENCHMARKS.md); without Triton the parallel form up to PARALLEL_MAX_LEN steps
    and chunkwise native beyond (memory linear in length); on CPU chunkwise native. mlstm_kernels'
    "chunkwise_triton" is never chosen automatically: on the H100 its gradients failed parity."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown mLSTM kernel {kernel!r}; choose from {KERNELS}")
    if kernel != "auto":
        return kernel
    on_cuda = torch.device(device).type == "cuda"
    if on_cuda and triton_installed():
        return "triton"
    if on_cuda and (seq_len is None or seq_len <= PARALLEL_MAX_LEN):
        return "parallel"
    return "chunkwise_native"


_FUNCTIONS = {"parallel": mlstm_parallel, "chunkwise_native": mlstm_chunkwise_native,
              "chunkwise_triton": mlstm_chunkwise_triton, "triton": mlstm_triton}


def mlstm(q: Tensor, k: Tensor, v: Tensor, igate: Tensor, fgate: Tensor, *, kernel: str = "auto",
          chunk_size: int = 64, eps: float = EPS) -> Tensor:
    """h = mLSTM(q, k, v, igate, fgate). q, k, v: [B, NH, S, DH]; igate, fgate (pre-activations):
    [B, NH, S] -> h: [B, NH, S, DH] in q's dtype. See the module docstring for the kernels."""
    if q.ndim != 4 or igate.shape != q.shape[:3] or fgate.shape != q.shape[:3]:
        raise ValueError(f"expected q/k/v [B, NH, S, DH] and gates [B, NH, S]; got q {tuple(q.shape)}, "
                         f"igate {tuple(igate.shape)}, fgate {tuple(fgate.shape)}")
    return _FUNCTIONS[resolve_kernel(kernel, q.device, q.shape[-2])](q, k, v, igate, fgate, chunk_size=chunk_size,
                                                                      eps=eps)


__all__ = [
    "EPS",
    "KERNELS",
    "mlstm",
    "mlstm_chunkwise_native",
    "mlstm_chunkwise_triton",
    "mlstm_parallel",
    "mlstm_triton",
    "resolve_kernel",
    "triton_available",
]
