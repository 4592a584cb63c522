"""Batched probe training: K independent probes trained as one stacked model (the fast path).

All members of a group share the training data (one fold), the depth and the hidden width; everything else
is per member: configuration (dropout, lr, init), seed, batch order, dropout masks, Adam state, BatchNorm
statistics, early stopping and best snapshot. Parameters are stacked on a leading member axis
(weight [K, in, out]) and every Linear is one `torch.baddbmm`.

Why a member's trajectory equals training it alone (`train_reference`, checked by tests/test_probe_parity.py):
- Data: member k gathers its own batch `x[perm_k[rows]]` with its own permutation from its own generator.
- BatchNorm: members are laid side by side as channels ([B, K*h]) and normalised by F.batch_norm, whose
  statistics are per channel, i.e. per member and unit, over the member's own batch only.
- Dropout: member k's masks come from its own generator, drawn with the same shapes in the same order.
- Loss: the summed per-member mean losses; member k's parameters get only member k's loss gradient.
- The hidden Linears' biases (before BatchNorm) are frozen in both paths (reason in msmbench.probe.reference).
- Adam is elementwise: every moment and update of a parameter entry depends only on that entry's gradient
  history, so one Adam over the stacked tensors equals K separate Adams. The learning rate only scales the
  final update, so a per-member lr is a per-slice step size ([K, 1, 1]); `StackedAdam` repeats
  torch.optim.Adam's single-tensor arithmetic with that step size (betas 0.9/0.999, eps 1e-8).
- Early stopping: each member has its own `EarlyStopping` and snapshot. A stopped member is finalised and
  removed from the stack at the check where it stops ("compaction"); the rest go on unchanged, since no
  quantity couples members. The group ends when every member has stopped or at max_epochs.
Equality is up to float rounding (a batched matmul may sum in another order than a single one).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from msmbench.probe.core import (
    EarlyStopping,
    MemberOutcome,
    MemberSpec,
    TrainData,
    batch_slices,
    dropout_constants,
    init_layers,
    keep_mask,
    member_losses,
    state_dict_from_layers,
)
from msmbench.probe.metrics import score
from msmbench.probe.protocol import ProbeProtocol

_EVAL_ELEMENTS = 1 << 25  # rows per validation chunk are chosen so K * rows * width stays under this


class StackedMLP:
    """K probes of equal shape: (Linear, BatchNorm1d, Dropout, ReLU) x L, Linear, stacked on axis 0.

    weights[l]: [K, in, out]; biases[l]: [K, 1, out]; gammas/betas/running_means/running_vars[l]: [K, 1, h];
    threshold/scale: [K, 1, 1] dropout constants per member.
    """

    def __init__(self, specs: Sequence[MemberSpec], d_in: int, n_out: int, protocol: ProbeProtocol,
                 device: torch.device):
        depth = {s.config.hidden_layers for s in specs}
        width = {s.config.hidden_dim for s in specs}
        if len(depth) != 1 or len(width) != 1:
            raise ValueError(f"a batched group needs one depth and width, got {sorted(depth)}, {sorted(width)}")
        K, L, h = len(specs), depth.pop(), width.pop()
        inits = [init_layers(d_in, n_out, s.config, s.key) for s in specs]
        self.weights = [_leaf(torch.stack([m[l][0].T for m in inits]), device) for l in range(L + 1)]
        self.biases = [_leaf(torch.stack([m[l][1] for m in inits]).unsqueeze(1), device) for l in range(L + 1)]
        for b in self.biases[:-1]:  # frozen pre-BatchNorm biases (see msmbench.probe.reference)
            b.requires_grad_(False)
        self.gammas = [_leaf(torch.ones(K, 1, h), device) for _ in range(L)]
        self.betas = [_leaf(torch.zeros(K, 1, h), device) for _ in range(L)]
        self.running_means = [torch.zeros(K, 1, h, device=device) for _ in range(L)]
        self.running_vars = [torch.ones(K, 1, h, device=device) for _ in range(L)]
        constants = torch.tensor([dropout_constants(s.config.dropout) for s in specs], dtype=torch.float32)
        self.threshold = constants[:, 0].view(K, 1, 1).to(device)
        self.scale = constants[:, 1].view(K, 1, 1).to(device)
        self.eps, self.momentum = protocol.bn_eps, protocol.bn_momentum
        self.depth, self.width = L, h

    # ---------------------------------------------------------------- state
    def parameters(self) -> list[torch.Tensor]:
        """The trained tensors. Hidden-layer biases (before BatchNorm) are frozen, as in ReferenceProbe."""
        return self.weights + self.biases[-1:] + self.gammas + self.betas

    def tensors(self) -> list[torch.Tensor]:
        """Everything a kept model needs (parameters and BatchNorm statistics), in a fixed order."""
        return self.weights + self.biases + self.gammas + self.betas + self.running_means + self.running_vars

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the members at positions `keep` (compaction after early stops)."""
        def cut(ts: list[torch.Tensor]) -> list[torch.Tensor]:
            return [t.detach()[keep].requires_grad_(t.requires_grad) for t in ts]

        self.weights, self.biases = cut(self.weights), cut(self.biases)
        self.gammas, self.betas = cut(self.gammas), cut(self.betas)
        self.running_means, self.running_vars = cut(self.running_means), cut(self.running_vars)
        self.threshold, self.scale = self.threshold[keep], self.scale[keep]

    def member_state(self, tensors: list[torch.Tensor], k: int, steps: int) -> dict[str, torch.Tensor]:
        """Member k of `tensors` (laid out as `tensors()`) as a ReferenceProbe state_dict (copies, same device)."""
        L = self.depth
        ws, bs = tensors[: L + 1], tensors[L + 1: 2 * L + 2]
        gs, betas, rms, rvs = (tensors[2 * L + 2 + i * L: 2 * L + 2 + (i + 1) * L] for i in range(4))
        copy = lambda t: t.detach().clone(memory_format=torch.contiguous_format)  # noqa: E731
        linears = [(copy(w[k].T), copy(b[k, 0])) for w, b in zip(ws, bs)]
        norms = [(copy(g[k, 0]), copy(be[k, 0]), copy(m[k, 0]), copy(v[k, 0]))
                 for g, be, m, v in zip(gs, betas, rms, rvs)]
        return state_dict_from_layers(linears, norms, steps)

    # ---------------------------------------------------------------- forward
    def forward_train(self, x: torch.Tensor, uniforms: list[torch.Tensor]) -> torch.Tensor:
        """x: [K, B, d_in] (each member's own batch); uniforms[l]: [K, B, h] dropout draws -> logits [K, B, C]."""
        for l in range(self.depth):
            x = torch.baddbmm(self.biases[l], x, self.weights[l])
            x = self._batch_norm(x, l, training=True)
            x = torch.relu(x * keep_mask(uniforms[l], self.threshold, self.scale))
        return torch.baddbmm(self.biases[-1], x, self.weights[-1])

    @torch.no_grad()
    def forward_eval(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, d_in] shared by all members -> logits [K, N, C] (BatchNorm on running stats, no dropout).

        The first Linear of all members is one GEMM against the weights laid side by side ([d_in, K*h]).
        """
        K, d_in, h = self.weights[0].shape
        w0 = self.weights[0].permute(1, 0, 2).reshape(d_in, K * h)
        b0 = self.biases[0].permute(1, 0, 2).reshape(1, K * h)
        rows = max(1, _EVAL_ELEMENTS // (K * max(h, d_in)))
        out = []
        for start in range(0, len(x), rows):
            z = torch.addmm(b0, x[start: start + rows], w0).view(-1, K, h).transpose(0, 1)  # [K, n, h]
            for l in range(self.depth):
                if l > 0:
                    z = torch.baddbmm(self.biases[l], z, self.weights[l])
                z = torch.relu(self._batch_norm(z, l, training=False))
            out.append(torch.baddbmm(self.biases[-1], z, self.weights[-1]))
        return torch.cat(out, dim=1)

    def _batch_norm(self, x: torch.Tensor, l: int, training: bool) -> torch.Tensor:
        """BatchNorm1d per member: members side by side as channels, x: [K, B, h] -> [K, B, h].

        F.batch_norm on [B, K*h] keeps one mean/var per channel = per (member, unit), over that member's
        batch only, and updates the running statistics in place (through the [K*h] views).
        """
        K, B, h = x.shape
        flat = x.transpose(0, 1).reshape(B, K * h)
        y = F.batch_norm(flat, self.running_means[l].view(K * h), self.running_vars[l].view(K * h),
                         self.gammas[l].view(K * h), self.betas[l].view(K * h),
                         training=training, momentum=self.momentum, eps=self.eps)
        return y.view(B, K, h).transpose(0, 1).contiguous()  # contiguous: the next ops run faster on it


def _leaf(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    return t.to(device=device, dtype=torch.float32).contiguous().requires_grad_()


class StackedAdam:
    """torch.optim.Adam (betas 0.9/0.999, eps 1e-8, no weight decay) with one learning rate per member.

    Same arithmetic as torch's single-tensor Adam; the step size lr_k / (1 - beta1^t) is a [K, 1, 1] tensor.
    """

    def __init__(self, lrs: Sequence[float], betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.lrs, self.betas, self.eps = list(lrs), betas, eps
        self.t = 0
        self.exp_avg: list[torch.Tensor] | None = None
        self.exp_avg_sq: list[torch.Tensor] | None = None

    @torch.no_grad()
    def step(self, params: list[torch.Tensor], grads: Sequence[torch.Tensor]) -> None:
        if self.exp_avg is None:
            self.exp_avg = [torch.zeros_like(p) for p in params]
            self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        beta1, beta2 = self.betas
        self.t += 1
        bias_correction1 = 1 - beta1 ** self.t
        bias_correction2_sqrt = (1 - beta2 ** self.t) ** 0.5
        neg_step = torch.tensor([-lr / bias_correction1 for lr in self.lrs], dtype=torch.float32,
                                device=params[0].device).view(-1, 1, 1)
        for p, g, m, v in zip(params, grads, self.exp_avg, self.exp_avg_sq):
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            denom = (v.sqrt() / bias_correction2_sqrt).add_(self.eps)
            p.add_(torch.mul(m, neg_step).div_(denom))  # = addcdiv(p, m, denom, value=-step): (value * m) / denom

    def select(self, keep: torch.Tensor) -> None:
        self.lrs = [self.lrs[i] for i in keep.tolist()]
        if self.exp_avg is not None:
            self.exp_avg = [m[keep] for m in self.exp_avg]
            self.exp_avg_sq = [v[keep] for v in self.exp_avg_sq]


def train_batched(specs: Sequence[MemberSpec], data: TrainData, n_classes: int, prediction_type: str,
                  metric: str, protocol: ProbeProtocol, device: str | torch.device = "cpu",
                  progress: bool = True, desc: str = "probe") -> list[MemberOutcome]:
    """Train every member of `specs` on `data` at once; return their outcomes in the order of `specs`."""
    group = BatchedGroup(specs, data, n_classes, prediction_type, metric, protocol, torch.device(device))
    with tqdm(total=protocol.max_epochs, desc=desc, disable=not progress, leave=False) as bar:
        for epoch in range(1, protocol.max_epochs + 1):
            group.train_epoch()
            if epoch % protocol.check_every == 0:
                group.validate(epoch)
            bar.update(1)
            bar.set_postfix(active=len(group.members))
            if not group.members:
                break
    return group.finish()


class BatchedGroup:
    """The training state of one batched group: the stack, its optimiser, and per-member bookkeeping.

    `members[k]` is the index (into `specs`) of the member at stack position k; stopped members are
    finalised into `outcomes` and removed from every per-position structure.
    """

    def __init__(self, specs: Sequence[MemberSpec], data: TrainData, n_classes: int, prediction_type: str,
                 metric: str, protocol: ProbeProtocol, device: torch.device):
        self.specs, self.data, self.protocol, self.device = list(specs), data, protocol, device
        self.prediction_type, self.metric = prediction_type, metric
        self.model = StackedMLP(specs, data.x_train.shape[1], n_classes, protocol, device)
        self.adam = StackedAdam([s.config.lr for s in specs])
        self.members = list(range(len(specs)))
        self.order = [s.key.generator("order", device) for s in specs]  # per stack position
        self.dropout = [s.key.generator("dropout", device) for s in specs]  # per stack position
        self.stoppers = [EarlyStopping(protocol.patience) for _ in specs]  # per member
        self.best = [t.detach().clone() for t in self.model.tensors()]  # snapshot, per stack position
        self.best_steps = [0] * len(specs)  # per member: training steps behind its snapshot
        self.outcomes: list[MemberOutcome | None] = [None] * len(specs)
        self.steps, self.epoch = 0, 0

    def train_epoch(self) -> None:
        """One epoch: each member its own permutation, batches and dropout masks; one Adam step per batch."""
        x, y = self.data.x_train, self.data.y_train
        perms = torch.stack([torch.randperm(len(x), generator=g, device=self.device) for g in self.order])
        for rows in batch_slices(len(x), self.protocol.batch_size):
            idx = perms[:, rows]  # [K, B]: each member's own batch
            uniforms = [_uniforms(self.dropout, idx.shape, self.model.width, self.device)
                        for _ in range(self.model.depth)]
            logits = self.model.forward_train(x[idx], uniforms)
            loss = member_losses(logits, y[idx], self.prediction_type).sum()
            params = self.model.parameters()
            self.adam.step(params, torch.autograd.grad(loss, params))
            self.steps += 1
        self.epoch += 1

    def validate(self, epoch: int) -> None:
        """Score every member on the validation split; snapshot improvements; retire stopped members."""
        logits = self.model.forward_eval(self.data.x_valid)
        improved = []
        for k, i in enumerate(self.members):
            valid = score(self.metric, logits[k], self.data.y_valid, self.prediction_type)
            if self.stoppers[i].update(valid, epoch):
                improved.append(k)
                self.best_steps[i] = self.steps
        _snapshot(self.best, self.model.tensors(), improved)
        self._retire([k for k, i in enumerate(self.members) if self.stoppers[i].stopped])

    def finish(self) -> list[MemberOutcome]:
        """Finalise the members still training (max_epochs reached); all outcomes in `specs` order."""
        self._retire(list(range(len(self.members))))
        return self.outcomes  # type: ignore[return-value]

    def _retire(self, positions: list[int]) -> None:
        """Finalise the members at `positions` from their snapshots and remove them from the stack."""
        if not positions:
            return
        for k in positions:
            i, stop = self.members[k], self.stoppers[self.members[k]]
            state = self.model.member_state(self.best, k, self.best_steps[i])
            self.outcomes[i] = MemberOutcome(self.specs[i], stop.best, stop.best_epoch, self.epoch,
                                             stop.history, state)
        keep = [k for k in range(len(self.members)) if k not in set(positions)]
        self.members = [self.members[k] for k in keep]
        self.order = [self.order[k] for k in keep]
        self.dropout = [self.dropout[k] for k in keep]
        if keep:  # no quantity couples members, so the others go on unchanged
            index = torch.tensor(keep, dtype=torch.long, device=self.device)
            self.model.select(index)
            self.adam.select(index)
            self.best = [t[index] for t in self.best]


def _uniforms(gens: list[torch.Generator], idx_shape: torch.Size, width: int, device: torch.device) -> torch.Tensor:
    """[K, B, h] U[0,1) draws, member k's slice from its own generator (as SeededDropout draws [B, h])."""
    out = torch.empty(idx_shape[0], idx_shape[1], width, device=device)
    for k, g in enumerate(gens):
        out[k].uniform_(generator=g)
    return out


@torch.no_grad()
def _snapshot(best: list[torch.Tensor], current: list[torch.Tensor], members: list[int]) -> None:
    """Copy the current state of the stack positions `members` into the snapshot."""
    if not members:
        return
    idx = torch.tensor(members, dtype=torch.long, device=best[0].device)
    for b, c in zip(best, current):
        b.index_copy_(0, idx, c.detach().index_select(0, idx))
