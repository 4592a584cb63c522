"""Masked reconstructions of a few pretraining clips, for the reconstruction figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from msmbench.data.features import LogMelShards
from msmbench.io import atomic_path
from msmbench.models.checkpoint import load_checkpoint
from msmbench.models.patching import patchify, unpatchify


@torch.no_grad()
def reconstruct(checkpoint: str | Path, features: str | Path, out: str | Path, n_clips: int = 3, seed: int = 0) -> None:
    """Write npz: spec, mask, recon (float32 [n, T, F]) and the model name, for n evenly spaced clips."""
    model, record = load_checkpoint(checkpoint)
    shards = LogMelShards.open(features)
    frames, bins = model.grid[0] * 4, model.grid[1] * 16
    clips = np.linspace(0, len(shards) - 1, n_clips).astype(int)
    spec = torch.from_numpy(np.stack([shards.crop(int(c), 0, frames) for c in clips]))
    gen = torch.Generator().manual_seed(seed)
    latent, mask, ids_keep = model.forward_encoder(spec, generator=gen)
    recon = unpatchify(model.forward_decoder(latent, ids_keep), bins)
    mask_map = unpatchify(mask.unsqueeze(-1).expand(-1, -1, patchify(spec).shape[-1]), bins)
    name = f"{record['spec']['backbone']}-{record['spec']['size']}"
    with atomic_path(out) as tmp:
        np.savez(tmp, spec=spec.numpy(), mask=mask_map.numpy(), recon=recon.float().numpy(), model=np.array(name))
