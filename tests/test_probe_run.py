"""run_probe: fold logic, test-set hygiene, early stopping, determinism, learnability, serialisation."""

import json
import math
from collections.abc import Mapping

import numpy as np
import pytest
import torch

import msmbench.probe.run as run_module
from msmbench.probe import Fold, hear_folds, load_probe, protocol, run_probe, score

SMALL = dict(hidden_dim=32, batch_size=64, max_epochs=12, check_every=3, patience=2)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def clusters(splits, n=90, d=16, c=4, multilabel=False, seed=0):
    """Gaussian class clusters: features per split and labels per split."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(c, d)) * 3
    feats, labs = {}, {}
    for s in splits:
        if multilabel:
            y = (rng.random((n, c)) < 0.35).astype(np.float32)
            y[np.arange(n), rng.integers(0, c, n)] = 1.0
            x = y @ centers
        else:
            y = rng.integers(0, c, n)
            x = centers[y]
        feats[s] = (x + rng.normal(size=(n, d))).astype(np.float32)
        labs[s] = y
    return feats, labs


class Log:
    """Records the order of label reads, feature reads and training calls."""

    def __init__(self, labs, feats):
        self.events, self.labs, self.feats = [], labs, feats

    def labels(self, split):
        self.events.append(("labels", split))
        return self.labs[split]

    def features(self):
        log = self

        class Recording(Mapping):
            def __getitem__(self, split):
                log.events.append(("features", split))
                return log.feats[split]

            def __contains__(self, split):  # presence checks read nothing
                return split in log.feats

            def __iter__(self):
                return iter(log.feats)

            def __len__(self):
                return len(log.feats)

        return Recording()

    def wrap_training(self, monkeypatch):
        real = run_module.train_members

        def recorded(specs, data, **kw):
            self.events.append(("train", tuple(sorted({s.key.fold for s in specs}))))
            out = real(specs, data, **kw)
            self.events.append(("trained", tuple(sorted({s.key.fold for s in specs}))))
            return out

        monkeypatch.setattr(run_module, "train_members", recorded)

    def index(self, event):
        return [i for i, e in enumerate(self.events) if e == event]


# ---------------------------------------------------------------- folds
def test_hear_folds():
    assert hear_folds(["train", "valid", "test"]) == [Fold(["train"], "valid", "test")]
    folds = hear_folds([f"fold{i:02d}" for i in (2, 0, 1, 4, 3)])
    assert folds[0] == Fold(["fold02", "fold03", "fold04"], "fold01", "fold00")
    assert folds[4] == Fold(["fold01", "fold02", "fold03"], "fold00", "fold04")
    for f in folds:
        assert len({*f.train, f.valid, f.test}) == 5


# ---------------------------------------------------------------- hygiene
def test_trainvaltest_test_data_read_once_after_all_training(monkeypatch):
    feats, labs = clusters(["train", "valid", "test"])
    log = Log(labs, feats)
    log.wrap_training(monkeypatch)
    run_probe(log.features(), log.labels, hear_folds(list(feats)), 4, "multiclass", "top1_acc",
              protocol("hear", n_configs=4, **SMALL), seeds=[0, 1], progress=False)
    last_training = max(i for i, e in enumerate(log.events) if e[0] == "trained")
    assert log.index(("labels", "test")) and len(log.index(("labels", "test"))) == 1
    assert min(log.index(("labels", "test"))) > last_training
    assert min(log.index(("features", "test"))) > last_training


def test_kfold_selection_never_reads_its_test_split(monkeypatch):
    splits = [f"fold{i:02d}" for i in range(4)]
    feats, labs = clusters(splits, n=60)
    log = Log(labs, feats)
    log.wrap_training(monkeypatch)
    folds = hear_folds(splits)
    run_probe(log.features(), log.labels, folds, 4, "multiclass", "top1_acc", protocol("paper", **SMALL),
              seeds=[0, 1], progress=False)
    trainings = [i for i, e in enumerate(log.events) if e[0] == "trained"]
    assert len(trainings) == 4  # selection on fold 0, then folds 1, 2, 3
    # the selection phase (fold 0) reads neither labels nor features of fold 0's test split
    assert min(log.index(("labels", "fold00"))) > trainings[0]
    assert min(log.index(("features", "fold00"))) > trainings[0]
    # each fold's training reads only its own train and valid splits
    for f, fold in enumerate(folds):
        start = log.index(("train", (f,)))[0]
        prior_end = trainings[f - 1] if f else -1
        reads = {s for kind, s in log.events[prior_end + 1: start] if kind == "labels"}
        assert fold.test not in reads and reads <= {*fold.train, fold.valid}
    # the final evaluation reads every test split's labels once more, after the last training
    final = log.events[trainings[-1] + 1:]
    assert sorted(s for kind, s in final if kind == "labels") == splits


def test_test_labels_only_change_test_scores():
    feats, labs = clusters(["train", "valid", "test"], seed=3)
    p = protocol("hear", n_configs=3, **SMALL)
    folds = hear_folds(list(feats))
    kwargs = dict(n_classes=4, prediction_type="multiclass", metric="top1_acc", protocol=p, seeds=[0, 1],
                  progress=False)
    base = run_probe(feats, labs.__getitem__, folds, **kwargs)
    rng = np.random.default_rng(0)
    shuffled = {**labs, "test": rng.permutation(labs["test"])}
    other = run_probe(feats, shuffled.__getitem__, folds, **kwargs)
    for a, b in zip(base.seeds, other.seeds):
        assert (a.chosen, a.selection_scores, a.valid_scores, a.best_epochs) == \
            (b.chosen, b.selection_scores, b.valid_scores, b.best_epochs)
    assert [s.test_scores for s in base.seeds] != [s.test_scores for s in other.seeds]


def test_kept_model_is_the_best_validation_check():
    feats, labs = clusters(["train", "valid", "test"], seed=5)
    data = run_module._train_data(feats, run_module._FitLabels(labs.__getitem__, 4, "multiclass"),
                                  Fold(["train"], "valid", "test"), torch.device("cpu"))
    p = protocol("hear", **{**SMALL, "max_epochs": 15, "patience": 3})
    specs = [run_module.MemberSpec(run_module.MemberKey(0, c.config_id, 0), c) for c in p.grid()[:6]]
    for out in run_module.train_members(specs, data, 4, "multiclass", "top1_acc", p, torch.device("cpu"),
                                        progress=False).values():
        first_best = int(np.argmax(out.valid_history))
        assert out.best_score == max(out.valid_history)
        assert out.best_epoch == p.check_every * (first_best + 1)
        model = load_probe(out, 16, 4, p)
        with torch.no_grad():
            assert score("top1_acc", model(data.x_valid), data.y_valid, "multiclass") == pytest.approx(out.best_score)


# ---------------------------------------------------------------- results
def test_kfold_result_structure_and_determinism():
    splits = [f"fold{i:02d}" for i in range(3)]
    feats, labs = clusters(splits, n=60, seed=1)
    args = (feats, labs.__getitem__, hear_folds(splits), 4, "multiclass", "top1_acc",
            protocol("hear", n_configs=3, **SMALL))
    a = run_probe(*args, seeds=[0, 1, 2], progress=False)
    b = run_probe(*args, seeds=[0, 1, 2], progress=False)
    da, db = a.to_dict(), b.to_dict()
    da.pop("timing"), db.pop("timing")
    assert da == db  # deterministic on CPU
    for s in a.seeds:
        assert len(s.test_scores) == 3 and s.test_score == pytest.approx(np.mean(s.test_scores))
        assert s.chosen["config_id"] in s.selection_scores and len(s.selection_scores) == 3
        assert s.valid_scores[0] == max(s.selection_scores.values())
    scores = [s.test_score for s in a.seeds]
    assert a.mean == pytest.approx(np.mean(scores))
    text = json.dumps(a.to_dict(), allow_nan=False)
    assert json.loads(text)["protocol"]["name"] == "hear"


def test_learnable_multiclass_and_multilabel(tmp_path):
    p = protocol("paper", hidden_dim=32, batch_size=64, lr=1e-3, max_epochs=60, check_every=3, patience=5)
    feats, labs = clusters(["train", "valid", "test"], n=150, seed=2)
    r = run_probe(feats, labs.__getitem__, hear_folds(list(feats)), 4, "multiclass", "top1_acc",
                  p, seeds=[0], progress=False)
    assert r.mean > 0.9
    assert math.isnan(r.ci95) and r.to_dict()["ci95"] is None  # one seed: no interval
    feats, labs = clusters(["train", "valid", "test"], n=200, c=5, multilabel=True, seed=4)
    r = run_probe(feats, labs.__getitem__, hear_folds(list(feats)), 5, "multilabel", "mAP",
                  p, seeds=[0, 1], progress=False)
    assert r.mean > 0.9 and r.ci95 >= 0
    r.save(tmp_path / "probe.json")
    assert json.loads((tmp_path / "probe.json").read_text())["metric"] == "mAP"


def test_bad_inputs_are_rejected():
    feats, labs = clusters(["train", "valid", "test"], n=30)
    folds = hear_folds(list(feats))
    p = protocol("paper", **SMALL)
    with pytest.raises(ValueError, match="metric"):
        run_probe(feats, labs.__getitem__, folds, 4, "multiclass", "acc", p, seeds=[0], progress=False)
    with pytest.raises(ValueError, match="class ids"):
        run_probe(feats, lambda s: labs[s] + 4, folds, 4, "multiclass", "top1_acc", p, seeds=[0], progress=False)
    with pytest.raises(ValueError, match="seeds"):
        run_probe(feats, labs.__getitem__, folds, 4, "multiclass", "top1_acc", p, seeds=[0, 0], progress=False)
