"""SSAM encoder (Audio Mamba, SPEC.md section 2): Mamba-1 mixers in add -> LayerNorm -> mixer blocks.

- `MambaMixer` has exactly the parameters of `mamba_ssm.modules.mamba_simple.Mamba` (names, shapes, init),
  so a state_dict moves between the two unchanged. Its `kernel` picks the conv + scan + gating:
  "cuda" runs our CUDA causal conv and CUDA scan (msmbench.ops.causal_conv1d_cuda, .selective_scan_cuda:
  what "auto" picks on CUDA, the fastest measured, BENCHMARKS.md, except at batches too small to fill the
  GPU, where it takes mamba-ssm's when installed); "mamba_ssm" runs mamba-ssm's kernels as
  `Mamba` does (the fused `mamba_inner_fn` when causal-conv1d is installed); "triton" runs our PyTorch
  causal conv and our Triton scan (msmbench.ops.selective_scan_triton); "torch" (the CPU path) runs our
  exact chunked scan (msmbench.ops.selective_scan). All four compute the same function.
- `Block` is the released code's block (mamba-ssm's `Block` with fused_add_norm=False): the residual
  stream is carried separately and kept in fp32; each block adds the previous mixer output to it,
  normalises (LayerNorm, eps 1e-6) and runs its mixer. No MLP. The encoder ends with the last add and
  the final LayerNorm.
- Init: Mamba's own (dt bias = inverse softplus of dt in [1e-3, 1e-1], A_log = log(1..N), D = 1), then the
  authors' `_init_weights(n_layer)`: Linear biases zeroed except dt_proj's (`_no_reinit`), and out_proj
  re-drawn kaiming_uniform(a=sqrt(5)) and divided by sqrt(n_layer) (GPT-2's residual rescaling).

Backbones: "mamba" (unidirectional, as released) and "mamba-bi" (an extension, see `MambaConfig`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from msmbench.models.registry import register_backbone
from msmbench.ops import triton_installed
from msmbench.ops.causal_conv1d_cuda import causal_conv1d_cuda
from msmbench.ops.nvrtc import cuda_kernels_available
from msmbench.ops.selective_scan import (INSTALL_HINT, causal_conv1d, has_fused_scan, mamba_kernels,
                                         selective_scan_chunked)
from msmbench.ops.selective_scan_cuda import default_grid_fills_gpu, selective_scan_cuda
from msmbench.ops.selective_scan_triton import selective_scan_triton

MAMBA_KERNELS = ("auto", "cuda", "triton", "mamba_ssm", "torch")


def resolve_mamba_kernel(kernel: str, device: torch.device | str, rows: int | None = None) -> str:
    """"auto" -> on CUDA our CUDA conv and scan (the fastest measured: BENCHMARKS.md), except that with
    fewer `rows` (batch x d_inner) than give our scan's default grid a block per SM (`default_grid_fills_gpu`)
    it takes mamba-ssm's kernels when installed: Base at batch 1 (72 blocks on an H100's 132 SMs) ran its
    step 1.4-1.5x faster on them, at batch 2 (144 blocks) 0.95x. Without our CUDA kernels, mamba-ssm's, else
    our Triton scan; on CPU our PyTorch scan. A named kernel that cannot run here raises."""
    on_cuda = torch.device(device).type == "cuda"
    if kernel == "auto":
        if on_cuda and cuda_kernels_available() and (
                rows is None or not has_fused_scan() or default_grid_fills_gpu(rows, torch.device(device))):
            return "cuda"
        if on_cuda and has_fused_scan():
            return "mamba_ssm"
        return "triton" if on_cuda and triton_installed() else "torch"
    if kernel in ("cuda", "triton", "mamba_ssm") and not on_cuda:
        raise RuntimeError(f"Mamba kernel {kernel!r} needs CUDA tensors; use 'torch' (or 'auto') on {device}")
    if kernel == "cuda" and not cuda_kernels_available():
        raise RuntimeError("Mamba kernel 'cuda' needs torch >= 2.8 (torch.cuda._compile_kernel, NVRTC)")
    if kernel == "triton" and not triton_installed():
        raise RuntimeError("Mamba kernel 'triton' needs Triton (pip install triton; it ships with CUDA torch)")
    if kernel == "mamba_ssm" and not has_fused_scan():
        raise RuntimeError(f"Mamba kernel 'mamba_ssm' needs mamba-ssm: {INSTALL_HINT}")
    return kernel


LayerNorm = partial(nn.LayerNorm, eps=1e-6)  # the released code's norm_epsilon


@dataclass(frozen=True)
class MambaConfig:
    dim: int = 768                  # d_model, the token width
    depth: int = 12
    d_state: int = 24               # N, the SSM state size per channel (SSAM configs)
    d_conv: int = 4                 # causal depthwise conv kernel
    expand: int = 3                 # d_inner = expand * dim
    dt_rank: int | str = "auto"     # "auto" = ceil(dim / 16)
    # Extension (not in the released code): scan in both directions.
    # "alternate": odd blocks run their mixer on the time-flipped sequence (the ViL / AxLSTM layout of
    #   SPEC.md section 2): same parameters and cost as the unidirectional model, so the comparison with
    #   "mamba" isolates direction, and with "xlstm" isolates the mixer.
    # "sum": every block runs a second mixer on the flipped sequence and adds the two outputs (Vim-style):
    #   every token sees both contexts in every layer, at twice the mixer parameters and compute.
    bidirectional: bool = False
    bidirectional_mode: str = "alternate"  # "alternate" | "sum"
    kernel: str = "auto"  # the mixer's kernels: auto | cuda | triton | mamba_ssm | torch (resolve_mamba_kernel)


class MambaMixer(nn.Module):
    """Mamba-1 mixer, parameter-compatible with mamba_ssm.modules.mamba_simple.Mamba.

    forward(hidden_states: [B, L, D]) -> [B, L, D].
    kernel: which kernels run the conv + scan + gating (`resolve_mamba_kernel`): "cuda" (our CUDA conv and
    scan, msmbench.ops.causal_conv1d_cuda and .selective_scan_cuda), "triton" (our Triton scan,
    msmbench.ops.selective_scan_triton),
    "mamba_ssm" (mamba-ssm's CUDA kernels, as mamba_simple calls them), "torch" (our exact PyTorch scan, any
    device) or "auto".
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | str = "auto", dt_min: float = 0.001, dt_max: float = 0.1, dt_init: str = "random",
                 dt_scale: float = 1.0, dt_init_floor: float = 1e-4, conv_bias: bool = True, bias: bool = False,
                 kernel: str = "auto", layer_idx: int | None = None, device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        if kernel not in MAMBA_KERNELS:
            raise ValueError(f"unknown Mamba kernel {kernel!r}; choose from {MAMBA_KERNELS}")
        self.kernel = kernel
        self.layer_idx = layer_idx

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias, **factory)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, kernel_size=d_conv, groups=self.d_inner,
                                padding=d_conv - 1, bias=conv_bias, **factory)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False, **factory)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True, **factory)
        self.A_log = nn.Parameter(torch.empty(self.d_inner, d_state, device=device, dtype=torch.float32))
        self.D = nn.Parameter(torch.empty(self.d_inner, device=device, dtype=torch.float32))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory)
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True
        self.reset_ssm_parameters(dt_min, dt_max, dt_init, dt_scale, dt_init_floor)

    @torch.no_grad()
    def reset_ssm_parameters(self, dt_min=0.001, dt_max=0.1, dt_init="random", dt_scale=1.0, dt_init_floor=1e-4):
        """mamba_simple.Mamba's init of dt_proj, A_log and D (the Linear/Conv1d layers keep PyTorch's)."""
        # dt_proj.weight preserves variance at init: U(-s, s) or constant s, with s = dt_rank^-0.5 * dt_scale.
        std = self.dt_rank ** -0.5 * dt_scale
        if dt_init == "constant":
            nn.init.constant_(self.dt_proj.weight, std)
        elif dt_init == "random":
            nn.init.uniform_(self.dt_proj.weight, -std, std)
        else:
            raise ValueError(f"dt_init must be 'random' or 'constant', got {dt_init!r}")
        # dt bias such that softplus(bias) is log-uniform in [dt_min, dt_max]; softplus^-1(y) = y + log(1 - e^-y).
        dt = torch.exp(torch.rand(self.d_inner, device=self.dt_proj.bias.device)
                       * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=dt_init_floor)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.dt_proj.bias._no_reinit = True  # the model-wide init zeroes Linear biases, but not this one
        # S4D-Real: A = -(1, 2, ..., N) for every channel, stored as log in fp32.
        self.A_log.copy_(torch.log(torch.arange(1, self.d_state + 1, dtype=torch.float32)).expand(self.d_inner, -1))
        self.D.fill_(1.0)

    def forward(self, hidden_states: Tensor) -> Tensor:
        """hidden_states: [B, L, D] -> [B, L, D]."""
        kernel = resolve_mamba_kernel(self.kernel, hidden_states.device, rows=hidden_states.shape[0] * self.d_inner)
        if kernel == "mamba_ssm":
            return self._forward_mamba_ssm(hidden_states)
        scan = {"cuda": selective_scan_cuda, "triton": selective_scan_triton}.get(
            kernel, partial(selective_scan_chunked, layout="bld"))
        conv = causal_conv1d_cuda if kernel == "cuda" else causal_conv1d
        # Our paths, channels-last throughout: the Linear layers, the scan and the gating all see (B, L, d);
        # mixing (B, d, L) and (B, L, d) strides makes PyTorch's CPU elementwise kernels several times slower.
        x, z = self.in_proj(hidden_states).chunk(2, dim=-1)                  # (B, L, d_inner) each
        x = conv(x, self.conv1d.weight, self.conv1d.bias, activation="silu")  # (B, L, d_inner)
        if torch.is_autocast_enabled(x.device.type):  # as autocast runs nn.Conv1d: output in the low precision
            x = x.to(torch.get_autocast_dtype(x.device.type))
        dt, Bm, Cm = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight)                               # bias is added inside the scan
        A = -torch.exp(self.A_log.float())                                   # (d_inner, N)
        y = scan(x, dt, A, Bm, Cm, self.D.float(), z=z, delta_bias=self.dt_proj.bias.float(),
                 delta_softplus=True)                                        # (B, L, d_inner)
        return self.out_proj(y)

    def _forward_mamba_ssm(self, hidden_states: Tensor) -> Tensor:
        """mamba_simple.Mamba.forward (no inference cache) with mamba-ssm's CUDA kernels."""
        L = hidden_states.shape[1]
        # One matmul straight into (b, d, l), x and z stacked on d, as mamba_simple does.
        xz = rearrange(self.in_proj.weight @ rearrange(hidden_states, "b l d -> d (b l)"), "d (b l) -> b d l", l=L)
        if self.in_proj.bias is not None:
            xz = xz + self.in_proj.bias.to(xz.dtype)[:, None]
        A = -torch.exp(self.A_log.float())                                   # (d_inner, N)
        kernels = mamba_kernels()
        if kernels.causal_conv1d_fn is not None:
            # Fully fused: conv1d, projections, scan, gating and out_proj.
            return kernels.mamba_inner_fn(
                xz, self.conv1d.weight, self.conv1d.bias, self.x_proj.weight, self.dt_proj.weight,
                self.out_proj.weight, self.out_proj.bias, A, None, None, self.D.float(),
                delta_bias=self.dt_proj.bias.float(), delta_softplus=True)
        # mamba-ssm without causal-conv1d: nn.Conv1d, then the CUDA selective scan (as Mamba does).
        x, z = xz.chunk(2, dim=1)
        x = F.silu(self.conv1d(x)[..., :L])
        x_dbl = self.x_proj(rearrange(x, "b d l -> (b l) d"))
        dt, Bm, Cm = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = rearrange(self.dt_proj.weight @ dt.t(), "d (b l) -> b d l", l=L)
        Bm = rearrange(Bm, "(b l) n -> b n l", l=L).contiguous()
        Cm = rearrange(Cm, "(b l) n -> b n l", l=L).contiguous()
        y = kernels.selective_scan_fn(x, dt, A, Bm, Cm, self.D.float(), z=z,
                                      delta_bias=self.dt_proj.bias.float(), delta_softplus=True)
        return self.out_proj(rearrange(y, "b d l -> b l d"))


class Block(nn.Module):
    """Add -> LayerNorm -> mixer, returning (mixer output, residual); residual kept in fp32.

    flip=True runs the mixer on the time-reversed sequence (bidirectional "alternate");
    second=True adds a second mixer on the reversed sequence (bidirectional "sum").
    """

    def __init__(self, cfg: MambaConfig, layer_idx: int, flip: bool = False, second: bool = False):
        super().__init__()
        mixer = partial(MambaMixer, cfg.dim, d_state=cfg.d_state, d_conv=cfg.d_conv, expand=cfg.expand,
                        dt_rank=cfg.dt_rank, kernel=cfg.kernel, layer_idx=layer_idx)
        self.norm = LayerNorm(cfg.dim)
        self.mixer = mixer()
        self.mixer_rev = mixer() if second else None
        self.flip = flip

    def forward(self, hidden_states: Tensor, residual: Tensor | None = None) -> tuple[Tensor, Tensor]:
        residual = hidden_states if residual is None else residual + hidden_states
        h = self.norm(residual.to(self.norm.weight.dtype))
        residual = residual.float()
        out = self.mixer(h.flip(1)).flip(1) if self.flip else self.mixer(h)
        if self.mixer_rev is not None:
            out = out + self.mixer_rev(h.flip(1)).flip(1)
        return out, residual


def _init_weights(module: nn.Module, n_layer: int, n_residuals_per_layer: int = 1) -> None:
    """The released code's init (after mamba-ssm / HF GPT-2): zero Linear biases except those marked
    `_no_reinit`, and re-draw every `out_proj.weight` scaled by 1/sqrt(n_residuals_per_layer * n_layer)."""
    if isinstance(module, nn.Linear) and module.bias is not None and not getattr(module.bias, "_no_reinit", False):
        nn.init.zeros_(module.bias)
    if isinstance(module, MambaMixer):  # the released code matches the name "out_proj.weight" in the mixer
        p = module.out_proj.weight
        nn.init.kaiming_uniform_(p, a=math.sqrt(5))  # re-drawn, so calling this twice does not rescale twice
        with torch.no_grad():
            p /= math.sqrt(n_residuals_per_layer * n_layer)


MAMBA_SIZES = {
    # The default CPU pretraining size: the Transformer's cpu width and depth (dim 64, depth 4). d_state 16
    # instead of the paper's 24: the exact CPU scan costs in proportion to expand * d_state; with 24 a
    # fwd+bwd (batch 32 x 251 tokens, 2 threads, 2-core EPYC, quiet machine) took 3.3-4.0x the
    # Transformer's, above the 3x budget; with 16 it takes 2.5-2.95x, and the parameter count matches the
    # Transformer's (196k vs 200k). benchmarks/cpu_backbones.py; `--set mamba.d_state=24` for the other.
    "cpu": MambaConfig(dim=64, depth=4, d_state=16),
    "tiny": MambaConfig(dim=192, depth=12),
    "small": MambaConfig(dim=384, depth=12),
    "base": MambaConfig(dim=768, depth=12),
}


@register_backbone("mamba", MambaConfig, MAMBA_SIZES,
                   description="SSAM: Mamba-1 mixers (d_state 24, expand 3), add->LN->mixer, unidirectional",
                   paper_params={"tiny": 4.8, "small": 17.9, "base": 69.3})
class MambaEncoder(nn.Module):
    def __init__(self, cfg: MambaConfig):
        super().__init__()
        if cfg.bidirectional and cfg.bidirectional_mode not in ("alternate", "sum"):
            raise ValueError(f"bidirectional_mode must be 'alternate' or 'sum', got {cfg.bidirectional_mode!r}")
        self.cfg = cfg
        self.dim = cfg.dim
        alternate = cfg.bidirectional and cfg.bidirectional_mode == "alternate"
        summed = cfg.bidirectional and cfg.bidirectional_mode == "sum"
        self.blocks = nn.ModuleList(Block(cfg, i, flip=alternate and i % 2 == 1, second=summed)
                                    for i in range(cfg.depth))
        self.norm = LayerNorm(cfg.dim)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        # "sum" adds two mixer outputs to the residual per block, so GPT-2's rule counts 2 residuals per layer.
        n_res = 2 if self.cfg.bidirectional and self.cfg.bidirectional_mode == "sum" else 1
        self.apply(partial(_init_weights, n_layer=self.cfg.depth, n_residuals_per_layer=n_res))

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, L, D] -> [B, L, D]. residual_0 = x; residual_i = residual_{i-1} + mixer_{i-1}(...)."""
        hidden, residual = x, None
        for block in self.blocks:
            hidden, residual = block(hidden, residual)
        residual = hidden if residual is None else residual + hidden
        return self.norm(residual.to(self.norm.weight.dtype))


MAMBA_BI_SIZES = {name: dataclasses.replace(cfg, bidirectional=True) for name, cfg in MAMBA_SIZES.items()}


@register_backbone("mamba-bi", MambaConfig, MAMBA_BI_SIZES,
                   description="SSAM extension: odd blocks scan the time-reversed sequence (same parameters)")
class MambaBiEncoder(MambaEncoder):
    """The "mamba" encoder with bidirectional=True (default mode "alternate"); not in the released code."""


__all__ = ["MambaConfig", "MambaMixer", "Block", "MambaEncoder", "MambaBiEncoder", "MAMBA_SIZES", "MAMBA_BI_SIZES"]
