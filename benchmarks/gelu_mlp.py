"""The Transformer's MLP block, fc2(gelu(fc1(x))), unfused against GELU fused into Triton GEMM epilogues.

    python benchmarks/gelu_mlp.py --out benchmarks/out/gelu_mlp.json [--sweep]

One Base layer's MLP (256 clips x 251 tokens = 64256 rows, D 768, H 3072), bf16 as under autocast,
forward + backward (all five gradients), for: the reference (F.linear, F.gelu, F.linear; eager), the
reference under torch.compile, and msmbench.ops.mlp_triton.gelu_mlp_triton. Each row also gives the
forward alone (no autograd graph) and the rate in TFLOP/s (2 M D H multiply-adds per GEMM, 6 GEMMs).
Parity first: the Triton path's output and gradients against the reference, both in fp32 (TF32 off), at
4096 rows. `--sweep` then times each Triton kernel alone over block configs (MLPKernelConfig), beside the
unfused PyTorch ops it replaces, and reports the fastest per kernel.
Needs CUDA and Triton.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
from functools import partial

import torch
import torch.nn.functional as F

from msmbench.bench import cuda_time_ms, machine_info
from msmbench.io import write_json
from msmbench.ops.mlp_triton import (
    BWD_CONFIG,
    FWD_CONFIG,
    MLPKernelConfig,
    gelu_mlp_reference,
    gelu_mlp_triton,
    linear_dgelu,
    linear_gelu,
)

NAMES = ("x", "w1", "b1", "w2", "b2")


def inputs(rows: int, dim: int, hidden: int, dtype: torch.dtype, seed: int = 0) -> list[torch.Tensor]:
    """x ~ N(0, 1); nn.Linear-like weights (pre-activations ~ N(0, 1)), small biases."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(rows, dim, device="cuda", generator=g)
    w1 = torch.randn(hidden, dim, device="cuda", generator=g) / dim ** 0.5
    b1 = 0.1 * torch.randn(hidden, device="cuda", generator=g)
    w2 = torch.randn(dim, hidden, device="cuda", generator=g) / hidden ** 0.5
    b2 = 0.1 * torch.randn(dim, device="cuda", generator=g)
    return [t.to(dtype) for t in (x, w1, b1, w2, b2)]


def fwd_bwd(fn, ins, grad):
    leaves = [t.detach().requires_grad_() for t in ins]
    out = fn(*leaves)
    out.backward(grad)
    return out, [t.grad for t in leaves]


def parity(rows: int = 4096, dim: int = 768, hidden: int = 3072) -> dict:
    torch.backends.cuda.matmul.allow_tf32 = False  # the default; the fp32 reference must be full precision
    ins = inputs(rows, dim, hidden, torch.float32, seed=1)
    grad = torch.randn(rows, dim, device="cuda", generator=torch.Generator(device="cuda").manual_seed(2))
    out, grads = fwd_bwd(gelu_mlp_triton, ins, grad)
    ref_out, ref_grads = fwd_bwd(gelu_mlp_reference, ins, grad)

    def rel(a, b):
        return ((a.double() - b.double()).norm() / b.double().norm()).item()

    errors = {"out": rel(out, ref_out), **{n: rel(a, b) for n, a, b in zip(NAMES, grads, ref_grads)}}
    return {"rows": rows, "relative_errors": errors, "max_relative_error": max(errors.values())}


def time_fwd(fn, ins, repeats: int) -> float:
    def step():
        with torch.no_grad():
            fn(*ins)

    return cuda_time_ms(step, warmup=3, repeats=repeats)


def time_fwd_bwd(fn, ins, repeats: int) -> float:
    leaves = [t.detach().requires_grad_() for t in ins]
    grad = torch.randn(ins[0].shape[0], ins[3].shape[0], device="cuda", dtype=ins[0].dtype)

    def step():
        fn(*leaves).backward(grad)
        for t in leaves:
            t.grad = None

    return cuda_time_ms(step, warmup=3, repeats=repeats)


def sweep_configs() -> list[MLPKernelConfig]:
    grid = itertools.product((128, 256), (128, 256), (64,), (4, 8), (3, 4))
    return [MLPKernelConfig(block_m=m, block_n=n, block_k=k, num_warps=w, num_stages=s) for m, n, k, w, s in grid]


def sweep(ins, repeats: int, record: dict, out_path: str) -> None:
    """Each kernel alone at each config, beside the unfused ops it replaces (GEMM + bias, GELU; GEMM, GELU
    backward, column sum)."""
    x, w1, b1, w2, _ = ins
    pre, _ = linear_gelu(x, w1, b1)
    g = torch.randn(x.shape, device="cuda", dtype=x.dtype)
    kernels = {
        "fwd": (lambda c: linear_gelu(x, w1, b1, c), lambda: F.gelu(F.linear(x, w1, b1))),
        "bwd": (lambda c: linear_dgelu(g, w2, pre, c),
                lambda: torch.ops.aten.gelu_backward(g @ w2, pre).sum(0)),
    }
    record["sweep"] = {}
    for kind, (ours, unfused) in kernels.items():
        ms = cuda_time_ms(unfused, warmup=3, repeats=repeats)
        rows = record["sweep"][kind] = [{"config": "unfused PyTorch", "ms": ms}]
        print(f"{kind} {'unfused PyTorch':34s} {ms:8.3f} ms", flush=True)
        for cfg in sweep_configs():
            try:
                row = {"config": dataclasses.asdict(cfg), "ms": cuda_time_ms(partial(ours, cfg), 3, repeats)}
            except Exception as e:  # noqa: BLE001 - a config that does not fit or compile is a result, not a crash
                row = {"config": dataclasses.asdict(cfg), "error": repr(e)[:300]}
            rows.append(row)
            print(f"{kind} {dataclasses.astuple(cfg)!s:34s} " + (f"{row['ms']:8.3f} ms" if "ms" in row
                                                                   else row["error"][:80]), flush=True)
            write_json(out_path, record)
        ok = [r for r in rows[1:] if "ms" in r]
        if ok:
            best = min(ok, key=lambda r: r["ms"])
            record[f"best_{kind}"] = best
            print(f"best {kind}: {best['config']} {best['ms']:.3f} ms", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=256 * 251)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--hidden", type=int, default=3072)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--sweep", action="store_true", help="time each Triton kernel alone over block configs")
    p.add_argument("--out", default="benchmarks/out/gelu_mlp.json")
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("gelu_mlp: skipped: needs CUDA")
        return 0
    record = {"benchmark": "gelu_mlp", "command": " ".join(sys.argv), "machine": machine_info(),
              "shape": {"rows": a.rows, "dim": a.dim, "hidden": a.hidden, "dtype": "bfloat16"},
              "fwd_config": dataclasses.asdict(FWD_CONFIG), "bwd_config": dataclasses.asdict(BWD_CONFIG),
              "parity_fp32": parity(dim=a.dim, hidden=a.hidden), "rows": []}
    print("parity vs reference (fp32, relative): " +
          ", ".join(f"{k} {v:.1e}" for k, v in record["parity_fp32"]["relative_errors"].items()), flush=True)
    ins = inputs(a.rows, a.dim, a.hidden, torch.bfloat16)
    tflop = 6 * 2 * a.rows * a.dim * a.hidden / 1e12
    candidates = [("reference, eager", gelu_mlp_reference),
                  ("reference, torch.compile", torch.compile(gelu_mlp_reference)),
                  ("gelu_mlp_triton", gelu_mlp_triton)]
    print(f"{'':28s} {'fwd+bwd ms':>10s} {'fwd ms':>8s} {'TFLOP/s':>8s}")
    for label, fn in candidates:
        try:
            ms, fwd = time_fwd_bwd(fn, ins, a.repeats), time_fwd(fn, ins, a.repeats)
            row = {"impl": label, "ms": ms, "fwd_ms": fwd, "tflops": tflop / (ms * 1e-3)}
            print(f"{label:28s} {ms:10.3f} {fwd:8.3f} {row['tflops']:8.1f}", flush=True)
        except Exception as e:  # noqa: BLE001 - e.g. torch.compile failing is a result, not a crash
            row = {"impl": label, "error": repr(e)[:300]}
            print(f"{label:28s} {row['error'][:80]}", flush=True)
        record["rows"].append(row)
        write_json(a.out, record)
    if a.sweep:
        sweep(ins, a.repeats, record, a.out)
    write_json(a.out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
