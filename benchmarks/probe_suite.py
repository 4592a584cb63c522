"""The whole probe stage for one model on GPU: ten tasks x 10 seeds x the "paper" grid (issue 7).

    python benchmarks/probe_suite.py --device cuda --dim 3840 --out benchmarks/out/probe_suite.json

Runs `msmbench.probe.run_probe` (the stage the workflow runs: selection on the first fold, the chosen
configuration on the other folds, test once) on every paper task, with the task's real clip count,
class count, split layout and prediction type (SPEC.md section 6) and Base-sized embeddings (3,840
dimensions). The embeddings are random Gaussian class clusters (multi-label: each label adds its
centre), so scores are meaningless; what is measured is how long the probes take with the full
protocol (at most 500 epochs, validation every 3, patience 20). Each task is timed twice:
batched (every member of a fold trained together, the stage's default) and one by one (`max_group=1`:
the same trainer, one member at a time), unless `--skip-one-by-one`. Writes the JSON record after
every task, so a run cut short keeps what it measured.

Split sizes: k-fold tasks split their clips evenly over 5 folds; for the train/valid/test tasks the
real totals are split 70/15/15 except FSD50K (36,796 / 4,170 / 10,231, its dev/eval sizes).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import numpy as np
import torch

from msmbench.bench import command_line
from msmbench.data.hear import hear_folds
from msmbench.io import write_json
from msmbench.probe.protocol import protocol
from msmbench.probe.run import run_probe

# task: (clips, classes, splits, prediction type, metric)
TASKS = {
    "beijing_opera": (236, 4, "5fold", "multiclass", "top1_acc"),
    "crema_d": (7438, 6, "5fold", "multiclass", "top1_acc"),
    "esc50": (2000, 50, "5fold", "multiclass", "top1_acc"),
    "libricount": (5720, 11, "5fold", "multiclass", "top1_acc"),
    "mridangam_stroke": (6977, 10, "5fold", "multiclass", "top1_acc"),
    "mridangam_tonic": (6977, 6, "5fold", "multiclass", "top1_acc"),
    "nsynth_pitch_5h": (5000, 88, "tvt", "multiclass", "top1_acc"),
    "speech_commands_5h": (22890, 12, "tvt", "multiclass", "top1_acc"),
    "fsd50k": (51185, 200, "fsd50k", "multilabel", "mAP"),
    "vox_lingua_top10": (972, 10, "5fold", "multiclass", "top1_acc"),
}


def split_sizes(clips: int, layout: str) -> dict[str, int]:
    if layout == "5fold":
        return {f"fold{i:02d}": clips // 5 + (i < clips % 5) for i in range(5)}
    if layout == "fsd50k":
        return {"train": 36796, "valid": 4170, "test": 10231}
    train, valid = int(0.7 * clips), int(0.15 * clips)
    return {"train": train, "valid": valid, "test": clips - train - valid}


def make_task(name: str, dim: int, seed: int = 0):
    """Features and labels per split: class centres plus noise (noise 4x the centres' scale)."""
    clips, classes, layout, kind, metric = TASKS[name]
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, dim)).astype(np.float32)
    features, labels = {}, {}
    for split, n in split_sizes(clips, layout).items():
        if kind == "multiclass":
            y = rng.integers(0, classes, n)
            x = centers[y]
        else:
            y = (rng.random((n, classes)) < 2.0 / classes).astype(np.float32)
            x = y @ centers
        features[split] = (x + 4 * rng.standard_normal((n, dim))).astype(np.float32)
        labels[split] = y
    return features, labels, classes, kind, metric


def time_task(task: tuple, args, max_group: int | None) -> tuple[float, float]:
    features, labels, classes, kind, metric = task
    proto = protocol("paper", max_epochs=args.max_epochs)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    sync()
    start = time.perf_counter()
    result = run_probe(features, labels.__getitem__, hear_folds(features), classes, kind, metric, proto,
                       seeds=list(range(args.seeds)), device=args.device, progress=False, max_group=max_group)
    sync()
    return time.perf_counter() - start, float(np.mean([s.test_score for s in result.seeds]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dim", type=int, default=3840, help="embedding width (Base: 3840)")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--max-epochs", type=int, default=500, help="the paper protocol's 500; lower for a quick look")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--skip-one-by-one", action="store_true", help="time only the batched stage")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    record = {"benchmark": "probe_suite", "command": command_line(), "args": vars(a), "torch": torch.__version__,
              "host": platform.node(), "device_name": torch.cuda.get_device_name() if a.device.startswith("cuda")
              else platform.processor() or "cpu", "tasks": {}}
    print(f"{'task':<20}{'members':>8}{'batched s':>11}{'one by one s':>14}{'speedup':>9}")
    for name in a.tasks:
        task = make_task(name, a.dim)  # one draw of the data for both paths
        batched, score = time_task(task, a, None)
        row = {"batched_s": batched, "mean_test_score": score}
        if not a.skip_one_by_one:
            single, score_single = time_task(task, a, 1)
            row.update(one_by_one_s=single, one_by_one_test_score=score_single, speedup=single / batched,
                       same_scores=score == score_single)
        record["tasks"][name] = row
        folds = 5 if TASKS[name][2] == "5fold" else 1
        members = 2 * a.seeds + (folds - 1) * a.seeds
        single_txt = f"{row['one_by_one_s']:>14.1f}{row['speedup']:>9.2f}" if "one_by_one_s" in row else ""
        print(f"{name:<20}{members:>8}{batched:>11.1f}{single_txt}", flush=True)
        total = {k: sum(r[k] for r in record["tasks"].values() if k in r) for k in ("batched_s", "one_by_one_s")}
        record["total"] = total
        write_json(a.out, record)
    print(f"{'all tasks':<20}{'':>8}{total['batched_s']:>11.1f}" +
          (f"{total['one_by_one_s']:>14.1f}" if total["one_by_one_s"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
