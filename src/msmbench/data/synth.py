"""The embedded default data: ten deterministic synthetic HEAR tasks and a pretraining corpus.

Design: shared/SYNTH.md. Each task mirrors one of the paper's ten (same label kind, metric, split mode
and, where practical, class count) and asks about one factor of a shared synthetic sound world
(synth_world.py, built on synth_sounds.py) while speaker, timbre, size, level, noise, onset time and
room vary independently of the label.

Where this differs from SYNTH.md: multilabel tags the 20 source kinds (5 types x 4 kinds) rather than
the 50 events classes, as FSD50K tags sources, not temporal patterns (a pattern is unidentifiable
once several sources overlap); pitch uses 48 notes (MIDI 36-83) so that each note has 16 clips; the
commands words come in pairs of the same phones in another order, so that a bag-of-frames model cannot
separate them. Difficulty was calibrated with mean-pooled log-mel + logistic regression: above chance
on every task, below 95 % on all.

Determinism: a clip's audio comes from its own generator,
`np.random.SeedSequence(seed, spawn_key=(TASK_STREAM, spec.stream, clip_index))`; the split/label
plan of a task comes from `spawn_key=(PLAN_STREAM, spec.stream)`, the pretraining corpus from
`spawn_key=(PRETRAIN_STREAM, clip_index)`. Clips therefore do not depend on generation order, and
tasks and clips can be generated in parallel (`workers`) with the same bytes.

What "the same bytes" rests on: numpy's Generator streams (stable within a numpy version; NEP 19
allows distribution changes between versions, so pin numpy), single-threaded numpy/scipy code (no
BLAS products, pocketfft without workers), our own WAV header, and the 16-bit quantisation, which
absorbs the last-bit differences that transcendental functions (exp, sin, complex power) can show
between CPU dispatch paths (a 16-bit sample changes only in the rare case that such a difference
crosses a rounding boundary).
"""

from __future__ import annotations

import csv
import io
import itertools
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from msmbench.audio.io import write_wav
from msmbench.data import synth_world as world
from msmbench.data.hear import TaskWriter, expected_splits, publish_dir
from msmbench.io import atomic_path, sha256_file

SR = 16000
VERSION = "synth-1.0"
TASK_STREAM, PLAN_STREAM, PRETRAIN_STREAM = 1, 2, 3  # disjoint seed streams (SeedSequence spawn keys)
KFOLDS = 5
SPLIT_FRACTIONS = {"test": 0.2, "valid": 0.2}  # trainvaltest tasks; train gets the rest


@dataclass(frozen=True)
class TaskSpec:
    """One synthetic task: what it mirrors, how it is scored and split, and how big it is."""

    name: str
    mirrors: str  # the HEAR task directory of the paper's task
    paper_name: str
    prediction_type: str  # "multiclass" | "multilabel"
    evaluation: tuple[str, ...]  # HEAR score names; the first selects models
    split_mode: str
    n_classes: int
    clip_seconds: float  # fixed clip length (multilabel: the longest; lengths vary from 1 s)
    clips: int  # clips at scale 1.0
    factor: str  # what decides the label
    recipe: str  # clip generator in synth_world (stroke and tonic share one)
    axes: tuple[int, ...]  # label factors of a clip (stroke and tonic: (10 strokes, 6 tonics))
    label_axis: int = 0  # which factor is this task's label
    stream: int = 0  # seed stream: tasks with the same stream have the same clips
    variable_length: bool = False

    @property
    def metric(self) -> str:
        return self.evaluation[0]

    @property
    def nfolds(self) -> int | None:
        return None if self.split_mode == "trainvaltest" else KFOLDS

    @property
    def splits(self) -> list[str]:
        return expected_splits(self.split_mode, self.nfolds)

    @property
    def per_cell(self) -> int:
        """Clips per combination of factor values at scale 1.0."""
        return self.clips // int(np.prod(self.axes)) if self.recipe != "multilabel" else self.clips


LABEL_NAMES: dict[str, tuple[tuple[str, ...], ...]] = {  # recipe -> names of each factor's values
    "percussion": (world.PERCUSSION_FAMILIES,),
    "emotion": (world.EMOTION_NAMES,),
    "events": (world.EVENT_LABELS,),
    "count": (tuple(str(i) for i in range(11)),),
    "mridangam": (world.STROKE_NAMES, world.TONIC_NAMES),
    "pitch": (tuple(str(m) for m in world.PITCH_MIDI),),
    "commands": (world.COMMAND_LABELS,),
    "multilabel": (world.SOURCES,),
    "language": (world.LANGUAGE_NAMES,),
}


def _spec(name: str, *, recipe: str, label_axis: int = 0, evaluation=("top1_acc",),
          prediction_type: str = "multiclass", **fields) -> TaskSpec:
    """A TaskSpec whose class count and factor axes follow from the recipe's label names."""
    names = LABEL_NAMES[recipe]
    return TaskSpec(name=name, recipe=recipe, label_axis=label_axis, evaluation=tuple(evaluation),
                    prediction_type=prediction_type, n_classes=len(names[label_axis]),
                    axes=tuple(len(n) for n in names), **fields)


# Clip lengths are at most the paper task's; sizes are a few hundred to 1,000 clips at scale 1.0.
TASKS: dict[str, TaskSpec] = {s.name: s for s in [
    _spec("percussion", recipe="percussion", mirrors="beijing_opera-v1.0-hear2021-full", paper_name="Beijing Opera",
          split_mode="new_split_kfold", clip_seconds=3.0, clips=300, stream=1,
          factor="strike family (membrane, bar, plate, gong); size, damping, hardness and hits random"),
    _spec("emotion", recipe="emotion", mirrors="tfds_crema_d-1.0.0-full", paper_name="CREMA-D",
          split_mode="new_split_kfold", clip_seconds=3.0, clips=600, stream=2,
          factor="prosody: f0 level and range, rate, voice quality, jitter, breath; speaker and words random"),
    _spec("events", recipe="events", mirrors="esc50-v2.0.0-full", paper_name="ESC-50",
          split_mode="presplit_kfold", clip_seconds=3.0, clips=1000, stream=3,
          factor="source type (voice, tone, strike, texture, signal) x temporal pattern (10); kind random"),
    _spec("count", recipe="count", mirrors="libricount-v1.0.0-hear2021-full", paper_name="LibriCount",
          split_mode="new_split_kfold", clip_seconds=2.0, clips=440, stream=4,
          factor="number of simultaneous voices, 0-10 (0 = background only); speakers random"),
    _spec("stroke", recipe="mridangam", label_axis=0, mirrors="mridangam_stroke-v1.5-full",
          paper_name="Mridangam Stroke", split_mode="new_split_kfold", clip_seconds=0.8, clips=600, stream=5,
          factor="stroke: which modes ring, damping, slap noise, bass head and its glide; tonic random"),
    _spec("tonic", recipe="mridangam", label_axis=1, mirrors="mridangam_tonic-v1.5-full",
          paper_name="Mridangam Tonic", split_mode="new_split_kfold", clip_seconds=0.8, clips=600, stream=5,
          factor="the drum's tonic (B to E); the same clips as stroke"),
    _spec("pitch", recipe="pitch", evaluation=("pitch_acc", "chroma_acc"), mirrors="nsynth_pitch-v2.2.3-5h",
          paper_name="NSynth Pitch", split_mode="trainvaltest", clip_seconds=2.0, clips=768, stream=6,
          factor="MIDI note 36-83 of a tone; timbre, envelope, vibrato and tuning (+-15 cents) random"),
    _spec("commands", recipe="commands", mirrors="speech_commands-v0.0.2-5h", paper_name="Speech Commands",
          split_mode="trainvaltest", clip_seconds=1.0, clips=720, stream=7,
          factor="10 words (in pairs of the same phones in another order), silence, unknown words; speaker random"),
    _spec("multilabel", recipe="multilabel", prediction_type="multilabel", evaluation=("mAP", "d_prime", "aucroc"),
          mirrors="fsd50k-v1.0-full", paper_name="FSD50K", split_mode="trainvaltest", clip_seconds=4.0, clips=800,
          stream=8, variable_length=True,
          factor="which of 20 sources (5 types x 4 kinds) sound in a mixture of 1-4; 1-4 s long"),
    _spec("language", recipe="language", mirrors="vox_lingua_top10-hear2021-full", paper_name="VoxLingua107 Top 10",
          split_mode="new_split_kfold", clip_seconds=4.0, clips=600, stream=9,
          factor="language: phone inventory, syllable shapes, rhythm, pitch habit; speaker and words random"),
]}


def registry_markdown() -> str:
    """The TASKS registry as a Markdown table (for the README)."""
    lines = ["| task | mirrors | classes | metric | split | clip s | clips | label decided by |",
             "|---|---|---|---|---|---|---|---|"]
    for s in TASKS.values():
        seconds = f"1-{s.clip_seconds:g}" if s.variable_length else f"{s.clip_seconds:g}"
        split = "train/valid/test" if s.split_mode == "trainvaltest" else f"{s.nfolds} folds ({s.split_mode})"
        lines.append(f"| {s.name} | {s.paper_name} (`{s.mirrors}`) | {s.n_classes} | {s.metric} | {split} | "
                     f"{seconds} | {s.clips} | {s.factor} |")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ClipPlan:
    """What one clip will be: its index (file name and seed), split, factor values and length."""

    index: int
    split: str
    factors: tuple[int, ...]  # one value per axis; multilabel: the source indices present
    seconds: float

    @property
    def filename(self) -> str:
        return f"clip_{self.index:05d}.wav"


def clip_labels(spec: TaskSpec, plan: ClipPlan) -> list[str]:
    names = LABEL_NAMES[spec.recipe][spec.label_axis]
    if spec.recipe == "multilabel":
        return [names[i] for i in plan.factors]
    return [names[plan.factors[spec.label_axis]]]


# ----------------------------------------------------------------------------------------------
# Planning: labels and splits, balanced, every label in every split


def plan_task(spec: TaskSpec, seed: int, scale: float = 1.0) -> list[ClipPlan]:
    """The task's clips (in index order). Counts scale with `scale` but never fall below the minimum
    that puts every label in every split (k-fold: every fold; trainvaltest: train, valid and test)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(PLAN_STREAM, spec.stream)))
    if spec.recipe == "multilabel":
        items = _plan_multilabel(spec, rng, scale)
    else:
        reps = max(min_reps(spec), int(round(spec.per_cell * scale)))
        items = [(split, cell, spec.clip_seconds) for cell, split in _balanced_cells(spec, reps)]
    order = rng.permutation(len(items))  # file names carry no label order
    return [ClipPlan(i, items[j][0], tuple(int(v) for v in items[j][1]), items[j][2]) for i, j in enumerate(order)]


def _balanced_cells(spec: TaskSpec, reps: int) -> Iterable[tuple[tuple[int, ...], str]]:
    """Each combination of factor values `reps` times. k-fold: repetition j of cell c goes to fold
    (sum(c) + j) mod k, which spreads every value of every factor over all folds. trainvaltest: the
    first repetitions of each cell go to test, then valid, the rest to train."""
    splits = spec.splits
    for cell in itertools.product(*(range(a) for a in spec.axes)):
        for j in range(reps):
            if spec.split_mode == "trainvaltest":
                yield cell, _trainvaltest_split(j, reps)
            else:
                yield cell, splits[(sum(cell) + j) % len(splits)]


def _trainvaltest_split(j: int, reps: int) -> str:
    n_test = max(1, round(SPLIT_FRACTIONS["test"] * reps))
    n_valid = max(1, round(SPLIT_FRACTIONS["valid"] * reps))
    return "test" if j < n_test else "valid" if j < n_test + n_valid else "train"


def min_reps(spec: TaskSpec) -> int:
    """Smallest repetitions per cell that put every value of every factor in every split."""
    if spec.split_mode == "trainvaltest":
        return 3
    for reps in range(1, KFOLDS + 1):
        seen: dict[tuple[int, int], set[str]] = {}
        for cell, split in _balanced_cells(spec, reps):
            for axis, value in enumerate(cell):
                seen.setdefault((axis, value), set()).add(split)
        if all(len(s) == KFOLDS for s in seen.values()):
            return reps
    return KFOLDS


def _plan_multilabel(spec: TaskSpec, rng: np.random.Generator, scale: float) -> list[tuple[str, tuple, float]]:
    """Mixtures of 1-4 distinct sources. Clip i of a split always contains source i mod C, so a split
    of at least C clips holds every label; the other sources and the length (1 s to clip_seconds) are
    random."""
    c = spec.n_classes
    total = max(3 * c, int(round(spec.clips * scale)))
    sizes = {s: max(c, int(round(SPLIT_FRACTIONS.get(s, 0.0) * total))) for s in ("valid", "test")}
    sizes["train"] = max(c, total - sizes["valid"] - sizes["test"])
    items = []
    for split in ("train", "valid", "test"):
        for i in range(sizes[split]):
            extra = int(rng.choice(4, p=[0.3, 0.3, 0.25, 0.15]))
            others = rng.choice([s for s in range(c) if s != i % c], size=extra, replace=False)
            seconds = round(float(rng.uniform(1.0, spec.clip_seconds)), 2)
            items.append((split, tuple(sorted([i % c, *others.tolist()])), seconds))
    return items


# ----------------------------------------------------------------------------------------------
# Rendering

_RECIPES: dict[str, Callable[..., np.ndarray]] = {
    "percussion": lambda rng, f, s: world.percussion_clip(rng, f[0], s),
    "emotion": lambda rng, f, s: world.emotion_clip(rng, f[0], s),
    "events": lambda rng, f, s: world.events_clip(rng, f[0], s),
    "count": lambda rng, f, s: world.count_clip(rng, f[0], s),
    "mridangam": lambda rng, f, s: world.mridangam_clip(rng, f[0], f[1], s),
    "pitch": lambda rng, f, s: world.pitch_clip(rng, f[0], s),
    "commands": lambda rng, f, s: world.commands_clip(rng, f[0], s),
    "multilabel": lambda rng, f, s: world.multilabel_clip(rng, f, s),
    "language": lambda rng, f, s: world.language_clip(rng, f[0], s),
}


def clip_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(TASK_STREAM, stream, index)))


def render_clip(spec: TaskSpec, seed: int, plan: ClipPlan) -> np.ndarray:
    """float32 audio of one planned clip, exactly round(seconds * 16000) samples."""
    audio = _RECIPES[spec.recipe](clip_rng(seed, spec.stream, plan.index), plan.factors, plan.seconds)
    n = int(round(plan.seconds * SR))
    assert len(audio) == n, (spec.name, plan, len(audio))
    return audio.astype(np.float32)


def task_metadata(spec: TaskSpec, seed: int, scale: float) -> dict:
    """task_metadata.json of a synthetic task, in HEAR's key order and conventions."""
    meta = {"task_name": spec.name, "version": VERSION, "embedding_type": "scene",
            "prediction_type": spec.prediction_type, "split_mode": spec.split_mode}
    if spec.nfolds:
        meta["nfolds"] = spec.nfolds
    meta["sample_duration"] = None if spec.variable_length else spec.clip_seconds
    meta["evaluation"] = list(spec.evaluation)
    meta["default_mode"] = "full"
    if spec.nfolds:
        meta["max_task_duration_by_fold"] = None
    else:
        meta["max_task_duration_by_split"] = {"train": None, "valid": None, "test": None}
    meta.update(mode="full", splits=spec.splits,
                synthetic={"generator": "msmbench.data.synth", "seed": int(seed), "scale": float(scale),
                           "mirrors": spec.mirrors})
    return meta


def generate_task(name: str, out_root: str | os.PathLike, seed: int = 0, scale: float = 1.0,
                  workers: int = 1) -> Path:
    """Write synthetic task `name` to `<out_root>/<name>/` (HEAR layout) and return that path.

    The directory appears only when complete (TaskWriter). `workers` > 1 renders clips in that many
    processes; the bytes are the same for any number of workers.
    """
    if name not in TASKS:
        raise KeyError(f"unknown synthetic task {name!r}; known: {sorted(TASKS)}")
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    _check_seed(seed)
    spec = TASKS[name]
    plans = plan_task(spec, seed, scale)
    out = Path(out_root) / name
    args = (itertools.repeat(spec), itertools.repeat(seed), plans)
    with _executor(workers) as pool, TaskWriter(out, task_metadata(spec, seed, scale), sample_rate=SR) as writer:
        for plan, audio in zip(plans, pool.map(render_clip, *args, chunksize=16)):
            writer.add(plan.split, plan.filename, audio, clip_labels(spec, plan))
    return out


def _check_seed(seed: int) -> None:
    if not (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0):
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def _executor(workers: int):
    """A process pool for workers > 1; otherwise the same interface run in this process."""
    return ProcessPoolExecutor(workers) if workers > 1 else _Serial()


class _Serial:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def map(self, fn, *iterables, chunksize=1):
        return map(fn, *iterables)


# ----------------------------------------------------------------------------------------------
# Pretraining corpus


def pretrain_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(PRETRAIN_STREAM, index)))


def render_pretrain_clip(seed: int, index: int, min_seconds: float, max_seconds: float) -> np.ndarray:
    rng = pretrain_rng(seed, index)
    seconds = round(float(rng.uniform(min_seconds, max_seconds)), 2)
    return world.pretrain_clip(rng, seconds).astype(np.float32)


def generate_pretrain_corpus(out_dir: str | os.PathLike, seed: int, n_clips: int, min_seconds: float = 2.0,
                             max_seconds: float = 4.0, workers: int = 1) -> Path:
    """Write `n_clips` unlabelled scenes to `out_dir/audio/clip_XXXXX.wav` and list them in
    `out_dir/files.csv` (path,seconds,sha256; path relative to out_dir). Built in a temporary
    sibling directory and renamed into place when complete."""
    _check_seed(seed)
    if n_clips < 1 or not 0 < min_seconds <= max_seconds:
        raise ValueError(f"need n_clips >= 1 and 0 < min_seconds <= max_seconds, got {n_clips}, "
                         f"{min_seconds}, {max_seconds}")
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        os.chmod(tmp, 0o755)
        rows = []
        args = (itertools.repeat(seed), range(n_clips), itertools.repeat(min_seconds), itertools.repeat(max_seconds))
        with _executor(workers) as pool:
            for i, audio in enumerate(pool.map(render_pretrain_clip, *args, chunksize=16)):
                rel = f"audio/clip_{i:05d}.wav"
                write_wav(tmp / rel, audio, SR, atomic=False)  # the staging directory is published whole
                rows.append([rel, f"{len(audio) / SR:.4f}", sha256_file(tmp / rel)])
        with atomic_path(tmp / "files.csv") as f:
            f.write_text(_csv_text(["path", "seconds", "sha256"], rows))
        publish_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def _csv_text(header: list[str], rows: list[list[str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def generate_suite(out_root: str | os.PathLike, seed: int = 0, scale: float = 1.0,
                   tasks: Iterable[str] | None = None, pretrain_clips: int = 2000, workers: int = 1) -> dict[str, Path]:
    """Generate the named tasks (default all ten) under out_root and, if pretrain_clips > 0, the
    pretraining corpus under `out_root/pretrain`. Returns {name: path} ("pretrain" included)."""
    paths = {name: generate_task(name, out_root, seed, scale, workers) for name in (tasks or TASKS)}
    if pretrain_clips > 0:
        paths["pretrain"] = generate_pretrain_corpus(Path(out_root) / "pretrain", seed, pretrain_clips, workers=workers)
    return paths
