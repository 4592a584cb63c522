"""Probe protocols (SPEC section 7): named presets, overrides and the configuration grid.

A `ProbeProtocol` is the whole recipe of the shallow-probe stage: the hyperparameter grid the configurations
are drawn from, the optimiser and the training budget. A `ProbeConfig` is one point of that grid, i.e. one
MLP that can be trained. Configurations carry a stable `config_id` (their index in the full grid, in the
grid's fixed product order), so that the random streams of a configuration do not depend on which other
configurations were drawn next to it (see `msmbench.probe.rng`).

Presets
- "paper": the authors' protocol. One hidden layer of 1024 units, BatchNorm1d, dropout {0.1, 0.25},
  ReLU, xavier_normal; Adam, lr 1e-4, batch 1024; <= 500 epochs, validation every 3 epochs, early stopping
  with patience 20 validation checks on the task metric. Both configurations are trained (n_configs=None).
- "hear": the HEAR 2021 upstream grid. Hidden layers {1, 2} x lr {3.2e-3, 1e-3, 3.2e-4, 1e-4} x
  init {xavier_uniform, xavier_normal}, hidden 1024, dropout 0.1 (16 configurations); 8 are drawn per
  seed. Optimiser, batch size and training budget are those of "paper" (SPEC 7 gives no others).
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any

INITS = ("xavier_normal", "xavier_uniform")
OPTIMIZERS = ("adam",)


@dataclass(frozen=True)
class ProbeConfig:
    """One trainable probe: Linear -> BatchNorm1d -> Dropout -> ReLU, `hidden_layers` times, then Linear."""

    config_id: int  # index in the protocol's full grid; keys the configuration's random streams
    hidden_layers: int
    hidden_dim: int
    dropout: float
    lr: float
    init: str  # "xavier_normal" | "xavier_uniform"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ProbeProtocol:
    """The probe recipe. Tuple fields are grid axes; the grid is their product, in field order."""

    name: str
    hidden_layers: tuple[int, ...] = (1,)  # grid axis: number of hidden layers (>= 1)
    hidden_dim: int = 1024
    dropout: tuple[float, ...] = (0.1, 0.25)  # grid axis
    lr: tuple[float, ...] = (1e-4,)  # grid axis
    init: tuple[str, ...] = ("xavier_normal",)  # grid axis
    optimizer: str = "adam"  # torch.optim.Adam defaults: betas (0.9, 0.999), eps 1e-8, no weight decay
    batch_size: int = 1024
    max_epochs: int = 500
    check_every: int = 3  # validate after epochs check_every, 2*check_every, ... (Lightning's check_val_every_n_epoch)
    patience: int = 20  # counted in validation checks without a strict improvement (Lightning EarlyStopping)
    n_configs: int | None = None  # configurations drawn per seed; None = the whole grid
    bn_eps: float = 1e-5  # BatchNorm1d defaults
    bn_momentum: float = 0.1

    def __post_init__(self) -> None:
        _validate(self)

    def grid(self) -> list[ProbeConfig]:
        """Every configuration of the grid, in the fixed product order (its index is `config_id`)."""
        axes = itertools.product(self.hidden_layers, self.dropout, self.lr, self.init)
        return [
            ProbeConfig(i, layers, self.hidden_dim, dropout, lr, init)
            for i, (layers, dropout, lr, init) in enumerate(axes)
        ]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(hidden_layers=(1,), dropout=(0.1, 0.25), lr=(1e-4,), init=("xavier_normal",), n_configs=None),
    "hear": dict(
        hidden_layers=(1, 2),
        dropout=(0.1,),
        lr=(3.2e-3, 1e-3, 3.2e-4, 1e-4),
        init=("xavier_uniform", "xavier_normal"),
        n_configs=8,
    ),
}
_TUPLE_FIELDS = ("hidden_layers", "dropout", "lr", "init")


def protocol(name: str, **overrides: Any) -> ProbeProtocol:
    """The named preset ("paper" or "hear") with `overrides` applied.

    Raises ValueError for an unknown preset or override key (naming the allowed ones). A scalar given for a
    grid axis (e.g. `lr=1e-3`) becomes a one-value axis.
    """
    if name not in _PRESETS:
        raise ValueError(f"unknown probe protocol {name!r}; known: {sorted(_PRESETS)}")
    allowed = [f.name for f in dataclasses.fields(ProbeProtocol) if f.name != "name"]
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise ValueError(f"unknown probe protocol override(s) {unknown}; allowed: {allowed}")
    values = {**_PRESETS[name], **overrides}
    for key in _TUPLE_FIELDS:
        if not isinstance(values.get(key, ()), (tuple, list)):
            values[key] = (values[key],)
        if key in values:
            values[key] = tuple(values[key])
    return ProbeProtocol(name=name, **values)


def draw_configs(proto: ProbeProtocol, seed: int) -> list[ProbeConfig]:
    """The configurations a seed trains: the whole grid, or `n_configs` drawn without replacement.

    The draw uses a numpy generator seeded from (seed, _DRAW_STREAM) only, so it is reproducible and
    independent of the other seeds; the drawn configurations are returned in grid order.
    """
    from msmbench.probe.rng import config_draw_rng

    grid = proto.grid()
    if proto.n_configs is None or proto.n_configs >= len(grid):
        return grid
    picked = config_draw_rng(seed).choice(len(grid), size=proto.n_configs, replace=False)
    return [grid[i] for i in sorted(int(i) for i in picked)]


def _validate(p: ProbeProtocol) -> None:
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise ValueError(f"probe protocol {p.name!r}: {what}")

    need(len(p.hidden_layers) > 0 and all(isinstance(n, int) and n >= 1 for n in p.hidden_layers),
         f"hidden_layers must be integers >= 1, got {p.hidden_layers}")
    need(p.hidden_dim >= 1, f"hidden_dim must be >= 1, got {p.hidden_dim}")
    need(len(p.dropout) > 0 and all(0.0 <= d < 1.0 for d in p.dropout), f"dropout must be in [0, 1), got {p.dropout}")
    need(len(p.lr) > 0 and all(lr > 0 for lr in p.lr), f"lr must be > 0, got {p.lr}")
    need(len(p.init) > 0 and all(i in INITS for i in p.init), f"init must be in {INITS}, got {p.init}")
    need(p.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, got {p.optimizer!r}")
    need(p.batch_size >= 2, f"batch_size must be >= 2 (BatchNorm), got {p.batch_size}")
    need(p.check_every >= 1, f"check_every must be >= 1, got {p.check_every}")
    need(p.max_epochs >= p.check_every, f"max_epochs ({p.max_epochs}) must be >= check_every ({p.check_every})")
    need(p.patience >= 1, f"patience must be >= 1, got {p.patience}")
    need(p.n_configs is None or p.n_configs >= 1, f"n_configs must be None or >= 1, got {p.n_configs}")
