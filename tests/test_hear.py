"""msmbench.data.hear: HEAR task directories written by write_task read back identically, and every
format defect raises TaskError naming the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msmbench.audio.io import read_audio
from msmbench.data.hear import (Fold, TaskError, TaskWriter, chance_level, load_task, write_task)

SR = 16000


def kfold_meta(**changes) -> dict:
    meta = {"task_name": "toy", "version": "t-1", "embedding_type": "scene", "prediction_type": "multiclass",
            "split_mode": "new_split_kfold", "nfolds": 3, "sample_duration": 0.01, "evaluation": ["top1_acc"],
            "mode": "full", "extra": {"kept": True}}
    meta.update(changes)
    return meta


def tvt_meta(**changes) -> dict:
    meta = kfold_meta(split_mode="trainvaltest", prediction_type="multilabel", sample_duration=None,
                      evaluation=["mAP"])
    del meta["nfolds"]
    meta.update(changes)
    return meta


def clip(i: int, n: int = 160) -> np.ndarray:
    return 0.1 * np.sin(np.arange(n) * (0.01 + 0.001 * i))


def kfold_items() -> dict:
    labels = ["a", "b", "c"]
    return {f"fold{f:02d}": {f"f{f}_{i}.wav": (clip(3 * f + i), [labels[(f + i) % 3]]) for i in range(3)}
            for f in range(3)}


def tvt_items() -> dict:
    sets = [["x"], ["x", "y"], ["y", "z"], ["z"]]
    return {split: {f"{split}_{i}.wav": (clip(i, 100 + 7 * i), sets[i]) for i in range(4)}
            for split in ("train", "valid", "test")}


@pytest.fixture
def kfold_task(tmp_path) -> Path:
    return write_task(tmp_path / "toy", kfold_meta(), kfold_items())


@pytest.fixture
def tvt_task(tmp_path) -> Path:
    return write_task(tmp_path / "tvt", tvt_meta(), tvt_items())


def all_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_kfold_round_trip(kfold_task):
    task = load_task(kfold_task, check_splits=True)
    items = kfold_items()
    assert task.name == "toy" and task.metric == "top1_acc" and task.sample_duration == 0.01
    assert task.splits == ["fold00", "fold01", "fold02"] and task.vocabulary == ["a", "b", "c"]
    assert list(task.metadata)[:7] == ["task_name", "version", "embedding_type", "prediction_type", "split_mode",
                                       "nfolds", "sample_duration"]
    assert task.metadata["extra"] == {"kept": True} and task.metadata["splits"] == task.splits
    for split, files in items.items():
        assert task.split_files(split) == sorted(files)
        assert task.split_labels(split) == {f: labels for f, (_, labels) in files.items()}
        y = task.label_array(split)
        assert y.dtype == np.int64 and list(y) == [task.vocabulary.index(files[f][1][0]) for f in sorted(files)]
        for f, (audio, _) in files.items():
            assert np.abs(read_audio(task.audio_path(split, f)) - audio).max() < 1e-4
    assert task.check_audio(deep=True) == 9
    assert (kfold_task / "labelvocabulary.csv").read_text() == "idx,label\n0,a\n1,b\n2,c\n"
    assert (kfold_task / "fold00.json").read_text().startswith('{\n "f0_0.wav": [\n  "a"\n ]')


def test_trainvaltest_round_trip_variable_length(tvt_task):
    task = load_task(tvt_task)
    assert task.prediction_type == "multilabel" and task.sample_duration is None
    y = task.label_array("test")
    assert y.dtype == np.float32 and y.shape == (4, 3)
    assert y.tolist() == [[1, 0, 0], [1, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert len(read_audio(task.audio_path("train", "train_3.wav"))) == 121
    assert task.check_audio(deep=True) == 12


def test_folds(kfold_task, tvt_task):
    assert load_task(kfold_task).folds() == [
        Fold(train=["fold02"], valid="fold01", test="fold00"),
        Fold(train=["fold00"], valid="fold02", test="fold01"),
        Fold(train=["fold01"], valid="fold00", test="fold02"),
    ]
    assert load_task(tvt_task).folds() == [Fold(train=["train"], valid="valid", test="test")]


def test_fixed_duration_pads_and_trims(tmp_path):
    items = {"train": {"a.wav": (np.ones(50) * 0.5, ["p"]), "b.wav": (np.ones(400) * 0.5, ["q"])},
             "valid": {"c.wav": (np.ones(160) * 0.5, ["p"]), "d.wav": (np.ones(160) * 0.5, ["q"])},
             "test": {"e.wav": (np.ones(160) * 0.5, ["p"]), "f.wav": (np.ones(160) * 0.5, ["q"])}}
    meta = tvt_meta(prediction_type="multiclass", sample_duration=0.01, evaluation=["top1_acc"])
    task = load_task(write_task(tmp_path / "pad", meta, items))
    a = read_audio(task.audio_path("train", "a.wav"))
    assert len(a) == 160 and a[49] > 0.4 and a[50:].max() == 0.0  # zeros at the end, start kept
    assert len(read_audio(task.audio_path("train", "b.wav"))) == 160
    task.check_audio(deep=True)


def test_write_is_deterministic_and_replaces(tmp_path):
    a = write_task(tmp_path / "one" / "toy", kfold_meta(), kfold_items())
    b = write_task(tmp_path / "two" / "toy", kfold_meta(), kfold_items())
    assert all_bytes(a) == all_bytes(b)
    write_task(a, kfold_meta(version="t-2"), kfold_items())  # replaces the old directory
    assert load_task(a).metadata["version"] == "t-2"
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["toy"]  # no staging left over


def test_interrupted_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with TaskWriter(tmp_path / "toy", kfold_meta()) as w:
            w.add("fold00", "a.wav", clip(0), ["a"])
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_bad_input(tmp_path):
    with pytest.raises(TaskError, match="task_metadata.json"):
        TaskWriter(tmp_path / "toy", kfold_meta(split_mode="random"))
    with pytest.raises(TaskError, match="not in splits"), TaskWriter(tmp_path / "toy", kfold_meta()) as w:
        w.add("train", "a.wav", clip(0), ["a"])
    with pytest.raises(TaskError, match="no files"):  # a split without clips is caught before publishing
        write_task(tmp_path / "toy", kfold_meta(), {"fold00": kfold_items()["fold00"]})
    assert list(tmp_path.iterdir()) == []


def test_labels_are_read_lazily(kfold_task):
    (kfold_task / "fold02.json").write_text("[1, 2]")  # broken, but nobody has asked for it yet
    task = load_task(kfold_task)
    task.split_labels("fold00")
    task.label_array("fold01")
    assert task.labels_read == ["fold00", "fold01"]
    with pytest.raises(TaskError, match="fold02.json"):
        task.split_labels("fold02")


def test_chance_level(kfold_task, tvt_task):
    assert chance_level(load_task(kfold_task)) == pytest.approx(1 / 3)
    # test split: x in 2 of 4 clips, y in 2, z in 2 -> mean prevalence 0.5
    assert chance_level(load_task(tvt_task)) == pytest.approx(0.5)


def edit_json(name: str, change):
    """A defect: rewrite `name` with change(parsed json), which returns the new content."""
    def edit(root: Path) -> None:
        path = root / name
        path.write_text(json.dumps(change(json.loads(path.read_text()))))
    return edit


def drop(key):
    return lambda obj: {k: v for k, v in obj.items() if k != key}


def set_(key, value):
    return lambda obj: {**obj, key: value}


def write(name: str, text: str):
    return lambda root: (root / name).write_text(text)


META = "task_metadata.json"
DEFECTS = {
    "no metadata": (lambda root: (root / META).unlink(), META, "missing"),
    "metadata not json": (write(META, "{nope"), META, "not valid JSON"),
    "metadata a list": (write(META, "[]"), META, "JSON object"),
    "missing key": (edit_json(META, drop("evaluation")), META, "evaluation"),
    "bad prediction_type": (edit_json(META, set_("prediction_type", "regression")), META, "prediction_type"),
    "bad split_mode": (edit_json(META, set_("split_mode", "random")), META, "split_mode"),
    "nfolds missing": (edit_json(META, drop("nfolds")), META, "nfolds"),
    "nfolds too small": (edit_json(META, set_("nfolds", 2)), META, "nfolds"),
    "nfolds a string": (edit_json(META, set_("nfolds", "3")), META, "nfolds"),
    "splits mismatch": (edit_json(META, set_("splits", ["fold00", "fold01"])), META, "splits"),
    "event task": (edit_json(META, set_("embedding_type", "event")), META, "not supported"),
    "bad duration": (edit_json(META, set_("sample_duration", -1)), META, "sample_duration"),
    "empty evaluation": (edit_json(META, set_("evaluation", [])), META, "evaluation"),
    "no vocabulary": (lambda root: (root / "labelvocabulary.csv").unlink(), "labelvocabulary.csv", "missing"),
    "vocab header": (write("labelvocabulary.csv", "id,name\n0,a\n"), "labelvocabulary.csv", "header"),
    "vocab idx gap": (write("labelvocabulary.csv", "idx,label\n0,a\n2,b\n3,c\n"), "labelvocabulary.csv", "idx"),
    "vocab duplicate": (write("labelvocabulary.csv", "idx,label\n0,a\n1,a\n2,c\n"), "labelvocabulary.csv",
                        "duplicate"),
    "vocab empty": (write("labelvocabulary.csv", "idx,label\n"), "labelvocabulary.csv", "no labels"),
    "vocab bad row": (write("labelvocabulary.csv", "idx,label\nx,a\n"), "labelvocabulary.csv", "line 2"),
    "split missing": (lambda root: (root / "fold01.json").unlink(), "fold01.json", "missing"),
    "split not object": (write("fold01.json", '["a.wav"]'), "fold01.json", "JSON object"),
    "split empty": (write("fold01.json", "{}"), "fold01.json", "no files"),
    "unknown label": (edit_json("fold01.json", set_("f1_0.wav", ["zebra"])), "fold01.json", "zebra"),
    "two labels": (edit_json("fold01.json", set_("f1_0.wav", ["a", "b"])), "fold01.json", "exactly one"),
    "no label": (edit_json("fold01.json", set_("f1_0.wav", [])), "fold01.json", "non-empty list"),
    "path in name": (edit_json("fold01.json", lambda o: {"../x.wav": ["a"]}), "fold01.json", "file name"),
    "no audio folder": (lambda root: shutil.rmtree(root / "16000"), "16000", "no audio folder"),
}


@pytest.mark.parametrize("name", sorted(DEFECTS))
def test_defects_raise_task_error_naming_the_file(kfold_task, name):
    damage, file, problem = DEFECTS[name]
    damage(kfold_task)
    with pytest.raises(TaskError, match=problem) as err:
        load_task(kfold_task, check_splits=True)
    assert str(kfold_task / file) in str(err.value)


def test_nfolds_forbidden_for_trainvaltest(tvt_task):
    edit_json(META, set_("nfolds", 3))(tvt_task)
    with pytest.raises(TaskError, match="nfolds.*absent"):
        load_task(tvt_task)


def test_duplicate_file_across_splits(kfold_task):
    edit_json("fold01.json", set_("f0_0.wav", ["a"]))(kfold_task)
    with pytest.raises(TaskError, match="unique"):
        load_task(kfold_task, check_splits=True)


def test_missing_audio_found_by_check_audio(kfold_task):
    (kfold_task / "16000" / "fold01" / "f1_2.wav").unlink()
    task = load_task(kfold_task, check_splits=True)  # loading does not stat every file ...
    with pytest.raises(TaskError, match="f1_2.wav.*missing"):
        task.check_audio()  # ... the validation does, over exactly the files split_labels lists


def test_wrong_duration_found_by_deep_check(kfold_task):
    meta = json.loads((kfold_task / META).read_text())
    meta["sample_duration"] = 0.02
    (kfold_task / META).write_text(json.dumps(meta))
    load_task(kfold_task).check_audio()
    with pytest.raises(TaskError, match="frames, expected 320"):
        load_task(kfold_task).check_audio(deep=True)


VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 12), st.floats(allow_nan=True), st.text(max_size=5),
                   st.lists(st.text(max_size=6), max_size=4),
                   st.sampled_from(["scene", "event", "multiclass", "multilabel", "trainvaltest", "new_split_kfold",
                                    "presplit_kfold", ["top1_acc"], ["fold00", "fold01", "fold02"],
                                    ["train", "valid", "test"]]))
KEYS = st.sampled_from(["task_name", "version", "embedding_type", "prediction_type", "split_mode", "nfolds",
                        "sample_duration", "evaluation", "splits", "other"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.dictionaries(KEYS, VALUES, max_size=5), removed=st.sets(KEYS, max_size=2),
       whole=st.one_of(st.none(), st.integers(), st.lists(st.integers(), max_size=2), st.text(max_size=3)))
def test_random_metadata_raises_only_task_error(kfold_task, changes, removed, whole):
    meta = kfold_meta(splits=["fold00", "fold01", "fold02"])
    meta.update(changes)
    for key in removed:
        meta.pop(key, None)
    (kfold_task / META).write_text(json.dumps(meta if whole is None else whole))
    try:
        task = load_task(kfold_task, check_splits=True)
    except TaskError as e:
        assert str(kfold_task) in str(e)
    else:
        task.folds()
        chance_level(task)
