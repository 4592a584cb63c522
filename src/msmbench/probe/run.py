"""The probe stage: model selection, k-fold training and a single final test evaluation (SPEC section 7).

`run_probe` runs three phases, in this order, for all seeds at once:
1. selection: every seed's configurations are trained on the FIRST fold (train splits fit, valid split
   early-stops); each seed keeps the configuration with the best validation score (ties: lowest grid index).
2. folds: each seed's chosen configuration is trained on every other fold. The chosen configuration's
   fold-0 model is the one trained in phase 1 (its random streams are keyed by (seed, config, fold), so a
   retrain would repeat it exactly).
3. test: `evaluate_test` is the only code that reads test data. It runs once, after all training and
   selection, and scores only the kept models (best validation check) of the chosen configurations.
Phases 1 and 2 read labels through `_FitLabels`, which serves a fold's train and valid splits only. In a
k-fold task a split is the test split of one fold and a train/valid split of others; it is read for those
other folds' training, never for its own fold's. `evaluate_test` calls `labels(test_split)` afresh.

The score of a seed is the mean test score over folds; the result is the mean over seeds and the half-width
of the 95% Student-t interval over seeds (NaN, serialised as null, for a single seed).
"""

from __future__ import annotations

import dataclasses
import math
import platform
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from msmbench.data.hear import Fold, hear_folds  # noqa: F401  (hear_folds re-exported)
from msmbench.io import write_json
from msmbench.probe.batched import train_batched
from msmbench.probe.core import MemberOutcome, MemberSpec, TrainData
from msmbench.probe.metrics import METRICS, mean_ci95, score
from msmbench.probe.protocol import ProbeConfig, ProbeProtocol, draw_configs
from msmbench.probe.reference import load_probe
from msmbench.probe.rng import MemberKey

PREDICTION_TYPES = ("multiclass", "multilabel")


@dataclass
class SeedResult:
    """One seed: the selection, the kept models' validation record and the test scores."""

    seed: int
    chosen: dict[str, Any]  # the chosen ProbeConfig
    selection_scores: dict[int, float]  # config_id -> best fold-0 validation score, for every drawn config
    valid_scores: list[float]  # per fold: validation score of the kept model of the chosen config
    best_epochs: list[int]  # per fold: epoch of the kept model
    last_epochs: list[int]  # per fold: epoch training stopped at
    test_scores: list[float]  # per fold
    test_score: float  # mean over folds


@dataclass
class ProbeResult:
    metric: str
    prediction_type: str
    n_classes: int
    folds: list[dict[str, Any]]
    protocol: dict[str, Any]
    seeds: list[SeedResult]
    mean: float  # mean over seeds of the seeds' test scores
    ci95: float  # half-width of the 95% Student-t interval over seeds; NaN for one seed
    timing: dict[str, float]  # seconds per phase
    environment: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; NaN becomes None (JSON has no NaN)."""
        return _nan_to_none(dataclasses.asdict(self))

    def save(self, path: str) -> None:
        write_json(path, self.to_dict())


def run_probe(
    features: Mapping[str, np.ndarray],
    labels: Callable[[str], np.ndarray],
    folds: Sequence[Fold],
    n_classes: int,
    prediction_type: str,
    metric: str,
    protocol: ProbeProtocol,
    seeds: Sequence[int],
    device: str | torch.device = "cpu",
    progress: bool = True,
    max_group: int | None = None,
) -> ProbeResult:
    """Train and evaluate the probes of one (embedding, task) pair under `protocol`, for every seed.

    features: split -> [N_split, d] float32 scene embeddings, rows in a fixed order.
    labels: split -> [N] int64 class ids (multiclass) or [N, C] multi-hot (multilabel); called lazily,
        once per split for training and once per test split in the final evaluation.
    max_group: most members trained in one batched group (None: no limit); bounds memory, not results.
    """
    _check_args(features, folds, n_classes, prediction_type, metric, seeds)
    device, clock = torch.device(device), _Clock()
    train = dict(n_classes=n_classes, prediction_type=prediction_type, metric=metric, protocol=protocol,
                 device=device, progress=progress, max_group=max_group)
    fit_labels = _FitLabels(labels, n_classes, prediction_type)

    # 1. selection on the first fold
    drawn = {s: draw_configs(protocol, s) for s in seeds}
    data = _train_data(features, fit_labels, folds[0], device)
    specs = [MemberSpec(MemberKey(s, c.config_id, 0), c) for s in seeds for c in drawn[s]]
    selection = train_members(specs, data, desc="probe select", **train)
    chosen = {s: _select([selection[MemberKey(s, c.config_id, 0)] for c in drawn[s]]) for s in seeds}
    kept = {(s, 0): chosen[s] for s in seeds}
    for outcome in selection.values():  # free the models of the configurations not chosen
        if outcome is not chosen[outcome.spec.key.seed]:
            outcome.state = {}
    clock.lap("selection")

    # 2. the chosen configurations on the other folds
    width = data.x_train.shape[1]
    for f in range(1, len(folds)):
        data = _train_data(features, fit_labels, folds[f], device)
        if data.x_train.shape[1] != width:
            raise ValueError(f"fold {f}: feature width {data.x_train.shape[1]} differs from fold 0's {width}")
        specs = [MemberSpec(MemberKey(s, chosen[s].spec.config.config_id, f), chosen[s].spec.config) for s in seeds]
        outcomes = train_members(specs, data, desc=f"probe fold {f}", **train)
        kept.update({(s, f): outcomes[MemberKey(s, chosen[s].spec.config.config_id, f)] for s in seeds})
    del data, fit_labels
    clock.lap("folds")

    # 3. test, once, after all training and selection
    test = evaluate_test(kept, features, labels, folds, n_classes, prediction_type, metric, protocol, device)
    clock.lap("test")
    return _assemble(seeds, drawn, selection, kept, test, folds, n_classes, prediction_type, metric, protocol,
                     clock, device)


def train_members(specs: Sequence[MemberSpec], data: TrainData, n_classes: int, prediction_type: str,
                  metric: str, protocol: ProbeProtocol, device: torch.device, progress: bool = True,
                  max_group: int | None = None, desc: str = "probe") -> dict[MemberKey, MemberOutcome]:
    """Train `specs` on one fold's data: one batched group per depth (chunks of `max_group` members)."""
    by_depth: dict[int, list[MemberSpec]] = defaultdict(list)
    for spec in specs:
        by_depth[spec.config.hidden_layers].append(spec)
    outcomes: dict[MemberKey, MemberOutcome] = {}
    for depth, group in sorted(by_depth.items()):
        size = max_group or len(group)
        for start in range(0, len(group), size):
            chunk = group[start: start + size]
            label = f"{desc} L={depth} K={len(chunk)}"
            for out in train_batched(chunk, data, n_classes, prediction_type, metric, protocol, device,
                                     progress, label):
                outcomes[out.spec.key] = out
    return outcomes


def evaluate_test(kept: Mapping[tuple[int, int], MemberOutcome], features: Mapping[str, np.ndarray],
                  labels: Callable[[str], np.ndarray], folds: Sequence[Fold], n_classes: int,
                  prediction_type: str, metric: str, protocol: ProbeProtocol,
                  device: torch.device) -> dict[tuple[int, int], float]:
    """Test scores of the kept models, keyed (seed, fold). The only reader of test labels and features."""
    scores: dict[tuple[int, int], float] = {}
    for f, fold in enumerate(folds):
        x = torch.as_tensor(np.asarray(features[fold.test], dtype=np.float32), device=device)
        y = _as_targets(labels(fold.test), len(x), n_classes, prediction_type, fold.test).to(device)
        for (seed, kf), outcome in kept.items():
            if kf == f:
                d_in = outcome.state["0.weight"].shape[1]
                if x.ndim != 2 or x.shape[1] != d_in:
                    raise ValueError(f"test split {fold.test!r}: features {tuple(x.shape)}, probe expects width {d_in}")
                model = load_probe(outcome, d_in, n_classes, protocol, device)
                with torch.no_grad():
                    scores[(seed, f)] = score(metric, model(x), y, prediction_type)
    return scores


class _FitLabels:
    """Serves (and caches) labels of the splits a fold trains or validates on; it has no test accessor."""

    def __init__(self, labels: Callable[[str], np.ndarray], n_classes: int, prediction_type: str):
        self._labels, self._n_classes, self._type = labels, n_classes, prediction_type
        self._cache: dict[str, torch.Tensor] = {}

    def fit_splits(self, fold: Fold, names: Sequence[str]) -> list[torch.Tensor]:
        for name in names:
            if name == fold.test or name not in [*fold.train, fold.valid]:
                raise RuntimeError(f"split {name!r} is not a train/valid split of {fold}")
        return [self._get(name) for name in names]

    def _get(self, name: str) -> torch.Tensor:
        if name not in self._cache:
            raw = self._labels(name)
            self._cache[name] = _as_targets(raw, len(raw), self._n_classes, self._type, name)
        return self._cache[name]


def _train_data(features: Mapping[str, np.ndarray], fit_labels: _FitLabels, fold: Fold,
                device: torch.device) -> TrainData:
    """The fold's train (concatenated in fold order) and valid data on `device`."""
    train = list(fold.train)
    shapes = {s: np.shape(features[s]) for s in [*train, fold.valid]}
    if len({shape[1:] for shape in shapes.values()}) != 1 or any(len(shape) != 2 for shape in shapes.values()):
        raise ValueError(f"features must be 2-D with one width across splits, got {shapes}")
    x_train = np.concatenate([np.asarray(features[s], dtype=np.float32) for s in train])
    y_parts = fit_labels.fit_splits(fold, train)
    (y_valid,) = fit_labels.fit_splits(fold, [fold.valid])
    for s, y in zip(train + [fold.valid], y_parts + [y_valid]):
        if len(y) != len(features[s]):
            raise ValueError(f"split {s!r}: {len(features[s])} feature rows but {len(y)} labels")
    x_valid = np.asarray(features[fold.valid], dtype=np.float32)
    return TrainData(torch.as_tensor(x_train, device=device), torch.cat(y_parts).to(device),
                     torch.as_tensor(x_valid, device=device), y_valid.to(device))


def _as_targets(raw: np.ndarray, n_rows: int, n_classes: int, prediction_type: str, split: str) -> torch.Tensor:
    """Checked training/evaluation targets: [N] int64 (multiclass) or [N, C] float32 (multilabel)."""
    y = np.asarray(raw)
    if len(y) != n_rows:
        raise ValueError(f"split {split!r}: expected {n_rows} labels, got {len(y)}")
    if prediction_type == "multiclass":
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"split {split!r}: multiclass labels must be 1-D integers, got {y.dtype} {y.shape}")
        if len(y) and (y.min() < 0 or y.max() >= n_classes):
            raise ValueError(f"split {split!r}: class ids must lie in [0, {n_classes})")
        return torch.as_tensor(y.astype(np.int64))
    if y.ndim != 2 or y.shape[1] != n_classes:
        raise ValueError(f"split {split!r}: multilabel labels must be [N, {n_classes}], got {y.shape}")
    return torch.as_tensor(y.astype(np.float32))


def _select(candidates: Sequence[MemberOutcome]) -> MemberOutcome:
    """Best validation score; ties (and NaN) resolved towards the lowest grid index."""
    ranked = sorted(candidates, key=lambda o: o.spec.config.config_id)
    return max(ranked, key=lambda o: -math.inf if math.isnan(o.best_score) else o.best_score)


def _check_args(features: Mapping[str, np.ndarray], folds: Sequence[Fold], n_classes: int,
                prediction_type: str, metric: str, seeds: Sequence[int]) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction_type {prediction_type!r}; known: {list(PREDICTION_TYPES)}")
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {list(METRICS)}")
    if metric != "mAP" and prediction_type != "multiclass":
        raise ValueError(f"{metric} needs a multiclass task")
    if not folds:
        raise ValueError("need at least one fold")
    if not seeds or len(set(seeds)) != len(seeds) or any(int(s) < 0 for s in seeds):
        raise ValueError(f"seeds must be distinct non-negative integers, got {list(seeds)}")
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    for fold in folds:
        names = [*fold.train, fold.valid, fold.test]
        if len(set(names)) != len(names):
            raise ValueError(f"a split appears twice in {fold}")
        missing = [n for n in names if n not in features]
        if missing:
            raise ValueError(f"no features for split(s) {missing}; have {sorted(features)}")


def _assemble(seeds, drawn, selection, kept, test, folds, n_classes, prediction_type, metric, protocol,
              clock, device) -> ProbeResult:
    per_seed = []
    for s in seeds:
        runs = [kept[(s, f)] for f in range(len(folds))]
        tests = [test[(s, f)] for f in range(len(folds))]
        per_seed.append(SeedResult(
            seed=int(s),
            chosen=runs[0].spec.config.to_dict(),
            selection_scores={c.config_id: selection[MemberKey(s, c.config_id, 0)].best_score for c in drawn[s]},
            valid_scores=[r.best_score for r in runs],
            best_epochs=[r.best_epoch for r in runs],
            last_epochs=[r.last_epoch for r in runs],
            test_scores=tests,
            test_score=float(np.mean(tests)),
        ))
    mean, half = mean_ci95([r.test_score for r in per_seed])
    env = {"device": str(device), "torch": torch.__version__, "numpy": np.__version__,
           "python": platform.python_version()}
    fold_dicts = [{"train": list(f.train), "valid": f.valid, "test": f.test} for f in folds]
    return ProbeResult(metric, prediction_type, n_classes, fold_dicts,
                       protocol.to_dict(), per_seed, mean, half, clock.laps, env)


class _Clock:
    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[f"{name}_s"] = now - self.last
        self.laps["total_s"] = now - self.start
        self.last = now


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj


__all__ = ["Fold", "ProbeConfig", "ProbeResult", "SeedResult", "evaluate_test", "hear_folds", "run_probe",
           "train_members"]
