"""The Mamba mixer's causal depthwise conv + SiLU at the paper's shape: our CUDA kernel against the others.

    python benchmarks/mamba_conv.py --out benchmarks/out/mamba_conv.json

One Base layer's conv (batch 256 x 251 tokens, d_inner 2304, width 4) forward + backward (input, weight and
bias gradients), bf16 input as under autocast, taken as a slice of the (B, L, 2 d_inner) projection as the
mixer passes it. Rows: our PyTorch conv (the "torch"/"triton" kernels' conv; eager and torch.compile'd, the
latter what the compiled step ran before the CUDA conv), nn.Conv1d on (B, D, L) under autocast as
mamba_simple runs it without causal-conv1d, causal-conv1d's kernel where installed, and ours. Each row's
effective bandwidth counts the bytes the CUDA kernel must move (forward: read x, write y; backward: read x
and dy, write dx) over its time, against a device-to-device copy measured in the same run. Parity first:
ours against the float64 conv at batch 8. Needs CUDA.
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F
from mamba_scan import time_fwd, time_fwd_bwd

from msmbench.bench import command_line, cuda_time_ms, machine_info
from msmbench.io import write_json
from msmbench.ops.causal_conv1d_cuda import causal_conv1d_cuda
from msmbench.ops.selective_scan import causal_conv1d, mamba_kernels


def inputs(batch: int, length: int, dim: int, width: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator(device="cuda").manual_seed(seed)
    wide = torch.randn(batch, length, 2 * dim, device="cuda", generator=g).to(torch.bfloat16)
    weight = torch.randn(dim, width, device="cuda", generator=g) / width ** 0.5
    return [wide[..., :dim], weight, torch.randn(dim, device="cuda", generator=g)]


def ours(ins):
    return causal_conv1d_cuda(*ins, activation="silu")


def pytorch_conv(ins):
    return causal_conv1d(*ins, activation="silu").to(torch.bfloat16)   # the mixer casts to the autocast dtype


def conv1d_module(ins):
    """mamba_simple without causal-conv1d: nn.Conv1d on (B, D, L) under autocast, cut to L, SiLU."""
    x, weight, bias = ins
    with torch.autocast("cuda", dtype=torch.bfloat16):
        return F.silu(F.conv1d(x, weight[:, None], bias, padding=weight.shape[1] - 1,
                               groups=x.shape[1])[..., :x.shape[-1]])


def causal_conv1d_package(ins):
    x, weight, bias = ins
    return mamba_kernels().causal_conv1d_fn(x, weight, bias, activation="silu")


def to_bdl(ins):
    """(B, L, D) slice -> a (B, D, L) slice of a (B, 2D, L) projection, as mamba_simple's in_proj makes it."""
    x, weight, bias = ins
    wide = torch.cat([x, x], dim=-1).transpose(1, 2).contiguous()
    return [wide[:, :x.shape[-1]], weight, bias]


def parity(batch: int = 8) -> dict:
    x, weight, bias = inputs(batch, 251, 2304, 4, seed=1)
    leaves = [t.detach().requires_grad_() for t in (x, weight, bias)]
    ref_leaves = [t.detach().double().requires_grad_() for t in (x, weight, bias)]
    out = ours(leaves)
    ref = F.silu(F.conv1d(ref_leaves[0].transpose(1, 2), ref_leaves[1][:, None], ref_leaves[2], padding=3,
                          groups=2304)[..., :251]).transpose(1, 2)
    dout = torch.randn_like(out)
    grads = torch.autograd.grad(out, leaves, dout)
    ref_grads = torch.autograd.grad(ref, ref_leaves, dout.double())

    def rel(a, b):
        return ((a.double() - b).norm() / b.norm()).item()

    return {"out": rel(out, ref), **{n: rel(a, b) for n, a, b in zip(("x", "weight", "bias"), grads, ref_grads)}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--length", type=int, default=251)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--out", default="benchmarks/out/mamba_conv.json")
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("mamba_conv: skipped: needs CUDA")
        return 0
    dim = 2304
    elems = a.batch * a.length * dim
    src = torch.empty(elems, dtype=torch.bfloat16, device="cuda")
    dst = torch.empty_like(src)
    copy_gbs = 2 * 2 * elems / cuda_time_ms(lambda: dst.copy_(src), repeats=a.repeats) / 1e6
    record = {"benchmark": "mamba_conv", "command": command_line(), "machine": machine_info(),
              "shape": {"batch": a.batch, "length": a.length, "d_inner": dim, "width": 4},
              "copy_GBps": copy_gbs, "parity_vs_float64": parity(), "rows": []}
    print("ours vs float64 (relative): " + ", ".join(f"{k} {v:.1e}" for k, v in record["parity_vs_float64"].items()))
    print(f"device-to-device copy: {copy_gbs:.0f} GB/s\n{'kernel':44s} {'fwd+bwd ms':>10s} {'fwd ms':>8s} "
          f"{'GB/s':>6s}")
    ins = inputs(a.batch, a.length, dim, 4)
    rows = [("msmbench cuda", ours, ins), ("msmbench pytorch conv, eager", pytorch_conv, ins),
            ("msmbench pytorch conv, compiled", torch.compile(pytorch_conv), ins),
            ("nn.Conv1d (B, D, L), autocast", conv1d_module, to_bdl(ins))]
    if mamba_kernels().causal_conv1d_fn is not None:
        rows.append(("causal-conv1d causal_conv1d_fn", causal_conv1d_package, to_bdl(ins)))
    for label, fn, args in rows:
        ms, fwd_ms = time_fwd_bwd(fn, args, a.repeats), time_fwd(fn, args, a.repeats)
        gbs = 2 * 5 * elems / ms / 1e6
        record["rows"].append({"kernel": label, "ms": ms, "fwd_ms": fwd_ms, "effective_GBps": gbs})
        print(f"{label:44s} {ms:10.3f} {fwd_ms:8.3f} {gbs:6.0f}", flush=True)
        write_json(a.out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
