"""Masked-spectrogram pretraining (SPEC.md section 4): one function, resumable, deterministic on CPU.

`pretrain(...)` trains one model from log-mel shards and writes, into `out_dir`:
- `model.safetensors` + `model.json`: the final weights and their spec (see models/checkpoint.py);
- `metrics.csv`: step, epoch, lr, loss, seconds, clips/s every `log_every` steps;
- `train_state.pt` while training: model, optimiser, step and metrics, every `checkpoint_every`
  steps. A rerun resumes from it (if its fingerprint matches this run's settings) and produces the
  same final weights as an uninterrupted run, bit for bit on CPU: each step's data and masks are a
  pure function of (seed, step) (train/data.py).
Launched under torchrun (WORLD_SIZE > 1) it trains with DistributedDataParallel: the global batch
is split across processes, rank 0 writes the files.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from msmbench.data.features import LogMelShards
from msmbench.io import atomic_path, stable_hash, write_text
from msmbench.models.checkpoint import build_model, save_checkpoint
from msmbench.runtime import configure_cpu
from msmbench.train.data import CropSchedule, StepDataset, mask_generator
from msmbench.train.optim import lr_at, make_optimizer, scaled_lr

log = logging.getLogger(__name__)
STATE = "train_state.pt"
METRIC_FIELDS = ["step", "epoch", "lr", "loss", "seconds", "clips_per_s"]


class NonFiniteLossError(RuntimeError):
    pass


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _distributed() -> tuple[int, int, int, bool]:
    """rank, local rank, world size (torchrun's variables), and whether this call created the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    created = world > 1 and not torch.distributed.is_initialized()
    if created:
        if torch.cuda.is_available():  # bound to this process's GPU, so collectives never guess the device
            torch.distributed.init_process_group("nccl", device_id=torch.device(f"cuda:{local}"))
        else:
            torch.distributed.init_process_group("gloo")
    return rank, local, world, created


def pick_device(device: str | None, local_rank: int = 0) -> torch.device:
    if device in (None, "auto"):
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def plan_steps(n_steps_per_epoch: int, cfg: dict) -> tuple[int, int]:
    total = max(1, round(cfg["epochs"] * n_steps_per_epoch))
    if cfg.get("max_steps"):
        total = min(total, cfg["max_steps"])
    warmup = min(total, round(cfg["warmup_epochs"] * n_steps_per_epoch))
    return total, warmup


def _write_metrics(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def _save_state(path: Path, model, optimizer, step: int, rows: list[dict], fingerprint: str) -> None:
    base = getattr(model, "module", model)
    state = {"step": step, "model": base.state_dict(), "optimizer": optimizer.state_dict(),
             "metrics": rows, "fingerprint": fingerprint}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def pretrain(features: str | Path, out_dir: str | Path, spec: dict, cfg: dict, seed: int = 0,
             device: str | None = None, threads: int | None = None, progress: bool = True) -> dict:
    """Train the model of `spec` on the shards in `features`; returns a summary dict (see module doc)."""
    rank, local_rank, world, created_group = _distributed()
    dev = pick_device(device, local_rank)
    configure_cpu(threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shards = LogMelShards.open(features)

    schedule = CropSchedule(shards.clip_frames(), cfg["batch_size"], cfg["crop_frames"], seed)
    total_steps, warmup_steps = plan_steps(schedule.steps_per_epoch, cfg)
    peak_lr = scaled_lr(cfg["base_lr"], cfg["batch_size"])
    fingerprint = stable_hash({"spec": spec, "cfg": {k: v for k, v in cfg.items() if k not in ("log_every", "checkpoint_every", "num_workers")},
                               "seed": seed, "features": shards.meta["files_sha256"], "world": world})

    seed_everything(seed)
    model = build_model(spec).to(dev)
    optimizer = make_optimizer(model, peak_lr, cfg["weight_decay"], cfg["betas"])
    rows: list[dict] = []
    start_step = 0
    state_path = out_dir / STATE
    if state_path.exists():
        state = torch.load(state_path, map_location=dev, weights_only=False)
        if state.get("fingerprint") == fingerprint:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            rows, start_step = state["metrics"], state["step"]
            log.info("resuming from %s at step %d of %d", state_path, start_step, total_steps)
        else:
            log.warning("ignoring %s: it was written with other settings; starting from scratch", state_path)

    train_model = model
    if world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    if cfg.get("compile"):
        train_model = torch.compile(train_model)
    amp_dtype = autocast_dtype(cfg["precision"], dev)
    scaler = torch.amp.GradScaler(enabled=amp_dtype == torch.float16)

    data = StepDataset(str(shards.root), schedule, rank, world)
    loader = torch.utils.data.DataLoader(data, batch_size=None, sampler=range(start_step, total_steps),
                                         num_workers=cfg["num_workers"], pin_memory=dev.type == "cuda",
                                         persistent_workers=cfg["num_workers"] > 0,
                                         prefetch_factor=4 if cfg["num_workers"] > 0 else None)
    bar = tqdm(total=total_steps, initial=start_step, desc=f"pretrain {spec['backbone']}-{spec['size']}",
               unit="step", disable=not progress or rank != 0)
    log.info("%s: %d clips, %d steps/epoch, %d steps (%d warm-up), peak lr %.3g, batch %d on %s x%d",
             out_dir, len(shards), schedule.steps_per_epoch, total_steps, warmup_steps, peak_lr,
             cfg["batch_size"], dev, world)
    window_loss, window_n, t_window, t_start = 0.0, 0, time.perf_counter(), time.perf_counter()
    step = start_step
    train_model.train()
    for step, batch in enumerate(loader, start=start_step):
        lr = lr_at(step, peak_lr, warmup_steps, total_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = batch.to(dev, non_blocking=True)
        # The step's mask noise is drawn for the whole global batch and sliced per process, so a run on
        # N GPUs sees the same masks as a run on one (train/data.py draws the crops the same way).
        noise = torch.rand(cfg["batch_size"], model.num_patches, device=dev, generator=mask_generator(seed, step, dev))
        noise = noise[rank * len(batch):(rank + 1) * len(batch)]
        with torch.autocast(dev.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            loss, _, _ = train_model(batch, noise=noise)
        loss_value = loss.detach()
        if world > 1:  # the mean over processes (SUM / world: gloo has no AVG)
            torch.distributed.all_reduce(loss_value)
            loss_value = loss_value / world
        loss_value = float(loss_value)
        if not math.isfinite(loss_value):
            raise NonFiniteLossError(f"non-finite loss ({loss_value}) at step {step}; the last good checkpoint "
                                     f"is {state_path if state_path.exists() else 'none (no checkpoint yet)'}; "
                                     f"try a lower base_lr or precision fp32")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        window_loss += loss_value
        window_n += 1
        done = step + 1
        if rank == 0 and (done % cfg["log_every"] == 0 or done == total_steps):
            now = time.perf_counter()
            rows.append({"step": done, "epoch": round(done / schedule.steps_per_epoch, 4), "lr": lr,
                         "loss": window_loss / window_n, "seconds": round(now - t_start, 3),
                         "clips_per_s": round(window_n * cfg["batch_size"] / (now - t_window), 2)})
            bar.set_postfix(loss=f"{window_loss / window_n:.4f}", lr=f"{lr:.2e}")
            window_loss, window_n, t_window = 0.0, 0, now
        if rank == 0 and done % cfg["checkpoint_every"] == 0 and done < total_steps:
            _save_state(state_path, model, optimizer, done, rows, fingerprint)
            _write_metrics(out_dir / "metrics.csv", rows)
        bar.update()
    bar.close()
    summary = {"steps": total_steps, "warmup_steps": warmup_steps, "steps_per_epoch": schedule.steps_per_epoch,
               "peak_lr": peak_lr, "batch_size": cfg["batch_size"], "world_size": world, "seed": seed,
               "device": str(dev), "final_loss": rows[-1]["loss"] if rows else None,
               "train_seconds": round(time.perf_counter() - t_start, 2)}
    if rank == 0:
        if start_step < total_steps or not (out_dir / "model.safetensors").exists():
            _save_state(state_path, model, optimizer, total_steps, rows, fingerprint)
        _write_metrics(out_dir / "metrics.csv", rows)
        save_checkpoint(out_dir, model, spec, {"training": summary})
    if world > 1:
        torch.distributed.barrier()
    if created_group:
        torch.distributed.destroy_process_group()
    return summary


def initial_checkpoint(out_dir: str | Path, spec: dict, seed: int = 0) -> None:
    """The randomly initialised encoder (the 'random_init' baseline): same seed, no training."""
    seed_everything(seed)
    save_checkpoint(out_dir, build_model(spec), spec, {"training": {"steps": 0, "seed": seed}})
