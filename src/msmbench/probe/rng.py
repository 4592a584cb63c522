"""Random streams of the probe stage, keyed so that a probe is reproducible on its own.

Every probe ("member") is identified by a `MemberKey` = (seed, config_id, fold). Each of its three random
uses has its own stream, seeded from (seed, config_id, fold, stream) through numpy's SeedSequence:

- "init":    weight and bias initialisation; a CPU torch.Generator (so the initial weights are the same
             on every device), drawn layer by layer: weight, then bias.
- "order":   one torch.randperm of the training rows per epoch, drawn on the training device.
- "dropout": one uniform (B, hidden) draw per hidden layer per training step, on the training device,
             drawn for every member even when its dropout is 0 (the stream stays aligned).

The batched trainer and the plain reference draw from the same streams in the same order, so a member of a
batched run follows the trajectory it would follow trained alone (tests/test_probe_parity.py). `config_id`
is the configuration's index in the protocol's full grid, not its position among the drawn ones, so a
member's streams do not depend on which other configurations were drawn or trained beside it.

The "hear" protocol's draw of configurations uses a numpy Generator seeded from (seed, _DRAW) alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

_STREAMS = {"init": 1, "order": 2, "dropout": 3}
_DRAW = 0  # the config-draw stream; it has no config or fold, so it gets its own SeedSequence key length


@dataclass(frozen=True, order=True)
class MemberKey:
    """Identity of one probe: training seed, configuration (grid index) and fold index."""

    seed: int
    config_id: int
    fold: int

    def generator(self, stream: str, device: str | torch.device = "cpu") -> torch.Generator:
        """A fresh torch.Generator on `device` for one of the member's streams ("init", "order", "dropout")."""
        if stream not in _STREAMS:
            raise ValueError(f"unknown random stream {stream!r}; known: {sorted(_STREAMS)}")
        entropy = _seed_int(self.seed, self.config_id, self.fold, _STREAMS[stream])
        return torch.Generator(device=device).manual_seed(entropy)


def config_draw_rng(seed: int) -> np.random.Generator:
    """The numpy generator that draws a seed's configurations (hear protocol)."""
    return np.random.default_rng(np.random.SeedSequence([_check_seed(seed), _DRAW]))


def _seed_int(*key: int) -> int:
    """A 63-bit integer seed derived from a tuple of non-negative integers."""
    state = np.random.SeedSequence([_check_seed(k) for k in key]).generate_state(1, np.uint64)[0]
    return int(state) >> 1


def _check_seed(value: int) -> int:
    value = int(value)
    if value < 0:
        raise ValueError(f"seeds and keys must be non-negative integers, got {value}")
    return value
