"""msmbench.data.synth: the embedded synthetic suite is deterministic, valid HEAR, balanced, and
disjoint from its pretraining corpus."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from msmbench.audio.io import to_pcm16
from msmbench.data import synth
from msmbench.data.hear import load_task
from msmbench.io import sha256_file

TINY = 0.01  # every task at its minimum size: each label once per fold / split
PAPER_CLIP_SECONDS = {"percussion": 4.77, "emotion": 5.0, "events": 5.0, "count": 5.0, "stroke": 0.81,
                      "tonic": 0.81, "pitch": 4.0, "commands": 1.0, "multilabel": 30.0, "language": 18.64}
PAPER_CLASSES = {"percussion": 4, "emotion": 6, "events": 50, "count": 11, "stroke": 10, "tonic": 6,
                 "commands": 12, "language": 10}


def hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def wav_hashes(root: Path) -> set[str]:
    return {sha256_file(p) for p in root.rglob("*.wav")}


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("suite")
    synth.generate_suite(root, seed=7, scale=TINY, pretrain_clips=12)
    return root


def test_registry_mirrors_the_paper():
    assert list(synth.TASKS) == ["percussion", "emotion", "events", "count", "stroke", "tonic", "pitch",
                                 "commands", "multilabel", "language"]
    for name, spec in synth.TASKS.items():
        assert spec.clip_seconds <= PAPER_CLIP_SECONDS[name]
        assert 300 <= spec.clips <= 1000
        assert spec.n_classes == PAPER_CLASSES.get(name, spec.n_classes)
        assert len(synth.LABEL_NAMES[spec.recipe][spec.label_axis]) == spec.n_classes
        assert len(synth.plan_task(spec, 0, 1.0)) == spec.clips
    assert synth.TASKS["pitch"].metric == "pitch_acc" and synth.TASKS["multilabel"].metric == "mAP"
    assert synth.TASKS["events"].split_mode == "presplit_kfold"
    assert {s.split_mode for s in synth.TASKS.values()} == {"new_split_kfold", "presplit_kfold", "trainvaltest"}


@pytest.mark.parametrize("name", list(synth.TASKS))
def test_tiny_task_is_valid_and_complete(suite, name):
    spec = synth.TASKS[name]
    task = load_task(suite / name, check_splits=True)
    assert task.check_audio(deep=True) == len(synth.plan_task(spec, 7, TINY))
    assert task.name == name and task.metric == spec.metric and task.split_mode == spec.split_mode
    assert task.prediction_type == spec.prediction_type and len(task.vocabulary) == spec.n_classes
    assert task.metadata.get("nfolds") == spec.nfolds
    assert task.metadata["version"] == "synth-1.0" and task.metadata["mode"] == "full"
    assert task.metadata["synthetic"] == {"generator": "msmbench.data.synth", "seed": 7, "scale": TINY,
                                          "mirrors": spec.mirrors}
    for split in task.splits:  # every label in every split or fold
        present = {label for labels in task.split_labels(split).values() for label in labels}
        assert present == set(task.vocabulary), split


def test_scale_grows_counts_and_keeps_balance():
    spec = synth.TASKS["percussion"]
    for scale, per_class in [(TINY, 5), (0.5, 38), (1.0, 75)]:
        plans = synth.plan_task(spec, 0, scale)
        counts = np.bincount([p.factors[0] for p in plans])
        assert counts.tolist() == [per_class] * 4
    labels = [p.factors for p in synth.plan_task(spec, 0, 1.0)]
    assert labels != sorted(labels)  # clip indices are shuffled: file names say nothing about labels


def test_same_seed_same_bytes_any_worker_count(tmp_path):
    for name in ("percussion", "commands"):
        a = synth.generate_task(name, tmp_path / "a", seed=3, scale=TINY)
        b = synth.generate_task(name, tmp_path / "b", seed=3, scale=TINY, workers=2)
        assert hashes(a) == hashes(b)


def test_clip_depends_only_on_its_seed(suite):
    spec = synth.TASKS["emotion"]
    plan = synth.plan_task(spec, 7, TINY)[-1]
    audio = synth.render_clip(spec, 7, plan)  # rendered alone, out of order
    written = (suite / "emotion" / "16000" / plan.split / plan.filename).read_bytes()[44:]
    assert written == to_pcm16("", audio).astype("<i2").tobytes()


def test_different_seed_different_audio(suite, tmp_path):
    other = synth.generate_task("percussion", tmp_path, seed=8, scale=TINY)
    assert not wav_hashes(other) & wav_hashes(suite / "percussion")


def test_stroke_and_tonic_share_clips(suite):
    stroke, tonic = load_task(suite / "stroke"), load_task(suite / "tonic")
    assert stroke.splits == tonic.splits
    for split in stroke.splits:
        assert stroke.split_files(split) == tonic.split_files(split)
        for f in stroke.split_files(split):
            assert stroke.audio_path(split, f).read_bytes() == tonic.audio_path(split, f).read_bytes()
    strokes, tonics = stroke.split_labels("fold00"), tonic.split_labels("fold00")
    pairs = {(strokes[f][0], tonics[f][0]) for f in strokes}
    assert len(pairs) > 1


def test_pretrain_corpus(suite):
    corpus = suite / "pretrain"
    with open(corpus / "files.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and list(rows[0]) == ["path", "seconds", "sha256"]
    assert [r["path"] for r in rows] == [f"audio/clip_{i:05d}.wav" for i in range(12)]
    for r in rows:
        assert sha256_file(corpus / r["path"]) == r["sha256"]
        assert 2.0 <= float(r["seconds"]) <= 4.0
    task_clips = set().union(*(wav_hashes(suite / name) for name in synth.TASKS))
    assert not {r["sha256"] for r in rows} & task_clips
    assert len({r["sha256"] for r in rows}) == 12


def test_pretrain_corpus_is_deterministic(tmp_path):
    a = synth.generate_pretrain_corpus(tmp_path / "a", seed=1, n_clips=3)
    b = synth.generate_pretrain_corpus(tmp_path / "b", seed=1, n_clips=3, workers=2)
    assert hashes(a) == hashes(b)


def test_bad_arguments():
    with pytest.raises(KeyError, match="unknown synthetic task"):
        synth.generate_task("nope", "/tmp/unused")
    with pytest.raises(ValueError, match="scale"):
        synth.generate_task("pitch", "/tmp/unused", scale=0)
