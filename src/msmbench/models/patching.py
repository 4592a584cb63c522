"""Patches, positions and token layouts (SPEC.md sections 1, 2 and 5).

Conventions, written out once:
- A spectrogram is time-major: `spec: [B, T, F]` with T = 200 frames, F = 80 mel bins.
- Patches are 4 frames x 16 bins: a grid of (T/4) x (F/16) = 50 x 5. Tokens are **time-major**:
  token index = t * 5 + f (t = time patch, f = frequency patch), as in the authors' PatchEmbed with
  frequency_first=False. Within a patch, the 64 values are ordered (time offset, frequency offset).
- The cls token comes first (index 0) and gets a zero position.
"""

from __future__ import annotations

import numpy as np
import torch
from einops import rearrange
from torch import Tensor

PATCH_TIME = 4
PATCH_FREQ = 16


def grid_shape(frames: int, bins: int) -> tuple[int, int]:
    if frames % PATCH_TIME or bins % PATCH_FREQ:
        raise ValueError(f"spectrogram {frames}x{bins} is not a multiple of the {PATCH_TIME}x{PATCH_FREQ} patch")
    return frames // PATCH_TIME, bins // PATCH_FREQ


def patchify(spec: Tensor) -> Tensor:
    """spec: [B, T, F] -> patches: [B, (T/4)*(F/16), 4*16], time-major tokens."""
    return rearrange(spec, "b (t pt) (f pf) -> b (t f) (pt pf)", pt=PATCH_TIME, pf=PATCH_FREQ)


def unpatchify(patches: Tensor, bins: int) -> Tensor:
    """patches: [B, L, 64] -> spec: [B, T, F] (inverse of patchify)."""
    return rearrange(patches, "b (t f) (pt pf) -> b (t pt) (f pf)", f=bins // PATCH_FREQ,
                     pt=PATCH_TIME, pf=PATCH_FREQ)


def sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    """[M] positions -> [M, dim]: sin on the first half, cos on the second (MAE's convention)."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even width, got {dim}")
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    angles = np.outer(positions.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_2d(dim: int, grid: tuple[int, int], cls_token: bool = True) -> Tensor:
    """Fixed 2-D sin-cos positions for a (time, freq) grid, time-major: [(1 +) T*F, dim].

    As in the authors' code (inherited from MAE), the first half of the width encodes the
    frequency index and the second half the time index; the cls position is all zeros.
    """
    t_idx, f_idx = np.meshgrid(np.arange(grid[0]), np.arange(grid[1]), indexing="ij")
    emb = np.concatenate([sincos_1d(dim // 2, f_idx), sincos_1d(dim // 2, t_idx)], axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros((1, dim)), emb], axis=0)
    return torch.from_numpy(emb).float()


TOKEN_ORDERS = ("frequency_major", "official")


def tokens_to_frames(tokens: Tensor, freq_patches: int, order: str = "frequency_major") -> Tensor:
    """Patch tokens [B, L, D] (time-major, no cls) -> per-time-step vectors [B, L/F, F*D].

    - "frequency_major" (default, correct): frame t concatenates the F frequency patches of time
      step t, i.e. `b (t f) d -> b t (f d)`.
    - "official": the released SSAM/AxLSTM code applies `b (f t) d -> b t (f d)` to these
      time-major tokens, so frame t concatenates tokens t, t + L/F, t + 2L/F, ...: patches from
      distant times and one frequency band, not one time step. Kept to reproduce their numbers.
    """
    if order == "frequency_major":
        return rearrange(tokens, "b (t f) d -> b t (f d)", f=freq_patches)
    if order == "official":
        return rearrange(tokens, "b (f t) d -> b t (f d)", f=freq_patches)
    raise ValueError(f"unknown token order {order!r}; expected one of {TOKEN_ORDERS}")
