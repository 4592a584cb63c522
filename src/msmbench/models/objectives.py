"""Masked spectrogram modelling objectives around any registered backbone (SPEC.md section 3).

- SSAST-style: masked patches are replaced by a learned mask token, the whole sequence
  (cls + 250 patches) is encoded, a head Linear(D,D) -> GELU -> Linear(D,64) predicts every patch.
- MAE-style: the encoder sees only the visible patches; a 4-layer Transformer decoder (width 384,
  8 heads) fills in mask tokens and predicts the patches; the loss is on masked patches only.

Named presets (`OBJECTIVES`):
- "ssast-official": what the released configs actually do: mask ratio 0.5 (the config writes 0.8
  then 0.5 and the second wins), MSE over ALL patches, and the mask token replaces the patch *after*
  its position was added, so masked tokens carry no position.
- "ssast": the intended behaviour: loss on masked patches only, the chosen ratio, and the mask token
  gets the patch's position (as in the original SSAST), so a position-agnostic encoder can still
  tell masked tokens apart.
- "mae": MAE-style, ratio 0.8.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from msmbench.models.patching import PATCH_FREQ, PATCH_TIME, grid_shape, patchify, sincos_2d, tokens_to_frames
from msmbench.models.registry import build_backbone
from msmbench.models.transformer import TransformerConfig, TransformerEncoder


@dataclass(frozen=True)
class ObjectiveConfig:
    kind: str  # "ssast" | "mae"
    mask_ratio: float
    loss_on: str  # "all" | "masked"
    mask_token_has_position: bool
    decoder_dim: int = 384
    decoder_depth: int = 4
    decoder_heads: int = 8


OBJECTIVES = {
    "ssast-official": ObjectiveConfig("ssast", 0.5, "all", mask_token_has_position=False),
    "ssast": ObjectiveConfig("ssast", 0.5, "masked", mask_token_has_position=True),
    "mae": ObjectiveConfig("mae", 0.8, "masked", mask_token_has_position=True),
}


def objective_config(name: str, **overrides) -> ObjectiveConfig:
    if name not in OBJECTIVES:
        raise KeyError(f"unknown objective {name!r}; presets: {', '.join(OBJECTIVES)}")
    cfg = dataclasses.replace(OBJECTIVES[name], **overrides)
    if not 0.0 < cfg.mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in (0, 1), got {cfg.mask_ratio}")
    if cfg.loss_on not in ("all", "masked"):
        raise ValueError(f"loss_on must be 'all' or 'masked', got {cfg.loss_on!r}")
    return cfg


def random_masking(batch: int, length: int, mask_ratio: float, device, generator=None,
                   noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Unstructured random masking. Returns (mask, ids_keep).

    mask: [B, L] float, 0 is keep, 1 is remove. ids_keep: [B, n_keep] indices of kept tokens in
    ascending order (so a recurrent encoder scans the visible tokens in time order).
    n_keep = int(L * (1 - ratio)), the released code's rounding.
    """
    n_keep = int(length * (100 - mask_ratio * 100) / 100)
    if noise is None:  # uniform noise decides the order: small is kept, large is masked
        noise = torch.rand(batch, length, device=device, generator=generator)
    ids_keep = torch.argsort(noise, dim=1)[:, :n_keep].sort(dim=1).values
    mask = torch.ones(batch, length, device=device)
    mask.scatter_(1, ids_keep, 0.0)
    return mask, ids_keep


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor | None) -> Tensor:
    """Mean squared error per patch; averaged over masked patches (mask=1) or over all if mask is None."""
    loss = (pred.float() - target.float()).square().mean(dim=-1)  # [B, L]
    if mask is None:
        return loss.mean()
    return (loss * mask).sum() / mask.sum()


class MaskedSpectrogramModel(nn.Module):
    """Patch embedding + positions + cls token + a registered backbone + an objective's head.

    forward(spec) -> (loss, pred, mask); forward_features(spec) -> patch tokens for embeddings.
    """

    def __init__(self, backbone: str, backbone_cfg, objective: ObjectiveConfig, frames: int = 200, bins: int = 80):
        super().__init__()
        self.objective = objective
        self.grid = grid_shape(frames, bins)
        self.encoder = build_backbone(backbone, backbone_cfg)
        dim = self.encoder.dim
        patch_dim = PATCH_TIME * PATCH_FREQ
        # A Linear over the flattened 4x16 patch is the authors' Conv2d(kernel=stride=patch) written out.
        self.patch_embed = nn.Linear(patch_dim, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos_embed", sincos_2d(dim, self.grid).unsqueeze(0), persistent=False)
        if objective.kind == "ssast":
            self.head = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, patch_dim))
        elif objective.kind == "mae":
            self.decoder = MAEDecoder(dim, objective, self.grid, patch_dim)
        else:
            raise ValueError(f"unknown objective kind {objective.kind!r}")
        self.initialize_weights()

    def initialize_weights(self) -> None:
        # Conv2d patch embedding initialised xavier_uniform by the released code: fans of the conv
        # kernel (fan_in = 64, fan_out = D * 64), not of the equivalent Linear.
        fan_in, fan_out = self.patch_embed.in_features, self.patch_embed.out_features * self.patch_embed.in_features
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        nn.init.uniform_(self.patch_embed.weight, -bound, bound)
        nn.init.zeros_(self.patch_embed.bias)
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)

    # --- shared pieces -------------------------------------------------------------------------
    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def embed_patches(self, spec: Tensor) -> Tensor:
        """spec: [B, T, F] -> patch tokens with positions: [B, L, D]."""
        return self.patch_embed(patchify(spec)) + self.pos_embed[:, 1:, :]

    def prepend_cls(self, x: Tensor) -> Tensor:
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
        return torch.cat([cls, x], dim=1)

    def forward_features(self, spec: Tensor) -> Tensor:
        """Unmasked encoding for embeddings: spec [B, T, F] -> patch tokens [B, L, D] (cls dropped)."""
        return self.encoder(self.prepend_cls(self.embed_patches(spec)))[:, 1:, :]

    def frame_embeddings(self, spec: Tensor, order: str = "frequency_major") -> Tensor:
        """spec [B, T, F] -> [B, T/4, (F/16) * D], one vector per time patch (SPEC.md section 5)."""
        return tokens_to_frames(self.forward_features(spec), self.grid[1], order)

    # --- objective -----------------------------------------------------------------------------
    def forward_encoder(self, spec: Tensor, generator=None, noise: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Returns (latent, mask, ids_keep). SSAST: latent [B, 1+L, D]; MAE: [B, 1+n_keep, D].

        noise: optional [B, L] uniform values that decide the mask (distributed training passes each
        process its slice of the global batch's noise, so the masks equal a single-process run's)."""
        x = self.embed_patches(spec)
        B, L, D = x.shape
        mask, ids_keep = random_masking(B, L, self.objective.mask_ratio, x.device, generator, noise)
        if self.objective.kind == "mae":
            x = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, D))
        else:
            m = mask.unsqueeze(-1).to(x.dtype)
            token = self.mask_token.to(x.dtype)
            if self.objective.mask_token_has_position:
                token = token + self.pos_embed[:, 1:, :]
            x = x * (1 - m) + token * m
        return self.encoder(self.prepend_cls(x)), mask, ids_keep

    def forward_decoder(self, latent: Tensor, ids_keep: Tensor) -> Tensor:
        """latent -> predicted patches [B, L, 64]."""
        if self.objective.kind == "mae":
            return self.decoder(latent, ids_keep)
        return self.head(latent)[:, 1:, :]

    def forward_loss(self, spec: Tensor, pred: Tensor, mask: Tensor) -> Tensor:
        """MSE against the (already per-clip standardised) patches."""
        target = patchify(spec)
        return masked_mse(pred, target, None if self.objective.loss_on == "all" else mask)

    def forward(self, spec: Tensor, generator=None, noise: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        latent, mask, ids_keep = self.forward_encoder(spec, generator, noise)
        pred = self.forward_decoder(latent, ids_keep)
        return self.forward_loss(spec, pred, mask), pred, mask


class MAEDecoder(nn.Module):
    """Light Transformer decoder: embed the visible latents, put mask tokens back, add positions."""

    def __init__(self, enc_dim: int, objective: ObjectiveConfig, grid: tuple[int, int], patch_dim: int):
        super().__init__()
        dim = objective.decoder_dim
        self.embed = nn.Linear(enc_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos_embed", sincos_2d(dim, grid).unsqueeze(0), persistent=False)
        self.blocks = TransformerEncoder(TransformerConfig(dim=dim, depth=objective.decoder_depth,
                                                           heads=objective.decoder_heads))
        self.pred = nn.Linear(dim, patch_dim)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, latent: Tensor, ids_keep: Tensor) -> Tensor:
        x = self.embed(latent)  # [B, 1 + n_keep, d]
        B, L = x.shape[0], self.pos_embed.shape[1] - 1
        full = self.mask_token.to(x.dtype).expand(B, L, -1).clone()
        full.scatter_(1, ids_keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]), x[:, 1:, :])
        x = torch.cat([x[:, :1, :], full], dim=1) + self.pos_embed
        return self.pred(self.blocks(x))[:, 1:, :]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def paper_parameter_count(model: MaskedSpectrogramModel) -> int:
    """Parameters as SPEC.md counts them: everything but the mask token (positions are buffers)."""
    return count_parameters(model) - model.mask_token.numel()


def ssast_loss_reference(pred: Tensor, target: Tensor, mask: Tensor | None) -> Tensor:
    """The released code's mae_loss, for tests: per-element MSE, optionally mask-weighted."""
    loss = (pred - target) ** 2
    if mask is None:
        return loss.mean()
    return (loss.mean(dim=-1) * mask).sum() / mask.sum()


__all__ = ["ObjectiveConfig", "OBJECTIVES", "objective_config", "random_masking", "masked_mse",
           "MaskedSpectrogramModel", "count_parameters", "paper_parameter_count"]
