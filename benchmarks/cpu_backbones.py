"""Forward + backward time of every registered backbone at its `cpu` size, on CPU.

The default config pretrains all backbones at size `cpu` on a 2-core machine; this checks that each one
costs about what the Transformer does (target: within 3x). Backbones come from the registry, so a new one
is picked up without editing this file. The input is random tokens [batch, tokens, dim] (cls + 250
patches), the loss the mean square of the output.

Timings on shared machines are noisy: backbones are timed round-robin (each repeat times every backbone
once), so load from other processes hits them alike, and the median over `--repeats` rounds after
`--warmup` rounds is reported with min and max. The record keeps the Linux CPU-pressure reading
(/proc/pressure/cpu, % of time some task waited for a CPU) before and after, to judge how noisy a run was.

    python benchmarks/cpu_backbones.py --batch 32 --tokens 251 --repeats 10 --threads 2 \
        --out benchmarks/out/cpu_backbones.json
    python benchmarks/cpu_backbones.py --backbones transformer mamba --set mamba.d_state=24

--no-malloc-trim sets glibc's M_TRIM_THRESHOLD / M_MMAP_THRESHOLD (mallopt) so freed memory stays in the
heap: PyTorch's CPU allocator does not cache, and a backbone whose activations make glibc return and
re-take memory pays page faults on every step (measured: ~30k minor faults, ~10% of the Mamba step).
Off by default, so the default measures what a plain process gets.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import datetime
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from msmbench.models.registry import backbone_config, backbone_names, backbone_spec, build_backbone
from msmbench.runtime import keep_freed_memory


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_pressure() -> str | None:
    try:
        return Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None


def parse_overrides(items: list[str]) -> dict[str, dict]:
    """["mamba.d_state=24", ...] -> {"mamba": {"d_state": 24}}; values are Python literals (else strings)."""
    out: dict[str, dict] = {}
    for item in items:
        key, _, value = item.partition("=")
        name, _, field = key.rpartition(".")
        if not name or not field or not _:
            raise SystemExit(f"--set expects BACKBONE.FIELD=VALUE, got {item!r}")
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass
        out.setdefault(name, {})[field] = value
    return out


def fwd_bwd_seconds(model: torch.nn.Module, x: torch.Tensor) -> float:
    model.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    model(x).float().square().mean().backward()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=251, help="sequence length (cls + 250 patches)")
    parser.add_argument("--size", default="cpu")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backbones", nargs="*", default=None, help="default: every registered backbone")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], metavar="BACKBONE.FIELD=VALUE",
                        help="config overrides, e.g. mamba.d_state=24")
    parser.add_argument("--no-malloc-trim", action="store_true", help="see the module docstring")
    parser.add_argument("--out", default="benchmarks/out/cpu_backbones.json")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    malloc_tuned = keep_freed_memory() if args.no_malloc_trim else False
    overrides = parse_overrides(args.set)
    models, inputs, configs = {}, {}, {}
    for name in args.backbones or backbone_names():
        spec = backbone_spec(name)
        if args.size not in spec.sizes:
            print(f"skip {name}: no size {args.size!r}", file=sys.stderr)
            continue
        torch.manual_seed(args.seed)
        configs[name] = backbone_config(name, args.size, **overrides.get(name, {}))
        models[name] = build_backbone(name, configs[name]).train()
        inputs[name] = torch.randn(args.batch, args.tokens, models[name].dim)

    pressure_before = cpu_pressure()
    times: dict[str, list[float]] = {name: [] for name in models}
    for i in range(args.warmup + args.repeats):
        for name, model in models.items():
            dt = fwd_bwd_seconds(model, inputs[name])
            if i >= args.warmup:
                times[name].append(dt)
    pressure_after = cpu_pressure()

    rows = []
    for name, model in models.items():
        t = times[name]
        rows.append({"backbone": name, "config": dataclasses.asdict(configs[name]),
                     "params": sum(p.numel() for p in model.parameters()),
                     "ms_median": 1e3 * statistics.median(t), "ms_min": 1e3 * min(t), "ms_max": 1e3 * max(t),
                     "ms_all": [1e3 * s for s in t]})
    ref = next((r for r in rows if r["backbone"] == "transformer"), None)
    for r in rows:
        r["ratio_vs_transformer"] = r["ms_median"] / ref["ms_median"] if ref else None
        r["ratio_min_vs_transformer_min"] = r["ms_min"] / ref["ms_min"] if ref else None

    print(f"fwd+bwd, size {args.size}, batch {args.batch} x {args.tokens} tokens, {args.threads} threads, "
          f"{args.repeats} round-robin repeats; {cpu_model()}, torch {torch.__version__}")
    print(f"{'backbone':<14} {'params':>10} {'median ms':>10} {'min-max ms':>15} {'x transformer':>14} "
          f"{'(min/min)':>10}")
    for r in rows:
        ratio = f"{r['ratio_vs_transformer']:.2f}" if ref else "-"
        ratio_min = f"{r['ratio_min_vs_transformer_min']:.2f}" if ref else "-"
        print(f"{r['backbone']:<14} {r['params']:>10,} {r['ms_median']:>10.1f} "
              f"{r['ms_min']:>7.0f}-{r['ms_max']:<7.0f} {ratio:>14} {ratio_min:>10}")
    print(f"CPU pressure before: {pressure_before}\nCPU pressure after:  {pressure_after}")

    record = {
        "benchmark": "cpu_backbones",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
        "machine": {"cpu": cpu_model(), "logical_cpus": torch.multiprocessing.cpu_count(),
                    "threads": torch.get_num_threads(), "platform": platform.platform(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "cpu_pressure_before": pressure_before, "cpu_pressure_after": pressure_after,
                    "malloc_no_trim": malloc_tuned},
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "results": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"wrote {out}")
    return record


if __name__ == "__main__":
    main()
