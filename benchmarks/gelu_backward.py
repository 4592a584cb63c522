"""The backward of fc1 + GELU at the paper's shape, without the GEMMs: GELU's gradient and fc1's bias gradient.

    python benchmarks/gelu_backward.py --out benchmarks/out/gelu_backward.json [--sweep]

One Base layer's MLP (batch 256 x 251 tokens, hidden 3,072), bf16 as under autocast: from the incoming
gradient and the pre-activation, GELU's gradient and its column sums (fc1's bias gradient). Rows: autograd's
ops eagerly (gelu_backward, then a sum), the same compiled by Inductor (what a compiled step runs), and our
Triton kernel that does both in one pass. Prints a table (ms, effective GB/s counting the kernel's necessary
traffic: two reads and one write of [M, N]) and writes a JSON record. `--sweep` times other tiles too.
Each timing covers 10 calls back to back, so that the CPU's launch overhead (tens of microseconds against
a ~0.4 ms kernel) overlaps the GPU's work as it does in a training step.
"""

from __future__ import annotations

import argparse
import itertools
import sys

import torch

from msmbench.bench import command_line, cuda_time_ms, machine_info
from msmbench.io import write_json
from msmbench.ops.gelu import gelu_backward_colsum_ref


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=256 * 251, help="tokens in the batch (M)")
    p.add_argument("--hidden", type=int, default=3072, help="fc1's width (N)")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--sweep", action="store_true", help="also time other tiles of the Triton kernel")
    p.add_argument("--out", default="benchmarks/out/gelu_backward.json")
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("gelu_backward: skipped: needs CUDA")
        return 0
    from msmbench.ops.gelu_triton import TILES, gelu_backward_colsum

    torch.manual_seed(0)
    grad, pre = (torch.randn(a.rows, a.hidden, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    ref_out, ref_colsum = gelu_backward_colsum_ref(grad, pre)
    traffic = 3 * grad.numel() * grad.element_size()
    compiled = torch.compile(gelu_backward_colsum_ref)
    rows = [("autograd ops, eager", lambda: gelu_backward_colsum_ref(grad, pre), {}),
            ("autograd ops, Inductor", lambda: compiled(grad, pre), {}),
            ("ours: one Triton pass", lambda: gelu_backward_colsum(grad, pre), dict(TILES))]
    if a.sweep:
        for r, bm, bn, w, st in itertools.product((256, 512, 1024), (8, 16, 32, 64), (64, 128, 256),
                                                  (4, 8), (1, 3)):
            tiles = dict(rows=r, block_m=bm, block_n=bn, num_warps=w, stages=st)
            if tiles != TILES and 2048 <= bm * bn <= 8192:
                rows.append(("sweep", lambda t=tiles: gelu_backward_colsum(grad, pre, **t), tiles))
    print(f"GELU backward + column sums, [{a.rows} x {a.hidden}] bf16, {torch.cuda.get_device_name()}")
    print(f"{'ms':>8} {'GB/s':>8}  path")
    records = []
    for label, fn, tiles in rows:
        out, colsum = fn()
        error = ((colsum - ref_colsum).norm() / ref_colsum.norm()).item()
        ms = cuda_time_ms(lambda: [fn() for _ in range(10)], warmup=2, repeats=a.repeats) / 10
        records.append({"label": label, "tiles": tiles, "ms": ms, "gb_per_s": traffic / ms / 1e6,
                        "max_abs_diff_out": (out.float() - ref_out.float()).abs().max().item(),
                        "colsum_rel_error": error})
        print(f"{ms:8.3f} {traffic / ms / 1e6:8.0f}  {label} {tiles or ''}", flush=True)
    best = min((r for r in records if r["tiles"]), key=lambda r: r["ms"])
    print(f"fastest tiles: {best['tiles']} at {best['ms']:.3f} ms")
    write_json(a.out, {"benchmark": "gelu_backward", "command": command_line(), "machine": machine_info(),
                       "shape": [a.rows, a.hidden], "records": records})
    return 0


if __name__ == "__main__":
    sys.exit(main())
