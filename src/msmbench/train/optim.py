"""Optimiser and schedule of SPEC.md section 4: AdamW, no decay on biases/norms/tokens, warm-up + cosine."""

from __future__ import annotations

import inspect
import math

import torch
from torch import nn


def no_weight_decay(name: str, param: torch.Tensor) -> bool:
    """Biases, norm weights and other vectors; learned tokens; parameters a module marks (Mamba's A_log, D)."""
    return param.ndim <= 1 or name.endswith("_token") or getattr(param, "_no_weight_decay", False)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if no_weight_decay(name, p) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def scaled_lr(base_lr: float, batch_size: int) -> float:
    """lr = base_lr * global_batch / 256 (6e-4 at batch 1024 for base_lr 1.5e-4)."""
    return base_lr * batch_size / 256


def lr_at(step: int, peak_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up from 0, then a half-cycle cosine to 0 at total_steps (per step, MAE's schedule)."""
    if step < warmup_steps:
        return peak_lr * step / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float]) -> torch.optim.AdamW:
    kwargs = {}
    on_cuda = next(model.parameters()).is_cuda
    if on_cuda and "fused" in inspect.signature(torch.optim.AdamW).parameters:
        kwargs["fused"] = True  # one kernel for all parameters on GPU
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=tuple(betas), **kwargs)
