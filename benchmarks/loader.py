"""Throughput of the pretraining input pipeline: log-mel shards -> random 2 s crops -> batches.

    python benchmarks/loader.py --features results/features/synthetic --batch 256 --workers 0 8 --out benchmarks/out/loader.json

Times the same DataLoader the training loop uses (msmbench.train.data.StepDataset, pinned memory) over
`--steps` steps after a warm-up and prints clips/s per worker count. Compare with a training step's
consumption (BENCHMARKS.md: e.g. 2,079 clips/s for Transformer-Base on an H100).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from msmbench.bench import command_line, machine_info
from msmbench.data.features import LogMelShards
from msmbench.io import write_json
from msmbench.train.data import CropSchedule, StepDataset


def measure(features: str, batch: int, workers: int, steps: int) -> float:
    shards = LogMelShards.open(features)
    data = StepDataset(str(shards.root), CropSchedule(shards.clip_frames(), batch, 200, seed=0))
    loader = torch.utils.data.DataLoader(data, batch_size=None, sampler=range(steps + 5), num_workers=workers,
                                         pin_memory=torch.cuda.is_available(),
                                         prefetch_factor=4 if workers else None)
    it = iter(loader)
    for _ in range(5):  # warm-up: worker start, page cache
        next(it)
    t0 = time.perf_counter()
    for _ in range(steps):
        next(it)
    return steps * batch / (time.perf_counter() - t0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--features", required=True)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 4, 8])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--out", default="benchmarks/out/loader.json")
    a = p.parse_args(argv)
    rows = []
    print(f"{'workers':>8}{'clips/s':>12}")
    for w in a.workers:
        rate = measure(a.features, a.batch, w, a.steps)
        rows.append({"workers": w, "batch": a.batch, "clips_per_s": rate})
        print(f"{w:>8}{rate:>12.0f}", flush=True)
    write_json(a.out, {"benchmark": "loader", "command": command_line(), "machine": machine_info(), "records": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
