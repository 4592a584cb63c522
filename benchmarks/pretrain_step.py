"""One pretraining step of each backbone at the paper's setting on one GPU (issues 3 and 7).

    python benchmarks/pretrain_step.py --size base --batch 256 --out benchmarks/out/pretrain_step.json

Forward + backward + fused AdamW in bf16 autocast at 251 tokens (2 s of audio), each backbone on its fast
path (SDPA; mamba-ssm's fused kernels; mlstm_kernels' chunkwise Triton). Prints a table (step ms, clips/s,
peak GiB, MFU against the bf16 matmul rate measured here) and writes a JSON record. Needs CUDA.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from msmbench.bench import HEADER, format_record, machine_info, matmul_peak_tflops, train_step


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbones", nargs="+", default=["transformer", "mamba", "xlstm"])
    p.add_argument("--size", default="base")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--tokens", type=int, default=251)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd models")
    p.add_argument("--set", nargs="*", default=[], metavar="BACKBONE.KEY=VALUE",
                   help="extra rows with backbone options, e.g. transformer.attention=explicit")
    p.add_argument("--out", default="benchmarks/out/pretrain_step.json")
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("pretrain_step: skipped: needs CUDA")
        return 0
    peak = matmul_peak_tflops()
    print(f"bf16 matmul peak on {torch.cuda.get_device_name()}: {peak:.0f} TFLOP/s")
    rows = [(b, {}, False) for b in a.backbones]
    rows += [(b, {}, True) for b in a.backbones] if a.compile else []
    for item in a.set:
        key, value = item.split("=", 1)
        backbone, option = key.split(".", 1)
        rows.append((backbone, {option: json.loads(value) if value[:1] in "0123456789-tf[{" else value}, False))
    print(HEADER)
    records = []
    for backbone, options, compiled in rows:
        rec = train_step(backbone, a.size, a.batch, a.tokens, options, compile=compiled, repeats=a.repeats,
                         peak_tflops=peak)
        records.append(rec)
        print(format_record(rec) + ("  (compiled)" if compiled else "") + (f"  {options}" if options else ""),
              flush=True)
    out = {"benchmark": "pretrain_step", "command": " ".join(sys.argv), "machine": machine_info(),
           "matmul_peak_tflops": peak, "records": records}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
