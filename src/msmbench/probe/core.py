"""Pieces shared by the plain reference trainer and the batched trainer.

Both trainers build their probes from `init_layers`, draw dropout with `keep_mask`, cut epochs with
`batch_slices`, stop with `EarlyStopping` and hand back `MemberOutcome`s whose `state` is a
`ReferenceProbe` state_dict; sharing these pieces is what makes a batched member's trajectory equal to the
reference's (tests/test_probe_parity.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from msmbench.probe.protocol import ProbeConfig
from msmbench.probe.rng import MemberKey

_INIT_FNS: dict[str, Callable[..., torch.Tensor]] = {
    "xavier_normal": torch.nn.init.xavier_normal_,
    "xavier_uniform": torch.nn.init.xavier_uniform_,
}


@dataclass(frozen=True)
class MemberSpec:
    """One probe to train: its random-stream key and its configuration."""

    key: MemberKey
    config: ProbeConfig


@dataclass
class TrainData:
    """One fold's fit and early-stopping material, already on the training device. No test data here."""

    x_train: torch.Tensor  # [N, d] float32, the fold's train splits concatenated in fold order
    y_train: torch.Tensor  # [N] int64 (multiclass) or [N, C] float32 (multilabel)
    x_valid: torch.Tensor  # [Nv, d]
    y_valid: torch.Tensor  # [Nv] or [Nv, C]


@dataclass
class MemberOutcome:
    """What training one probe leaves: its kept model (best validation check) and its validation record."""

    spec: MemberSpec
    best_score: float  # validation score of the kept model
    best_epoch: int  # epoch (1-based) after which the kept model was validated
    last_epoch: int  # last epoch trained (early stop or max_epochs)
    valid_history: list[float]  # the validation score of every check, in order
    state: dict[str, torch.Tensor] = field(repr=False)  # ReferenceProbe state_dict of the kept model (training device)


@dataclass
class EarlyStopping:
    """Lightning's EarlyStopping + ModelCheckpoint(mode="max") on one monitored validation score.

    An improvement is a strictly larger score (min_delta 0, so ties keep the earlier check); `patience` counts
    validation checks (not epochs) without an improvement. The first check always counts as an improvement
    (so a model is always kept); a NaN score is never an improvement afterwards, and any real score improves
    on a NaN best (Lightning would stop on a non-finite score instead).
    """

    patience: int
    best: float = -math.inf
    best_epoch: int = 0
    wait: int = 0
    stopped: bool = False
    history: list[float] = field(default_factory=list)

    def update(self, score: float, epoch: int) -> bool:
        """Record one validation check; return True if it is the new best (the caller snapshots then)."""
        first = not self.history
        self.history.append(score)
        improved = first or (not math.isnan(score) and (math.isnan(self.best) or score > self.best))
        if improved:
            self.best, self.best_epoch, self.wait = score, epoch, 0
        else:
            self.wait += 1
            self.stopped = self.wait >= self.patience
        return improved


def init_layers(d_in: int, n_out: int, config: ProbeConfig, key: MemberKey) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Initial (weight [out, in], bias [out]) of every Linear: hidden layers, then the output layer.

    As HEAR's eval kit (FullyConnectedPrediction): xavier init with gain calculate_gain(previous activation):
    1 for the first layer (the embedding's activation is unknown, "linear"), sqrt(2) after a ReLU (later
    hidden layers and the output layer). Biases keep nn.Linear's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    Drawn on CPU from the member's "init" stream, weight then bias, layer by layer.
    """
    gen = key.generator("init", "cpu")
    init_fn = _INIT_FNS[config.init]
    dims = [d_in] + [config.hidden_dim] * config.hidden_layers + [n_out]
    layers = []
    for i, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:])):
        gain = torch.nn.init.calculate_gain("linear" if i == 0 else "relu")
        weight = init_fn(torch.empty(fan_out, fan_in), gain=gain, generator=gen)
        bound = 1.0 / math.sqrt(fan_in)
        bias = torch.empty(fan_out).uniform_(-bound, bound, generator=gen)
        layers.append((weight, bias))
    return layers


def dropout_constants(p: float) -> tuple[float, float]:
    """(threshold, scale) of inverted dropout with drop probability p: keep where u >= p, scale 1/(1-p)."""
    return p, 1.0 / (1.0 - p)


def keep_mask(uniform: torch.Tensor, threshold: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Inverted-dropout multiplier from U[0,1) draws: `scale` where uniform >= threshold, else 0.

    threshold and scale are float32 tensors broadcastable to `uniform` ([] in the reference, [K, 1, 1] in
    the batched trainer), so both paths compute bit-identical masks.
    """
    return torch.where(uniform >= threshold, scale, torch.zeros((), dtype=uniform.dtype, device=uniform.device))


def batch_slices(n: int, batch_size: int) -> list[slice]:
    """Consecutive slices of a permutation of n rows; a last batch of a single row is dropped.

    BatchNorm1d cannot normalise one row in training mode (torch raises), so a trailing batch of size 1 is
    skipped, in both trainers alike. Every other row is seen once per epoch.
    """
    if n < 2:
        raise ValueError(f"need at least 2 training rows for BatchNorm, got {n}")
    slices = [slice(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if slices[-1].stop - slices[-1].start == 1:
        slices.pop()
    return slices


def member_losses(logits: torch.Tensor, targets: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """Mean training loss of each member. logits: [..., B, C]; targets [..., B] or [..., B, C] -> [...].

    Cross-entropy on class ids (multiclass) or BCE-with-logits on multi-hot targets (multilabel), each
    averaged over the member's own batch, as torch's default reduction="mean" does for one model.
    """
    if prediction_type == "multiclass":
        flat = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
        return flat.view(targets.shape).mean(-1)
    if prediction_type == "multilabel":
        return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean((-2, -1))
    raise ValueError(f"unknown prediction_type {prediction_type!r}; known: ['multiclass', 'multilabel']")


def state_dict_from_layers(
    linears: list[tuple[torch.Tensor, torch.Tensor]],
    norms: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]],
    steps: int,
) -> dict[str, torch.Tensor]:
    """A ReferenceProbe state_dict from (weight [out, in], bias) per Linear and (gamma, beta, mean, var) per norm.

    ReferenceProbe is nn.Sequential(Linear, BatchNorm1d, Dropout, ReLU) x L + Linear, so hidden layer l has
    its Linear at index 4l and its BatchNorm1d at 4l+1, and the output Linear is at 4L. `steps` is the
    number of training batches seen (BatchNorm1d's num_batches_tracked).
    """
    state: dict[str, torch.Tensor] = {}
    for l, ((w, b), (gamma, beta, mean, var)) in enumerate(zip(linears[:-1], norms)):
        state[f"{4 * l}.weight"], state[f"{4 * l}.bias"] = w, b
        state[f"{4 * l + 1}.weight"], state[f"{4 * l + 1}.bias"] = gamma, beta
        state[f"{4 * l + 1}.running_mean"], state[f"{4 * l + 1}.running_var"] = mean, var
        state[f"{4 * l + 1}.num_batches_tracked"] = torch.tensor(steps, dtype=torch.long, device=w.device)
    w, b = linears[-1]
    state[f"{4 * len(norms)}.weight"], state[f"{4 * len(norms)}.bias"] = w, b
    return state
