"""The probe stage on CUDA: batched vs reference parity and a learnable run (skipped without a GPU)."""

import numpy as np
import pytest
import torch

from msmbench.probe import MemberKey, MemberSpec, hear_folds, protocol, run_probe, train_batched, train_reference

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_cuda_parity_batched_vs_reference():
    from test_probe_parity import assert_same, random_data  # same helpers as the CPU parity test

    p = protocol("hear", hidden_dim=64, dropout=(0.1, 0.25), batch_size=64, max_epochs=6, check_every=1,
                 patience=2)
    cpu = random_data(300, 24, 5, multilabel=False)
    data = type(cpu)(*(t.cuda() for t in (cpu.x_train, cpu.y_train, cpu.x_valid, cpu.y_valid)))
    configs = [c for c in p.grid() if c.hidden_layers == 1]
    specs = [MemberSpec(MemberKey(s, c.config_id, 0), c) for s, c in enumerate(configs)]
    batched = train_batched(specs, data, 5, "multiclass", "top1_acc", p, device="cuda", progress=False)
    reference = [train_reference(s, data, 5, "multiclass", "top1_acc", p, device="cuda") for s in specs]
    assert_same(batched, reference)


def test_cuda_run_probe_learns():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 16)) * 3
    feats, labs = {}, {}
    for s in ("train", "valid", "test"):
        y = rng.integers(0, 4, 150)
        feats[s], labs[s] = (centers[y] + rng.normal(size=(150, 16))).astype(np.float32), y
    p = protocol("paper", hidden_dim=32, batch_size=64, lr=1e-3, max_epochs=60, check_every=3, patience=5)
    r = run_probe(feats, labs.__getitem__, hear_folds(list(feats)), 4, "multiclass", "top1_acc", p,
                  seeds=[0, 1], device="cuda", progress=False)
    assert r.mean > 0.9 and r.environment["device"] == "cuda"
