"""Scene embeddings of every clip of a task, through the HEAR API, into one .npz file.

Output (written atomically): `embeddings` float32 [N, size], `files` [N] and `splits` [N] (str),
in the task's split order and each split's sorted file order. Labels are not read here.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from msmbench.audio.io import read_audio
from msmbench.data.hear import load_task
from msmbench.embed.hear_api import HearModel, get_scene_embeddings
from msmbench.io import atomic_path

log = logging.getLogger(__name__)


def task_embeddings(task_dir: str | Path, model: HearModel, batch_size: int = 32,
                    progress: bool = True) -> dict[str, np.ndarray]:
    task = load_task(task_dir)
    items = [(split, f) for split in task.splits for f in task.split_files(split)]
    audio = {}
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, (split, f) in enumerate(items):
        audio[i] = read_audio(task.audio_path(split, f), model.sample_rate)
        by_length[len(audio[i])].append(i)
    out = np.zeros((len(items), model.scene_embedding_size), dtype=np.float32)
    bar = tqdm(total=len(items), desc=f"embed {task.name}", unit="clip", disable=not progress)
    for length in sorted(by_length):  # equal lengths batch without padding (HEAR clips mostly are)
        idx = by_length[length]
        for k in range(0, len(idx), batch_size):
            batch_idx = idx[k:k + batch_size]
            x = torch.from_numpy(np.stack([audio[i] for i in batch_idx]))
            out[batch_idx] = get_scene_embeddings(x, model).cpu().numpy()
            bar.update(len(batch_idx))
    bar.close()
    if not np.isfinite(out).all():
        raise FloatingPointError(f"{task.path}: non-finite embeddings (check the checkpoint)")
    return {"embeddings": out, "files": np.array([f for _, f in items]), "splits": np.array([s for s, _ in items])}


def write_embeddings(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)


def read_embeddings(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        missing = {"embeddings", "files", "splits"} - set(z.files)
        if missing:
            raise ValueError(f"{path}: not an msmbench embedding file (missing {sorted(missing)})")
        return {k: z[k] for k in z.files}


def embed_task(model: HearModel, task_dir: str | Path, out_path: str | Path, batch_size: int = 32,
               progress: bool = True) -> dict:
    t0 = time.perf_counter()
    arrays = task_embeddings(task_dir, model, batch_size, progress)
    write_embeddings(out_path, arrays)
    seconds = time.perf_counter() - t0
    log.info("%s: %d clips -> %s (%.1f s)", task_dir, len(arrays["files"]), out_path, seconds)
    return {"clips": len(arrays["files"]), "dim": int(arrays["embeddings"].shape[1]), "seconds": round(seconds, 2)}
