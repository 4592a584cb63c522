"""The plain probe: one nn.Sequential trained alone with a torch.optim.Adam. The batched trainer's oracle.

`ReferenceProbe` is HEAR's FullyConnectedPrediction for our settings: per hidden layer
Linear -> BatchNorm1d -> Dropout -> ReLU, then a Linear output layer. Its dropout draws from an explicit
generator (the member's "dropout" stream) instead of torch's global one, so that the same member trained in a
batch gets the same masks. `train_reference` is the readable statement of the training protocol; the
batched trainer (msmbench.probe.batched) must match it member by member.

The bias of each hidden Linear (the one feeding BatchNorm1d) is frozen at its initial value. In training
mode BatchNorm subtracts the batch mean, so that bias's exact gradient is zero; autograd returns rounding
noise (~1e-9) instead, which Adam's normalisation m / sqrt(v) turns into steps of about +-lr: a random walk
that depends only on summation order, so it differs between implementations, devices and thread counts.
Freezing it is HEAR's model under exact arithmetic (Adam's update for a zero gradient is exactly zero), and
makes trajectories reproducible. The output Linear's bias is trained.
"""

from __future__ import annotations

import torch
from torch import nn

from msmbench.probe.core import (
    EarlyStopping,
    MemberOutcome,
    MemberSpec,
    TrainData,
    batch_slices,
    dropout_constants,
    init_layers,
    keep_mask,
)
from msmbench.probe.metrics import score
from msmbench.probe.protocol import ProbeProtocol


class SeededDropout(nn.Module):
    """Inverted dropout (as nn.Dropout: zero with probability p, scale survivors by 1/(1-p)) with its own generator."""

    def __init__(self, p: float, generator: torch.Generator | None):
        super().__init__()
        self.p, self.generator = p, generator
        self.threshold, self.scale = dropout_constants(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        uniform = torch.empty_like(x).uniform_(generator=self.generator)
        threshold = torch.tensor(self.threshold, dtype=x.dtype, device=x.device)
        scale = torch.tensor(self.scale, dtype=x.dtype, device=x.device)
        return x * keep_mask(uniform, threshold, scale)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class ReferenceProbe(nn.Sequential):
    """nn.Sequential((Linear, BatchNorm1d, SeededDropout, ReLU) x hidden_layers, Linear), x: [N, d_in] -> [N, n_out]."""

    def __init__(self, d_in: int, n_out: int, spec: MemberSpec, protocol: ProbeProtocol,
                 device: str | torch.device = "cpu", dropout_generator: torch.Generator | None = None,
                 initialise: bool = True):
        cfg = spec.config
        if initialise:  # the member's seeded init (msmbench.probe.core.init_layers)
            linears = init_layers(d_in, n_out, cfg, spec.key)
        else:  # placeholders, to be overwritten by load_state_dict
            dims = [d_in] + [cfg.hidden_dim] * cfg.hidden_layers + [n_out]
            linears = [(torch.empty(o, i), torch.empty(o)) for i, o in zip(dims[:-1], dims[1:])]
        modules: list[nn.Module] = []
        for weight, bias in linears[:-1]:
            modules += [
                _linear(weight, bias, train_bias=False),
                nn.BatchNorm1d(cfg.hidden_dim, eps=protocol.bn_eps, momentum=protocol.bn_momentum),
                SeededDropout(cfg.dropout, dropout_generator),
                nn.ReLU(),
            ]
        modules.append(_linear(*linears[-1]))
        super().__init__(*modules)
        self.to(device)


def _linear(weight: torch.Tensor, bias: torch.Tensor, train_bias: bool = True) -> nn.Linear:
    """nn.Linear holding the given init; `train_bias=False` freezes the bias (see FROZEN_PRE_NORM_BIAS)."""
    # skip_init: build without nn.Linear's own random init (it would draw from the global generator)
    linear = torch.nn.utils.skip_init(nn.Linear, weight.shape[1], weight.shape[0])
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(bias)
    linear.bias.requires_grad_(train_bias)
    return linear


def train_reference(spec: MemberSpec, data: TrainData, n_classes: int, prediction_type: str, metric: str,
                    protocol: ProbeProtocol, device: str | torch.device = "cpu") -> MemberOutcome:
    """Train one probe alone under `protocol`; keep the model of its best validation check."""
    device = torch.device(device)
    model = ReferenceProbe(data.x_train.shape[1], n_classes, spec, protocol, device,
                           dropout_generator=spec.key.generator("dropout", device))
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=spec.config.lr)
    loss_fn = nn.CrossEntropyLoss() if prediction_type == "multiclass" else nn.BCEWithLogitsLoss()
    order = spec.key.generator("order", device)
    stopper = EarlyStopping(protocol.patience)
    n = len(data.x_train)
    best_state, epoch = None, 0
    for epoch in range(1, protocol.max_epochs + 1):
        model.train()
        perm = torch.randperm(n, generator=order, device=device)
        for rows in batch_slices(n, protocol.batch_size):
            idx = perm[rows]
            loss = loss_fn(model(data.x_train[idx]), data.y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if epoch % protocol.check_every == 0:
            if stopper.update(validation_score(model, data, metric, prediction_type), epoch):
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if stopper.stopped:
                break
    return MemberOutcome(spec, stopper.best, stopper.best_epoch, epoch, stopper.history, best_state)


@torch.no_grad()
def validation_score(model: nn.Module, data: TrainData, metric: str, prediction_type: str) -> float:
    model.eval()
    return score(metric, model(data.x_valid), data.y_valid, prediction_type)


def load_probe(outcome: MemberOutcome, d_in: int, n_out: int, protocol: ProbeProtocol,
               device: str | torch.device = "cpu") -> ReferenceProbe:
    """The kept model of a trained member as a ReferenceProbe in eval mode."""
    model = ReferenceProbe(d_in, n_out, outcome.spec, protocol, device, initialise=False)
    model.load_state_dict(outcome.state)
    return model.eval()
