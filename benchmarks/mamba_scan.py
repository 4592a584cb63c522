"""Mamba-1 selective scan at the paper's shape: mamba-ssm's CUDA kernel against our CUDA and Triton kernels.

    python benchmarks/mamba_scan.py --out benchmarks/out/mamba_scan.json [--sweep cuda|triton]

One Base layer's scan (batch 256 x 251 tokens, d_inner 2304, d_state 24, z gating, delta bias +
softplus, D skip) forward + backward, bf16 inputs as under autocast. mamba-ssm's `selective_scan_fn`
takes (B, D, L) tensors, ours (B, L, D): each gets its own layout, made contiguous before timing, so the
times are the kernels' own. Parity first: our outputs and all gradients against mamba-ssm's in fp32 at
the same shape (batch 8). Each kernel's forward alone is timed too (where the time goes). `--sweep` times
one of our kernels at several launch shapes (CudaScanConfig / ScanConfig) around its default.
Needs CUDA; the Triton rows need Triton, the baseline row mamba-ssm (each skipped without).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import torch

from msmbench.bench import command_line, cuda_time_ms, machine_info
from msmbench.io import write_json
from msmbench.ops import triton_installed
from msmbench.ops.selective_scan import has_fused_scan, mamba_kernels
from msmbench.ops.selective_scan_cuda import DEFAULT_CUDA_CONFIG, launch_config, selective_scan_cuda
from msmbench.ops.selective_scan_triton import DEFAULT_CONFIG, selective_scan_triton

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def inputs(batch: int, length: int, dim: int, state: int, dtype: torch.dtype, seed: int = 0) -> list[torch.Tensor]:
    """Channels-last (B, L, D) / (B, L, N) tensors with Mamba's initial value ranges."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    u = torch.randn(batch, length, dim, device="cuda", generator=g)
    delta = torch.randn(batch, length, dim, device="cuda", generator=g) * 0.5
    A = -torch.arange(1, state + 1, device="cuda", dtype=torch.float32).repeat(dim, 1)
    Bm, Cm = (torch.randn(batch, length, state, device="cuda", generator=g) for _ in range(2))
    D = torch.ones(dim, device="cuda")
    z = torch.randn(batch, length, dim, device="cuda", generator=g)
    bias = torch.log(torch.expm1(torch.empty(dim, device="cuda").uniform_(1e-3, 1e-1, generator=g)))
    return [u.to(dtype), delta.to(dtype), A, Bm.to(dtype), Cm.to(dtype), D, z.to(dtype), bias]


def to_bdl(ins: list[torch.Tensor]) -> list[torch.Tensor]:
    u, delta, A, Bm, Cm, D, z, bias = ins
    return [t.transpose(1, 2).contiguous() for t in (u, delta)] + [A] + \
        [t.transpose(1, 2).contiguous() for t in (Bm, Cm)] + [D, z.transpose(1, 2).contiguous(), bias]


def run_triton(ins, config=None):
    u, delta, A, Bm, Cm, D, z, bias = ins
    return selective_scan_triton(u, delta, A, Bm, Cm, D, z, bias, True, config=config)


def run_cuda(ins, config=None):
    u, delta, A, Bm, Cm, D, z, bias = ins
    return selective_scan_cuda(u, delta, A, Bm, Cm, D, z, bias, True, config=config)


def run_mamba_ssm(ins):
    u, delta, A, Bm, Cm, D, z, bias = ins
    return mamba_kernels().selective_scan_fn(u, delta, A, Bm, Cm, D, z, bias, True)


def fwd_bwd(fn, ins):
    leaves = [t.detach().requires_grad_() for t in ins]
    out = fn(leaves)
    out.backward(torch.ones_like(out))
    return out, [t.grad for t in leaves]


def parity(run, batch: int = 8) -> dict:
    ins = inputs(batch, 251, 2304, 24, torch.float32, seed=1)
    out, grads = fwd_bwd(run, ins)
    ref_out, ref_grads = fwd_bwd(run_mamba_ssm, to_bdl(ins))
    ref_out = ref_out.transpose(1, 2)
    ref_grads = [g.transpose(1, 2) if g.dim() == 3 else g for g in ref_grads]  # (B, D|N, L) -> ours

    def rel(a, b):
        return ((a.double() - b.double()).norm() / b.double().norm()).item()

    return {"out": rel(out, ref_out), **{n: rel(a, b) for n, a, b in zip(NAMES, grads, ref_grads)}}


def time_fwd(fn, ins, repeats: int) -> float:
    """The forward alone (no autograd graph): with time_fwd_bwd, where each kernel's time goes."""
    def step():
        with torch.no_grad():
            fn(ins)

    return cuda_time_ms(step, warmup=2, repeats=repeats)


def time_fwd_bwd(fn, ins, repeats: int) -> float:
    leaves = [t.detach().requires_grad_() for t in ins]
    grad = None

    def step():
        nonlocal grad
        out = fn(leaves)
        grad = torch.ones_like(out) if grad is None else grad
        out.backward(grad)
        for t in leaves:
            t.grad = None

    return cuda_time_ms(step, warmup=2, repeats=repeats)


# Around each default (itself the best of the earlier sweeps, BENCHMARKS.md).
SWEEPS = {
    "triton": [DEFAULT_CONFIG] + [dataclasses.replace(DEFAULT_CONFIG, **kw) for kw in (
        {"fwd_chunk": 4}, {"fwd_chunk": 16}, {"fwd_warps": 2}, {"fwd_block_d": 128},
        {"fwd_block_d": 128, "fwd_warps": 8}, {"bwd_block_d": 64}, {"bwd_block_d": 64, "bwd_warps": 8},
        {"save_every": 64})],
    "cuda": [DEFAULT_CUDA_CONFIG] + [dataclasses.replace(DEFAULT_CUDA_CONFIG, **kw) for kw in (
        {"reduce_steps": 1}, {"reduce_steps": 4}, {"segment": 16, "reduce_steps": 4}, {"segment": 4},
        {"channels": 64}, {"channels": 16}, {"threads_per_channel": 8, "channels": 16},
        {"threads_per_channel": 8, "channels": 16, "segment": 16, "reduce_steps": 4},
        {"threads_per_channel": 2, "channels": 32, "reduce_steps": 4},
        # more, smaller blocks: for few rows (batch x d_inner), where the default grid leaves SMs idle
        {"channels": 8}, {"threads_per_channel": 8, "channels": 8}, {"threads_per_channel": 8, "channels": 4},
        {"threads_per_channel": 16, "channels": 2})],
}
KERNELS = {"cuda": ("msmbench cuda", run_cuda), "triton": ("msmbench triton", run_triton)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--length", type=int, default=251)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--sweep", choices=sorted(SWEEPS), help="also time this kernel at other launch shapes")
    p.add_argument("--out", default="benchmarks/out/mamba_scan.json")
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("mamba_scan: skipped: needs CUDA")
        return 0
    # Without --sweep each kernel runs the launch shape a call without `config` gets at this batch.
    shapes = {"cuda": launch_config(a.batch * 2304, torch.device("cuda")), "triton": DEFAULT_CONFIG}
    kernels = {k: (*v, shapes[k]) for k, v in KERNELS.items() if k != "triton" or triton_installed()}
    record = {"benchmark": "mamba_scan", "command": command_line(), "machine": machine_info(),
              "shape": {"batch": a.batch, "length": a.length, "d_inner": 2304, "d_state": 24}, "rows": [],
              "parity_vs_mamba_ssm_fp32": {}}
    if has_fused_scan():
        for key, (_label, run, _cfg) in kernels.items():
            record["parity_vs_mamba_ssm_fp32"][key] = errs = parity(run)
            print(f"{key} parity vs mamba-ssm (fp32, relative): " + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()),
                  flush=True)
    ins = inputs(a.batch, a.length, 2304, 24, torch.bfloat16)

    def add(label, run, ins, config=None):
        row = {"kernel": label, "config": dataclasses.asdict(config) if config else None}
        try:
            row.update(ms=time_fwd_bwd(run, ins, a.repeats), fwd_ms=time_fwd(run, ins, a.repeats))
            text = f"fwd+bwd {row['ms']:8.2f} ms  fwd {row['fwd_ms']:8.2f} ms"
        except Exception as e:  # noqa: BLE001 - a launch shape that does not compile is a result, not a crash
            row["error"] = text = repr(e)[:300]
        record["rows"].append(row)
        print(f"{label:28s} {str(dataclasses.astuple(config)) if config else '':14s} {text}", flush=True)
        write_json(a.out, record)

    if has_fused_scan():
        add("mamba-ssm selective_scan_fn", run_mamba_ssm, to_bdl(ins))
    for key, (label, run, cfg) in kernels.items():
        for c in SWEEPS[key] if a.sweep == key else [cfg]:
            add(label, lambda x, c=c, run=run: run(x, c), ins, c)
    for key, (label, _run, _cfg) in kernels.items():
        ok = [r for r in record["rows"] if r["kernel"] == label and "ms" in r]
        if ok:
            record[f"best_{key}"] = best = min(ok, key=lambda r: r["ms"])
            print(f"best {key}: {best['config']} {best['ms']:.2f} ms")
    write_json(a.out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
