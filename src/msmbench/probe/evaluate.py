"""One (embeddings, task) evaluation as the workflow runs it: read, probe over seeds, write the score file.

The score file (results/scores/<model>/<task>.json) carries everything the report needs: the model's
metadata (from the rule), the task's paper name, metric and chance level, the per-seed test scores,
their mean and 95% CI half-width, and the full probe result (chosen configurations, validation
scores, protocol, timing).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from msmbench.data.hear import Task, chance_level, load_task
from msmbench.embed.extract import read_embeddings
from msmbench.io import read_json, write_json
from msmbench.probe.protocol import protocol as make_protocol
from msmbench.probe.run import run_probe

log = logging.getLogger(__name__)


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def paper_task_name(task: str) -> str:
    """The paper's name of a task: synthetic tasks name the task they mirror, HEAR dirs their task."""
    from msmbench.data.synth import TASKS

    if task in TASKS:
        return TASKS[task].paper_name
    by_dir = {spec.mirrors: spec.paper_name for spec in TASKS.values()}
    return by_dir.get(task, task)


def split_features(arrays: dict[str, np.ndarray], task: Task, source: str) -> dict[str, np.ndarray]:
    """Rows of each split in the task's file order; a mismatch means stale embeddings."""
    out = {}
    for split in task.splits:
        rows = np.flatnonzero(arrays["splits"] == split)
        if arrays["files"][rows].tolist() != task.split_files(split):
            raise ValueError(f"{source}: the embeddings of split {split!r} do not match {task.path / (split + '.json')} "
                             f"(stale embeddings? delete the file and rerun)")
        out[split] = arrays["embeddings"][rows]
    return out


def probe_task(embeddings: str | Path, task_dir: str | Path, out: str | Path, settings: dict, info: dict,
               base_seed: int = 0, device: str | None = None, progress: bool = True) -> dict:
    task = load_task(task_dir)
    features = split_features(read_embeddings(embeddings), task, str(embeddings))
    proto = make_protocol(settings["protocol"], **settings.get("overrides", {}))
    seeds = list(range(base_seed, base_seed + settings["seeds"]))
    result = run_probe(features, task.label_array, task.folds(), task.num_classes, task.prediction_type,
                       task.metric, proto, seeds, device=device or _default_device(), progress=progress)
    params = None
    if info.get("checkpoint"):
        params = read_json(Path(info["checkpoint"]) / "model.json").get("parameters")
    record = {
        **{k: info.get(k) for k in ("model", "label", "kind", "backbone", "size", "objective")},
        "parameters": params,
        "task": task.path.name,  # the directory name, as the config lists tasks
        "paper_task": paper_task_name(task.path.name),
        "metric": task.metric,
        "chance": chance_level(task),  # a report statistic, read after all probing is done
        "protocol": proto.to_dict(),
        "seeds": [{"seed": s.seed, "score": s.test_score} for s in result.seeds],
        "mean": result.mean,
        "ci95": None if np.isnan(result.ci95) else result.ci95,
        "result": result.to_dict(),
    }
    write_json(out, record)
    log.info("%s on %s: %s = %.4f +- %s over %d seeds", info.get("model"), task.name, task.metric, result.mean,
             record["ci95"], len(seeds))
    return record
