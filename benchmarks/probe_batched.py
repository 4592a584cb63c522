"""Time the batched probe trainer against training the same members one by one.

Members: every configuration of the chosen protocol ("paper": 2) x `--seeds` seeds, on one fold of random
data (Gaussian class clusters), trained for exactly `--epochs` epochs (patience set so that nobody stops
early, validation every epoch). Each path runs `--repeats` times, interleaved; the fastest run counts.
The one-by-one baseline is the plain reference (`train_reference`: nn.Sequential + torch.optim.Adam) on
the same members and random streams; the largest state difference between the two paths is reported as a
parity check. `--group` caps the members per batched group (on a small CPU, small groups stay in cache).

    python benchmarks/probe_batched.py --device cpu --n 2048 --dim 960 --classes 50 --seeds 4 \
        --epochs 3 --threads 1 --out /tmp/probe_bench.json
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from msmbench.io import write_json
from msmbench.probe import (MemberKey, MemberSpec, TrainData, protocol, train_batched, train_members,
                            train_reference)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--n", type=int, default=4096, help="training rows (validation: n // 4)")
    p.add_argument("--dim", type=int, default=960, help="embedding width")
    p.add_argument("--classes", type=int, default=50)
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--protocol", default="paper", choices=["paper", "hear"])
    p.add_argument("--hidden-dim", type=int, default=1024)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--group", type=int, default=None,
                   help="members per batched group (default: all members of a depth together)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each path, interleaved; the minimum counts")
    p.add_argument("--skip-reference", action=argparse.BooleanOptionalAction, default=False,
                   help="time only the batched trainer")
    p.add_argument("--out", required=True, help="JSON record path")
    return p.parse_args()


def make_data(n: int, dim: int, classes: int, device: torch.device) -> TrainData:
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(classes, dim, generator=g)

    def split(rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, classes, (rows,), generator=g)
        return (centers[y] + 2 * torch.randn(rows, dim, generator=g)).to(device), y.to(device)

    return TrainData(*split(n), *split(max(2, n // 4)))


def timed(fn):
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - start


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    proto = protocol(args.protocol, hidden_dim=args.hidden_dim, max_epochs=args.epochs, check_every=1,
                     patience=args.epochs + 1, n_configs=None)
    specs = [MemberSpec(MemberKey(s, c.config_id, 0), c) for s in range(args.seeds) for c in proto.grid()]
    data = make_data(args.n, args.dim, args.classes, device)
    common = (data, args.classes, "multiclass", "top1_acc", proto)

    # warm-up (allocator, kernels, the optimiser's lazy imports) on a tiny run of each path, not timed
    tiny = make_data(64, args.dim, args.classes, device)
    train_batched(specs[:1], tiny, *common[1:], device=device, progress=False)
    train_reference(specs[0], tiny, *common[1:], device=device)

    def run_batched():
        return list(train_members(specs, data, args.classes, "multiclass", "top1_acc", proto, device,
                                  progress=False, max_group=args.group).values())

    def run_reference():
        return [train_reference(s, *common, device=device) for s in specs]

    times: dict[str, list[float]] = {"batched": [], "reference": []}
    for _ in range(args.repeats):  # interleaved, so that load drifts hit both paths alike
        batched, t = timed(run_batched)
        times["batched"].append(t)
        if not args.skip_reference:
            reference, t = timed(run_reference)
            times["reference"].append(t)
    t_batched = min(times["batched"])
    record = {"members": len(specs), "batched_s": t_batched, "runs_s": times}
    if not args.skip_reference:
        t_reference = min(times["reference"])
        by_key = {o.spec.key: o for o in batched}
        diff = max((by_key[r.spec.key].state[k].float() - v.float()).abs().max().item()
                   for r in reference for k, v in r.state.items())
        same_valid = all(by_key[r.spec.key].valid_history == r.valid_history for r in reference)
        record.update(reference_s=t_reference, speedup=t_reference / t_batched, max_state_diff=diff,
                      valid_scores_equal=same_valid)
    member_epochs = len(specs) * args.epochs
    record["batched_member_epochs_per_s"] = member_epochs / t_batched
    if "reference_s" in record:
        record["reference_member_epochs_per_s"] = member_epochs / record["reference_s"]
    record.update(
        args=vars(args),
        machine={"platform": platform.platform(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
                 "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                 "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"},
    )
    print_table(record, args)
    write_json(args.out, record)


def print_table(r: dict, args: argparse.Namespace) -> None:
    group = args.group or "all"
    print(f"{r['members']} members ({args.protocol}, {args.seeds} seeds, groups of {group}), n={args.n} dim={args.dim} "
          f"classes={args.classes} hidden={args.hidden_dim} epochs={args.epochs} on {r['machine']['device_name']}")
    print(f"{'path':<22}{'seconds':>10}{'member-epochs/s':>18}")
    print(f"{'batched':<22}{r['batched_s']:>10.2f}{r['batched_member_epochs_per_s']:>18.2f}")
    if "reference_s" in r:
        print(f"{'one by one (ref.)':<22}{r['reference_s']:>10.2f}{r['reference_member_epochs_per_s']:>18.2f}")
        print(f"speedup x{r['speedup']:.2f}; max |state diff| {r['max_state_diff']:.2e}; "
              f"validation scores equal: {r['valid_scores_equal']}")


if __name__ == "__main__":
    main()
