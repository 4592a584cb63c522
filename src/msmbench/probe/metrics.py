"""Task metrics of the probe stage and the aggregation over seeds (SPEC sections 7 and 8).

Scores are computed from the probe's output activations as HEAR's eval kit does (heareval/score.py):
softmax probabilities for multiclass tasks, sigmoid probabilities for multilabel tasks.

- top1_acc:  fraction of rows whose argmax (first index on ties, as numpy) equals the target class.
- pitch_acc: HEAR registers it as Top1Accuracy under another name; with our integer pitch-class labels it
             is exactly top1_acc (the octave-tolerant score is "chroma_acc", which no task here uses).
- mAP:       macro average precision over classes, scikit-learn's definition
             AP = sum_n (R_n - R_{n-1}) P_n over the distinct score thresholds (tied scores form one
             threshold). Classes with no positive row in the evaluated split are skipped (AP undefined);
             if no class has a positive, mAP is NaN.
"""

from __future__ import annotations

import math

import torch

from msmbench.stats import mean_ci95  # noqa: F401  (re-exported: the probe's aggregation over seeds)

METRICS = ("top1_acc", "pitch_acc", "mAP")


def predict_proba(logits: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """Output activations: softmax over classes (multiclass) or elementwise sigmoid (multilabel)."""
    if prediction_type == "multiclass":
        return torch.softmax(logits, dim=-1)
    if prediction_type == "multilabel":
        return torch.sigmoid(logits)
    raise ValueError(f"unknown prediction_type {prediction_type!r}; known: ['multiclass', 'multilabel']")


def score(metric: str, logits: torch.Tensor, targets: torch.Tensor, prediction_type: str) -> float:
    """The task metric of one probe's predictions.

    logits: [N, C]; targets: [N] int64 class ids (multiclass) or [N, C] multi-hot (multilabel).
    """
    proba = predict_proba(logits, prediction_type)
    if metric in ("top1_acc", "pitch_acc"):
        if prediction_type != "multiclass":
            raise ValueError(f"{metric} needs a multiclass task, got {prediction_type}")
        return top1_accuracy(proba, targets)
    if metric == "mAP":
        if targets.ndim == 1:  # multiclass targets: score them one-hot, as HEAR stores them
            targets = torch.nn.functional.one_hot(targets, proba.shape[-1])
        return mean_average_precision(proba, targets)
    raise ValueError(f"unknown metric {metric!r}; known: {list(METRICS)}")


def top1_accuracy(proba: torch.Tensor, targets: torch.Tensor) -> float:
    """proba: [N, C]; targets: [N] class ids. Fraction of rows with argmax == target."""
    return (proba.argmax(dim=-1) == targets).double().mean().item()


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-class average precision, scikit-learn's step-wise definition, vectorised over classes.

    scores, targets: [N, C]. Returns [C] float64, NaN for a class without positives. Rows are sorted by
    descending score; a threshold ends at the last row of each group of tied scores; at that row precision
    is tp / rows_so_far and the recall step is the number of positives gained since the previous threshold.
    """
    order = torch.argsort(scores, dim=0, descending=True, stable=True)
    s = scores.gather(0, order)
    y = targets.gather(0, order).to(torch.float64)
    tps = y.cumsum(0)  # true positives among the top n rows
    precision = tps / torch.arange(1, len(s) + 1, device=s.device, dtype=torch.float64).unsqueeze(1)
    ends = torch.ones_like(s, dtype=torch.bool)
    ends[:-1] = s[:-1] != s[1:]  # last row of each tie group = one distinct threshold
    tps_at_ends = torch.where(ends, tps, torch.zeros_like(tps))
    tps_prev = torch.zeros_like(tps)
    tps_prev[1:] = tps_at_ends.cummax(0).values[:-1]  # tps at the previous threshold (tps is non-decreasing)
    gained = torch.where(ends, tps - tps_prev, torch.zeros_like(tps))
    positives = y.sum(0)
    ap = (gained * precision).sum(0) / positives
    return torch.where(positives > 0, ap, torch.full_like(ap, math.nan))


def mean_average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Macro mAP over the classes that have at least one positive; NaN if none has."""
    ap = average_precision(scores, targets)
    ap = ap[~torch.isnan(ap)]
    return ap.mean().item() if len(ap) else math.nan
