"""Which crops each training step reads: a pure function of (seed, step), so resuming is exact.

Each epoch visits the clips in a fresh permutation (seeded by (seed, epoch)); each sample takes a
random `crop_frames` window (seeded by (seed, step)). A step's batch can be rebuilt from its number
alone: no sampler state to save, and data workers can produce steps in any order.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from msmbench.data.features import LogMelShards


class CropSchedule:
    def __init__(self, clip_frames: np.ndarray, batch_size: int, crop_frames: int, seed: int):
        self.clip_frames = np.asarray(clip_frames)
        self.batch_size = batch_size
        self.crop_frames = crop_frames
        self.seed = seed
        self.n = len(self.clip_frames)
        # A small corpus may hold fewer clips than a batch: one step per epoch, indices wrap around.
        self.steps_per_epoch = max(1, self.n // batch_size)

    def _permutation(self, epoch: int) -> np.ndarray:
        reps = -(-self.batch_size // self.n)
        rng = np.random.default_rng([self.seed, 1, epoch])
        return np.concatenate([rng.permutation(self.n) for _ in range(reps)])

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(clip indices, crop starts) of the global batch at `step`."""
        epoch, k = divmod(step, self.steps_per_epoch)
        clips = self._permutation(epoch)[k * self.batch_size:(k + 1) * self.batch_size]
        room = np.maximum(self.clip_frames[clips] - self.crop_frames, 0) + 1
        rng = np.random.default_rng([self.seed, 2, step])
        starts = (rng.random(len(clips)) * room).astype(np.int64)
        return clips, starts


class StepDataset(Dataset):
    """Item `step` = this rank's slice of that step's batch, float32 [b, crop_frames, n_mels]."""

    def __init__(self, features: str, schedule: CropSchedule, rank: int = 0, world_size: int = 1):
        if schedule.batch_size % world_size:
            raise ValueError(f"global batch {schedule.batch_size} is not divisible by {world_size} processes")
        self.features = features
        self.schedule = schedule
        self.rank, self.world_size = rank, world_size
        self._shards: LogMelShards | None = None  # opened lazily, once per worker process

    def __len__(self) -> int:  # steps are addressed directly; any non-negative step is valid
        return 2**62

    def __getitem__(self, step: int) -> torch.Tensor:
        if self._shards is None:
            self._shards = LogMelShards.open(self.features)
        clips, starts = self.schedule.batch(step)
        per_rank = len(clips) // self.world_size
        sl = slice(self.rank * per_rank, (self.rank + 1) * per_rank)
        crops = [self._shards.crop(int(c), int(s), self.schedule.crop_frames) for c, s in zip(clips[sl], starts[sl])]
        return torch.from_numpy(np.stack(crops))


def mask_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    """The masking noise of a step (for the global batch), seeded by (seed, step): identical after a resume."""
    g = torch.Generator(device=device)
    g.manual_seed(int(np.random.SeedSequence([seed, 3, step]).generate_state(1)[0]))
    return g
