"""msmbench.probe: shallow MLP probes on frozen scene embeddings (SPEC section 7), trained batched.

Public API
- `protocol(name, **overrides) -> ProbeProtocol`: the "paper" and "hear" presets.
- `run_probe(features, labels, folds, n_classes, prediction_type, metric, protocol, seeds, ...) -> ProbeResult`.
- `Fold`, `hear_folds(splits)`: train/valid/test assignments of a task's splits.
- `train_batched` (fast path) beside `train_reference` / `ReferenceProbe` (plain path, the oracle).
- `score`, `mean_average_precision`, `top1_accuracy`, `mean_ci95`: metrics and aggregation.

Decisions (each explained where it is implemented)
- Model as HEAR's eval kit: per hidden layer Linear -> BatchNorm1d -> Dropout -> ReLU, then Linear; xavier
  gain 1 for the first layer and sqrt(2) after a ReLU; default nn.Linear biases (core.init_layers).
- The hidden Linears' biases (feeding BatchNorm) are frozen: their exact gradient is zero (reference).
- Early stopping as Lightning's (strict improvement, patience in validation checks, ties keep the earlier
  check); a trailing training batch of one row is skipped (BatchNorm needs two) (core).
- Selection: best fold-0 validation score per seed, ties to the lowest grid index; the chosen
  configuration's fold-0 model is reused, not retrained (run).
- Metrics on softmax/sigmoid outputs as HEAR; pitch_acc == top1_acc; mAP skips classes without
  positives (metrics). One seed: CI half-width NaN, null in JSON.
- Random streams per (seed, config_id, fold): init on CPU (device-independent), batch order and dropout
  on the training device (CPU and CUDA runs differ there) (rng).
"""

from msmbench.probe.batched import StackedAdam, StackedMLP, train_batched
from msmbench.probe.core import EarlyStopping, MemberOutcome, MemberSpec, TrainData
from msmbench.probe.metrics import METRICS, mean_average_precision, mean_ci95, score, top1_accuracy
from msmbench.probe.protocol import ProbeConfig, ProbeProtocol, draw_configs, protocol
from msmbench.probe.reference import ReferenceProbe, load_probe, train_reference
from msmbench.probe.rng import MemberKey
from msmbench.probe.run import Fold, ProbeResult, SeedResult, evaluate_test, hear_folds, run_probe, train_members

__all__ = [
    "METRICS", "EarlyStopping", "Fold", "MemberKey", "MemberOutcome", "MemberSpec", "ProbeConfig", "ProbeProtocol",
    "ProbeResult", "ReferenceProbe", "SeedResult", "StackedAdam", "StackedMLP", "TrainData", "draw_configs",
    "evaluate_test", "hear_folds", "load_probe", "mean_average_precision", "mean_ci95", "protocol", "run_probe",
    "score", "top1_accuracy", "train_batched", "train_members", "train_reference",
]
