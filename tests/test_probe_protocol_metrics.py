"""Probe protocol presets and overrides; metrics (accuracy, mAP vs brute force) and the seed CI."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from msmbench.probe import EarlyStopping, draw_configs, mean_average_precision, mean_ci95, protocol, score
from msmbench.probe.metrics import average_precision


# ---------------------------------------------------------------- protocol
def test_paper_preset_is_spec7():
    p = protocol("paper")
    grid = p.grid()
    assert [(c.hidden_layers, c.hidden_dim, c.dropout, c.lr, c.init) for c in grid] == [
        (1, 1024, 0.1, 1e-4, "xavier_normal"), (1, 1024, 0.25, 1e-4, "xavier_normal")]
    assert (p.batch_size, p.max_epochs, p.check_every, p.patience, p.optimizer) == (1024, 500, 3, 20, "adam")
    assert draw_configs(p, 0) == grid  # n_configs None: the whole grid


def test_hear_preset_draws_8_of_16_per_seed():
    p = protocol("hear")
    grid = p.grid()
    assert len(grid) == 16 and {c.dropout for c in grid} == {0.1} and {c.hidden_layers for c in grid} == {1, 2}
    assert {c.lr for c in grid} == {3.2e-3, 1e-3, 3.2e-4, 1e-4}
    assert {c.init for c in grid} == {"xavier_uniform", "xavier_normal"}
    draws = {s: draw_configs(p, s) for s in range(5)}
    for s, d in draws.items():
        assert len(d) == 8 and len({c.config_id for c in d}) == 8
        assert all(grid[c.config_id] == c for c in d)
        assert draw_configs(p, s) == d  # reproducible
    assert len({tuple(c.config_id for c in d) for d in draws.values()}) > 1  # seeds draw differently


def test_protocol_overrides():
    p = protocol("paper", lr=1e-3, max_epochs=9)
    assert p.lr == (1e-3,) and p.max_epochs == 9 and p.name == "paper"
    with pytest.raises(ValueError, match=r"bogus.*allowed.*patience"):
        protocol("paper", bogus=1)
    with pytest.raises(ValueError, match="unknown probe protocol"):
        protocol("nope")
    with pytest.raises(ValueError, match="init"):
        protocol("paper", init="kaiming")


def test_early_stopping_counts_checks_and_keeps_first_best():
    stop = EarlyStopping(patience=2)
    flags = [stop.update(s, e) for s, e in [(0.5, 3), (0.7, 6), (0.7, 9)]]
    assert flags == [True, True, False] and not stop.stopped  # a tie is no improvement
    assert not stop.update(0.6, 12) and stop.stopped  # 2 checks without improvement
    assert (stop.best, stop.best_epoch) == (0.7, 6)


# ---------------------------------------------------------------- metrics
def test_top1_accuracy():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 5.0], [4.0, 0.0, 0.0]])
    y = torch.tensor([0, 1, 1, 0])
    assert score("top1_acc", logits, y, "multiclass") == 0.75
    assert score("pitch_acc", logits, y, "multiclass") == 0.75


def brute_force_ap(s: np.ndarray, y: np.ndarray) -> float:
    """AP = sum over distinct thresholds t (descending) of (R(t) - R(previous t)) * P(t)."""
    ap, prev_recall = 0.0, 0.0
    for t in sorted(set(s.tolist()), reverse=True):
        predicted = s >= t
        tp = float((predicted & (y == 1)).sum())
        precision, recall = tp / predicted.sum(), tp / (y == 1).sum()
        ap += (recall - prev_recall) * precision
        prev_recall = recall
    return ap


def test_map_known_value_and_class_without_positives():
    s = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.3], [0.1, 0.4]])
    y = torch.tensor([[1, 0], [0, 0], [1, 0], [0, 0]])  # class 1 has no positive: skipped
    # class 0: ranks 1 (pos), 2 (neg), 3 (pos): AP = 0.5 * 1 + 0.5 * 2/3
    assert mean_average_precision(s, y) == pytest.approx(0.5 + 1 / 3)
    assert math.isnan(average_precision(s, y)[1].item())
    assert math.isnan(mean_average_precision(s, torch.zeros_like(y)))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 40), st.integers(1, 6), st.booleans())
def test_map_matches_brute_force(seed, n, c, ties):
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 4, (n, c)).astype(np.float32) if ties else rng.random((n, c), dtype=np.float32)
    y = (rng.random((n, c)) < 0.3).astype(np.int64)
    expected = [brute_force_ap(s[:, j], y[:, j]) for j in range(c) if y[:, j].any()]
    got = mean_average_precision(torch.from_numpy(s), torch.from_numpy(y))
    if expected:
        assert got == pytest.approx(np.mean(expected), abs=1e-12)
    else:
        assert math.isnan(got)


def test_map_score_uses_sigmoid_probabilities():
    logits = torch.tensor([[3.0, -1.0], [-2.0, 0.5], [0.0, 2.0]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert score("mAP", logits, y, "multilabel") == pytest.approx(1.0)


# ---------------------------------------------------------------- aggregation
def test_ci95_half_width_by_hand():
    mean, half = mean_ci95([1.0, 2.0, 3.0, 4.0])
    t_975_3 = 3.182446305284263  # Student t quantile 0.975, 3 d.o.f. (statistical tables)
    std = math.sqrt(((1.5**2) * 2 + (0.5**2) * 2) / 3)  # sample std, ddof=1
    assert mean == 2.5
    assert half == pytest.approx(t_975_3 * std / 2.0, rel=1e-9)
    mean1, half1 = mean_ci95([0.7])
    assert mean1 == 0.7 and math.isnan(half1)
