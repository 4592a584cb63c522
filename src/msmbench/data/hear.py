"""Read and write HEAR 2021 task directories (scene tasks), synthetic or downloaded alike.

The layout and conventions are those of hear-preprocess / hear-eval-kit, summarised in
shared/HEAR_FORMAT.md: task_metadata.json, labelvocabulary.csv, one `<split>.json` per split, and
audio under `<sample_rate>/<split>/<file>.wav`.

Laziness is deliberate: `load_task` reads the metadata and the vocabulary and checks that the split
files exist, but a split's labels are parsed only when asked for (`split_files`, `split_labels`), and
`Task.labels_read` records the order in which label sets were handed out, so a test can check that
the test labels are read last. `load_task(..., check_splits=True)` or `Task.validate()` parses
everything up front (the validation CLI does that).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import soundfile as sf

from msmbench.audio.io import write_wav
from msmbench.io import atomic_path

METADATA_FILE = "task_metadata.json"
VOCAB_FILE = "labelvocabulary.csv"
PREDICTION_TYPES = ("multiclass", "multilabel")
KFOLD_MODES = ("presplit_kfold", "new_split_kfold")
SPLIT_MODES = ("trainvaltest",) + KFOLD_MODES
MAX_FOLDS = 100  # a sanity bound (HEAR uses 5 or 10); keeps a corrupt nfolds from allocating names
TRAINVALTEST_SPLITS = ["train", "valid", "test"]  # hear-preprocess pipeline.SPLITS order
REQUIRED_KEYS = ("task_name", "version", "embedding_type", "prediction_type", "split_mode",
                 "sample_duration", "evaluation", "splits")
# Key order of a hear-preprocess task_metadata.json (task config, mode override, runner additions).
HEAR_KEY_ORDER = ("task_name", "version", "embedding_type", "prediction_type", "split_mode", "nfolds",
                  "sample_duration", "evaluation", "evaluation_params", "download_urls", "tfds_task_name",
                  "tfds_task_version", "extract_splits", "default_mode", "max_task_duration_by_split",
                  "max_task_duration_by_fold", "tmp_dir", "mode", "splits")


class TaskError(ValueError):
    """A HEAR task directory that does not follow the format; the message names the file."""


def fold_names(nfolds: int) -> list[str]:
    return [f"fold{i:02d}" for i in range(nfolds)]


def expected_splits(split_mode: str, nfolds: int | None) -> list[str]:
    return list(TRAINVALTEST_SPLITS) if split_mode == "trainvaltest" else fold_names(int(nfolds))


@dataclass(frozen=True)
class Fold:
    """One evaluation run: fit on `train`, select on `valid`, score once on `test` (split names)."""

    train: list[str]
    valid: str
    test: str


def hear_folds(splits: Iterable[str]) -> list[Fold]:
    """The evaluation runs of a task's splits. train/valid/test: one run. k-fold (hear-eval-kit
    convention): for fold i of the sorted folds, test = fold i, valid = fold i+1 (mod k), train = the others."""
    names = sorted(splits)
    if names == ["test", "train", "valid"]:
        return [Fold(train=["train"], valid="valid", test="test")]
    if len(names) < 3:
        raise ValueError(f"k-fold needs at least 3 splits, got {names}")
    k = len(names)
    return [Fold(train=[n for n in names if n not in (names[i], names[(i + 1) % k])], valid=names[(i + 1) % k],
                 test=names[i]) for i in range(k)]


@dataclass
class Task:
    """A loaded HEAR scene task. Construct with `load_task`."""

    path: Path
    name: str
    metadata: dict
    vocabulary: list[str]  # label strings in idx order
    prediction_type: str  # "multiclass" | "multilabel"
    split_mode: str
    splits: list[str]
    metric: str  # first entry of `evaluation`: the model-selection score
    sample_duration: float | None
    sample_rate: int = 16000
    # Splits whose labels were handed out (split_labels / label_array), in order: lets a test check
    # that test labels are read only after model selection.
    labels_read: list[str] = field(default_factory=list, init=False, compare=False)
    _splits_cache: dict[str, dict[str, list[str]]] = field(default_factory=dict, init=False, repr=False,
                                                           compare=False)

    @property
    def num_classes(self) -> int:
        return len(self.vocabulary)

    def label_index(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.vocabulary)}

    def split_files(self, split: str) -> list[str]:
        """Sorted file names of a split (keys of `<split>.json`, relative to `<sr>/<split>/`)."""
        return sorted(self._split(split))

    def split_labels(self, split: str) -> dict[str, list[str]]:
        """{file name: [label, ...]} of a split, validated against the vocabulary."""
        self.labels_read.append(split)
        return {name: list(labels) for name, labels in self._split(split).items()}

    def label_array(self, split: str) -> np.ndarray:
        """Targets in `split_files` order: multiclass int64 (N,) vocabulary indices; multilabel
        float32 (N, C) multi-hot."""
        labels = self.split_labels(split)
        names = sorted(labels)
        index = self.label_index()
        if self.prediction_type == "multiclass":
            return np.array([index[labels[n][0]] for n in names], dtype=np.int64)
        target = np.zeros((len(names), self.num_classes), dtype=np.float32)
        for row, n in enumerate(names):
            target[row, [index[label] for label in labels[n]]] = 1.0
        return target

    def audio_path(self, split: str, filename: str) -> Path:
        return self.path / str(self.sample_rate) / split / filename

    def folds(self) -> list[Fold]:
        return hear_folds(self.splits)

    def validate(self) -> None:
        """Parse and check every split file now, and check that file names are unique over the task."""
        owner: dict[str, str] = {}
        for split in self.splits:
            for name in self._split(split):
                if name in owner:
                    raise TaskError(f"{self.path / (split + '.json')}: file {name!r} also listed in "
                                    f"{owner[name]}.json; file names must be unique over the task")
                owner[name] = split

    def check_audio(self, deep: bool = False) -> int:
        """Check that every file listed in every split exists (the same lists `split_files` returns).

        deep=True also reads each header: mono, the task's sample rate, at least one frame, and
        `sample_duration` seconds (+-1 frame) when that is set. Returns the number of files checked.
        """
        checked = 0
        for split in self.splits:
            missing = [n for n in self.split_files(split) if not self.audio_path(split, n).is_file()]
            if missing:
                raise TaskError(f"{self.audio_path(split, missing[0])}: audio file missing ({len(missing)} of "
                                f"{len(self._split(split))} files of {split}.json); re-download or regenerate "
                                f"the task")
            if deep:
                for n in self.split_files(split):
                    self._check_header(self.audio_path(split, n))
            checked += len(self._split(split))
        return checked

    def _check_header(self, path: Path) -> None:
        try:
            info = sf.info(str(path))
        except Exception as e:
            raise TaskError(f"{path}: unreadable audio ({e})") from None
        if info.samplerate != self.sample_rate or info.channels != 1 or info.frames < 1:
            raise TaskError(f"{path}: expected mono audio at {self.sample_rate} Hz, found {info.channels} "
                            f"channel(s) at {info.samplerate} Hz with {info.frames} frames")
        if self.sample_duration is not None:
            expected = round(self.sample_duration * self.sample_rate)
            if abs(info.frames - expected) > 1:  # one frame of slack for resampler rounding in real archives
                raise TaskError(f"{path}: {info.frames} frames, expected {expected} "
                                f"(sample_duration {self.sample_duration} s)")

    def _split(self, split: str) -> dict[str, list[str]]:
        if split not in self.splits:
            raise KeyError(f"{self.path}: no split {split!r}; splits are {self.splits}")
        if split not in self._splits_cache:
            self._splits_cache[split] = read_split(self.path / f"{split}.json", self.prediction_type,
                                                   set(self.vocabulary))
        return self._splits_cache[split]


# ----------------------------------------------------------------------------------------------
# Loading and validation


def load_task(task_dir: str | os.PathLike, sample_rate: int = 16000, check_splits: bool = False) -> Task:
    """Load and validate a HEAR scene task directory.

    Checks task_metadata.json, labelvocabulary.csv, that every `<split>.json` exists and that the
    `<sample_rate>/` audio folder exists. Split contents are validated when first read, or now with
    check_splits=True. Every problem raises TaskError naming the file.
    """
    path = Path(task_dir)
    if not path.is_dir():
        raise TaskError(f"{path}: task directory not found")
    meta = read_metadata(path / METADATA_FILE)
    vocabulary = read_vocabulary(path / VOCAB_FILE)
    for split in meta["splits"]:
        if not (path / f"{split}.json").is_file():
            raise TaskError(f"{path / (split + '.json')}: split file missing (listed in {METADATA_FILE} splits)")
    if not (path / str(sample_rate)).is_dir():
        found = sorted(p.name for p in path.iterdir() if p.is_dir() and p.name.isdigit())
        raise TaskError(f"{path / str(sample_rate)}: no audio folder for {sample_rate} Hz (found {found}); "
                        f"download the {sample_rate} Hz archive of this task")
    task = Task(path=path, name=meta["task_name"], metadata=meta, vocabulary=vocabulary,
                prediction_type=meta["prediction_type"], split_mode=meta["split_mode"],
                splits=list(meta["splits"]), metric=meta["evaluation"][0],
                sample_duration=meta["sample_duration"], sample_rate=sample_rate)
    if check_splits:
        task.validate()
    return task


def read_metadata(file: Path) -> dict:
    """Read and check task_metadata.json; returns the dict (unchanged)."""
    meta = _read_json_object(file)
    check_metadata(file, meta)
    return meta


def check_metadata(file: Path, meta: Mapping[str, Any]) -> None:
    """Raise TaskError naming `file` unless `meta` is valid scene-task metadata."""
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise TaskError(f"{file}: missing required key(s) {missing}")
    _check_metadata_values(file, meta)


def _check_metadata_values(file: Path, meta: Mapping[str, Any]) -> None:
    def bad(key: str, why: str) -> TaskError:
        return TaskError(f"{file}: {key} {why} (got {meta.get(key)!r})")

    for key in ("task_name", "version"):
        if not isinstance(meta[key], str) or not meta[key]:
            raise bad(key, "must be a non-empty string")
    if meta["embedding_type"] == "event":
        raise TaskError(f"{file}: embedding_type 'event' (timestamp tasks) is not supported; "
                        f"msmbench evaluates scene tasks only")
    if meta["embedding_type"] != "scene":
        raise bad("embedding_type", "must be 'scene'")
    if meta["prediction_type"] not in PREDICTION_TYPES:
        raise bad("prediction_type", f"must be one of {list(PREDICTION_TYPES)}")
    mode = meta["split_mode"]
    if mode not in SPLIT_MODES:
        raise bad("split_mode", f"must be one of {list(SPLIT_MODES)}")
    nfolds = meta.get("nfolds")
    if mode == "trainvaltest" and "nfolds" in meta:
        raise bad("nfolds", "must be absent for split_mode 'trainvaltest'")
    if mode in KFOLD_MODES and not (_is_int(nfolds) and 3 <= nfolds <= MAX_FOLDS):
        raise bad("nfolds", f"must be an integer from 3 to {MAX_FOLDS} for split_mode {mode!r}")
    duration = meta["sample_duration"]
    if duration is not None and not (_is_number(duration) and 0 < duration < math.inf):
        raise bad("sample_duration", "must be null or a positive number of seconds")
    evaluation = meta["evaluation"]
    if not (isinstance(evaluation, list) and evaluation and all(isinstance(e, str) and e for e in evaluation)):
        raise bad("evaluation", "must be a non-empty list of score names")
    splits = meta["splits"]
    expected = expected_splits(mode, nfolds)
    if not (isinstance(splits, list) and all(isinstance(s, str) for s in splits)
            and len(splits) == len(set(splits)) and set(splits) == set(expected)):
        raise bad("splits", f"must be {expected} for split_mode {mode!r}")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _read_json_object(file: Path) -> dict:
    if not file.is_file():
        raise TaskError(f"{file}: file missing")
    try:
        obj = json.loads(file.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise TaskError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise TaskError(f"{file}: must hold a JSON object, found {type(obj).__name__}")
    return obj


def read_vocabulary(file: Path) -> list[str]:
    """labelvocabulary.csv (header idx,label; idx 0..N-1; unique labels) -> labels in idx order."""
    if not file.is_file():
        raise TaskError(f"{file}: file missing")
    try:
        rows = list(csv.reader(io.StringIO(file.read_text(encoding="utf-8"), newline="")))
    except (UnicodeDecodeError, csv.Error) as e:
        raise TaskError(f"{file}: not a readable CSV ({e})") from None
    if not rows or rows[0] != ["idx", "label"]:
        raise TaskError(f"{file}: header must be 'idx,label', found {','.join(rows[0]) if rows else 'nothing'}")
    labels: dict[int, str] = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != 2 or not (row[0].isascii() and row[0].isdigit()) or row[1] == "":
            raise TaskError(f"{file}: line {line} must be '<idx>,<label>', found {row}")
        idx = int(row[0])
        if idx in labels:
            raise TaskError(f"{file}: idx {idx} appears twice")
        labels[idx] = row[1]
    if not labels:
        raise TaskError(f"{file}: no labels")
    if sorted(labels) != list(range(len(labels))):
        raise TaskError(f"{file}: idx must be 0..{len(labels) - 1}, found {sorted(labels)[:10]}...")
    vocabulary = [labels[i] for i in range(len(labels))]
    duplicates = sorted({label for label in vocabulary if vocabulary.count(label) > 1})
    if duplicates:
        raise TaskError(f"{file}: duplicate label(s) {duplicates[:5]}")
    return vocabulary


def read_split(file: Path, prediction_type: str, vocabulary: set[str]) -> dict[str, list[str]]:
    """`<split>.json` -> {file name: [labels]}, checked: object, non-empty, safe file names, known labels,
    exactly one label per file for multiclass (at least one for multilabel)."""
    obj = _read_json_object(file)
    if not obj:
        raise TaskError(f"{file}: the split lists no files")
    for name, labels in obj.items():
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise TaskError(f"{file}: bad file name {name!r} (must be a plain file name)")
        if not (isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels)):
            raise TaskError(f"{file}: {name!r} must map to a non-empty list of label strings, found {labels!r}")
        if prediction_type == "multiclass" and len(labels) != 1:
            raise TaskError(f"{file}: {name!r} has {len(labels)} labels; multiclass needs exactly one")
        unknown = [x for x in labels if x not in vocabulary]
        if unknown:
            raise TaskError(f"{file}: {name!r} has label(s) {unknown} not in {VOCAB_FILE}")
    return obj


# ----------------------------------------------------------------------------------------------
# Writing


def order_metadata(metadata: Mapping[str, Any]) -> dict:
    """Keys in hear-preprocess order; keys it does not know (e.g. `synthetic`) go last, in given order."""
    known = [k for k in HEAR_KEY_ORDER if k in metadata]
    return {k: metadata[k] for k in known + [k for k in metadata if k not in HEAR_KEY_ORDER]}


class TaskWriter:
    """Stream clips into a new HEAR task directory; publish it only when complete.

    with TaskWriter(out_dir, metadata) as w:
        w.add("fold00", "clip.wav", audio, ["label"])

    Clips go to a hidden temporary sibling directory; on a clean exit the label files are written, the
    result is validated with `load_task`, and the directory is renamed onto `out_dir` (replacing an
    old one). On an exception the temporary directory is deleted and `out_dir` is left untouched, so an
    interrupted generation never leaves a directory that looks complete.
    """

    def __init__(self, out_dir: str | os.PathLike, metadata: Mapping[str, Any], sample_rate: int = 16000):
        self.out_dir = Path(out_dir)
        meta = dict(metadata)
        meta.setdefault("embedding_type", "scene")
        if "splits" not in meta and _splits_derivable(meta):
            meta["splits"] = expected_splits(meta["split_mode"], meta.get("nfolds"))
        self.metadata = order_metadata(meta)
        check_metadata(self.out_dir / METADATA_FILE, self.metadata)
        self.sample_rate = sample_rate
        self.items: dict[str, dict[str, list[str]]] = {s: {} for s in self.metadata["splits"]}
        self.names: set[str] = set()
        self.tmp: Path | None = None

    def __enter__(self) -> TaskWriter:
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.", suffix=".tmp", dir=self.out_dir.parent))
        os.chmod(self.tmp, 0o755)  # mkdtemp makes it private; the published task should be readable
        return self

    def add(self, split: str, filename: str, audio: np.ndarray, labels: Iterable[str]) -> None:
        if split not in self.items:
            raise TaskError(f"{self.out_dir / METADATA_FILE}: split {split!r} not in splits {list(self.items)}")
        if filename in self.names or "/" in filename or not filename.endswith(".wav"):
            raise TaskError(f"{self.out_dir / (split + '.json')}: bad or duplicate file name {filename!r}")
        self.names.add(filename)
        self.items[split][filename] = [str(x) for x in labels]
        # Not atomic per file: the staging directory is private and is published whole in _finish.
        write_wav(self.tmp / str(self.sample_rate) / split / filename, self._fit_duration(audio), self.sample_rate,
                  atomic=False)

    def _fit_duration(self, audio: np.ndarray) -> np.ndarray:
        """Trim, or pad with zeros at the end, to sample_duration (hear-preprocess keeps the start)."""
        duration = self.metadata.get("sample_duration")
        if duration is None:
            return audio
        n = round(duration * self.sample_rate)
        return audio[:n] if len(audio) >= n else np.pad(audio, (0, n - len(audio)))

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._finish()
        finally:
            if self.tmp is not None and self.tmp.exists():
                shutil.rmtree(self.tmp)

    def _finish(self) -> None:
        vocabulary = sorted({label for split in self.items.values() for labels in split.values() for label in labels})
        _write_text(self.tmp / METADATA_FILE, json.dumps(self.metadata, indent=True))
        _write_text(self.tmp / VOCAB_FILE, _vocabulary_csv(vocabulary))
        for split, files in self.items.items():
            _write_text(self.tmp / f"{split}.json", json.dumps(dict(sorted(files.items())), indent=True))
        load_task(self.tmp, sample_rate=self.sample_rate, check_splits=True).check_audio()
        publish_dir(self.tmp, self.out_dir)


def _splits_derivable(meta: Mapping[str, Any]) -> bool:
    nfolds = meta.get("nfolds")
    return meta.get("split_mode") == "trainvaltest" or (
        meta.get("split_mode") in KFOLD_MODES and _is_int(nfolds) and 3 <= nfolds <= MAX_FOLDS)


def write_task(out_dir: str | os.PathLike, metadata: Mapping[str, Any],
               split_items: Mapping[str, Mapping[str, tuple[np.ndarray, list[str]]]],
               sample_rate: int = 16000) -> Path:
    """Write a complete HEAR task directory from in-memory clips; returns `out_dir`.

    metadata: task_metadata.json content (reordered to HEAR key order; `embedding_type` defaults to
    "scene" and `splits` to those of the split_mode). split_items: {split: {file name: (audio, labels)}}.
    Same inputs -> same bytes.
    """
    with TaskWriter(out_dir, metadata, sample_rate) as writer:
        for split in sorted(split_items):
            for filename in sorted(split_items[split]):
                audio, labels = split_items[split][filename]
                writer.add(split, filename, audio, labels)
    return Path(out_dir)


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(text.encode("utf-8"))


def _vocabulary_csv(vocabulary: list[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["idx", "label"])
    writer.writerows([i, label] for i, label in enumerate(vocabulary))
    return out.getvalue()


def publish_dir(new: Path, target: Path) -> None:
    """Make a finished staging directory durable, then rename it onto `target`.

    One os.sync() flushes every file written into `new` (an fsync per file would cost ~4 ms each);
    only then is the directory renamed into place, so a crash never leaves a complete-looking
    directory with unwritten files. An existing target is moved aside first and deleted after.
    """
    os.sync()
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        os.replace(target, old / target.name)
    os.replace(new, target)
    _fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old)


def _fsync_dir(path: Path) -> None:
    """Persist a rename in `path` (directory entries need their own fsync on POSIX)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories; the rename is still atomic
        pass
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------------
# Report statistics


def chance_level(task: Task) -> float:
    """Score of a constant predictor, averaged over the task's folds.

    multiclass: frequency of the majority class of each test split (always predicting the most
    frequent label). multilabel (mAP): mean over classes of their prevalence in the test split, the
    expected average precision of a random ranking. Reads test labels: a report statistic only.
    """
    scores = []
    for fold in task.folds():
        y = task.label_array(fold.test)
        if task.prediction_type == "multiclass":
            scores.append(np.bincount(y, minlength=task.num_classes).max() / len(y))
        else:
            scores.append(float(y.mean(axis=0).mean()))
    return float(np.mean(scores))
