"""One pretraining step of each Base backbone at the paper's setting, ours beside the released code's way.

    python benchmarks/pretrain_step.py --out benchmarks/out/pretrain_step.json

Forward + backward + fused AdamW of the whole SSAST model (patch embedding, encoder, heads, loss) at
251 tokens (2 s of audio), batch 256, on one GPU. For every backbone, in one run, a straightforward
implementation in the style of the released code and our fast path:

    transformer  released: explicit softmax attention, fp16 autocast + GradScaler, | ours: SDPA, bf16, compiled;
                           autograd's packed q, k, v gradient and its                bf16 residual stream;
                           fc1 + GELU gradient                                       CUDA graphs; q, k, v
                                                                                     gradients not packed; k
                                                                                     and v biases folded; fc1
                                                                                     + GELU backward fused
    mamba        released: mamba-ssm's kernels as its Mamba module calls them      | ours: CUDA scan (kernel
                                                                                     "cuda": our CUDA conv and
                                                                                     scan), bf16, eager,
                                                                                     compiled, CUDA graphs;
                                                                                     mamba-ssm's or our Triton
                                                                                     scan, compiled
    xlstm        released: the quadratic parallel form (float32 cell)              | ours: Triton mLSTM kernel,
                                                                                     eager and compiled

Prints a table (step ms, clips/s, peak GiB, MFU against the bf16 matmul rate measured in the same run,
speed-up over the released style) and writes a JSON record. The matmul rate is measured before and after
the rows, and the final table's MFU is against the higher of the two: on one H100 two runs ten minutes
apart measured 729 and 788 TFLOP/s, and a low denominator would flatter MFU. MFU counts the FLOPs torch's
FlopCounterMode sees (matmuls, convolutions, attention); scans are not counted, so Mamba's and xLSTM's are
lower bounds.
`--set backbone.option=value` adds rows with other backbone options (e.g. xlstm.kernel=chunkwise_native).
"""

from __future__ import annotations

import argparse
import json
import sys
import torch

from msmbench.bench import HEADER, command_line, format_record, machine_info, matmul_peak_tflops, mfu, train_step
from msmbench.io import write_json

# backbone -> [(label, options, autocast dtype, compile or a torch.compile mode)]: the released code's style
# first, then ours
ROWS = {
    "transformer": [("released: explicit attention, fp16",
                     {"attention": "explicit", "qkv_grad": "packed", "mlp_grad": "autograd"}, torch.float16, False),
                    ("ours: SDPA, bf16", {}, torch.bfloat16, False),
                    ("ours: SDPA, bf16, compiled", {}, torch.bfloat16, True),
                    ("ours: SDPA, bf16, bf16 residual, compiled", {"residual": "autocast"}, torch.bfloat16, True),
                    ("ours: SDPA, bf16, compiled, CUDA graphs", {}, torch.bfloat16, "reduce-overhead"),
                    ("ours: SDPA, bf16, bf16 residual, compiled, CUDA graphs", {"residual": "autocast"},
                     torch.bfloat16, "reduce-overhead"),
                    ("ours: SDPA, bf16, bf16 residual, packed qkv gradient, compiled, CUDA graphs",
                     {"residual": "autocast", "qkv_grad": "packed"}, torch.bfloat16, "reduce-overhead"),
                    ("ours: SDPA, bf16, bf16 residual, k and v biases added directly, compiled, CUDA graphs",
                     {"residual": "autocast", "kv_bias": "direct"}, torch.bfloat16, "reduce-overhead"),
                    ("ours: SDPA, bf16, bf16 residual, autograd fc1 + GELU gradient, compiled, CUDA graphs",
                     {"residual": "autocast", "mlp_grad": "autograd"}, torch.bfloat16, "reduce-overhead")],
    "mamba": [("released: mamba-ssm kernels", {"kernel": "mamba_ssm"}, torch.bfloat16, False),
              ("ours: CUDA scan", {"kernel": "cuda"}, torch.bfloat16, False),
              ("ours: CUDA scan, compiled", {"kernel": "cuda"}, torch.bfloat16, True),
              ("ours: CUDA scan, compiled, CUDA graphs", {"kernel": "cuda"}, torch.bfloat16, "reduce-overhead"),
              ("ours: mamba-ssm kernels, compiled", {"kernel": "mamba_ssm"}, torch.bfloat16, True),
              ("ours: Triton scan, compiled", {"kernel": "triton"}, torch.bfloat16, True)],
    "xlstm": [("released: parallel form", {"kernel": "parallel"}, torch.bfloat16, False),
              ("ours: Triton mLSTM", {"kernel": "triton"}, torch.bfloat16, False),
              ("ours: Triton mLSTM, compiled", {"kernel": "triton"}, torch.bfloat16, True)],
}


def parse_value(value: str):
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def row_line(rec: dict) -> str:
    speedup = f"{rec['speedup_vs_released']:>11.2f}x" if "speedup_vs_released" in rec else f"{'':>12}"
    return format_record(rec) + speedup + f"  {rec['label']}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbones", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--size", default="base")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--tokens", type=int, default=251)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--only", nargs="*", default=[], metavar="TEXT",
                   help="keep only the rows whose label contains one of these texts (the released row always runs)")
    p.add_argument("--set", nargs="*", default=[], metavar="BACKBONE.KEY=VALUE",
                   help="extra rows with backbone options, e.g. xlstm.kernel=chunkwise_native")
    p.add_argument("--out", default="benchmarks/out/pretrain_step.json")
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("pretrain_step: skipped: needs CUDA")
        return 0
    peak = matmul_peak_tflops()
    print(f"bf16 matmul peak on {torch.cuda.get_device_name()}: {peak:.0f} TFLOP/s")
    rows = [(b, *row) for b in a.backbones for row in ROWS[b]
            if not a.only or row[0].startswith("released") or any(text in row[0] for text in a.only)]
    for item in a.set:
        key, value = item.split("=", 1)
        backbone, option = key.split(".", 1)
        rows.append((backbone, f"extra: {option}={value}", {option: parse_value(value)}, torch.bfloat16, False))
    print(HEADER + f"{'x released':>12}  path")
    records, released = [], {}
    for backbone, label, options, dtype, compiled in rows:
        rec = train_step(backbone, a.size, a.batch, a.tokens, options, compile=compiled, repeats=a.repeats,
                         peak_tflops=peak, amp_dtype=dtype)
        rec["label"] = label
        if rec["status"] == "ok":
            if label.startswith("released"):
                released[backbone] = rec["train_step_ms"]
            elif backbone in released:
                rec["speedup_vs_released"] = released[backbone] / rec["train_step_ms"]
        records.append(rec)
        print(row_line(rec), flush=True)
        write_json(a.out, {"benchmark": "pretrain_step", "command": command_line(), "machine": machine_info(),
                           "matmul_peak_tflops": peak, "records": records})  # after every row: a cut run keeps them
    peaks = [peak, matmul_peak_tflops()]
    peak = max(peaks)
    print(f"bf16 matmul peak measured again: {peaks[1]:.0f} TFLOP/s; MFU against {peak:.0f}:")
    print(HEADER + f"{'x released':>12}  path")
    for rec in records:
        if rec["status"] == "ok":
            rec["mfu"] = mfu(rec["flops_per_step"], rec["train_step_ms"], peak)
        print(row_line(rec))
    write_json(a.out, {"benchmark": "pretrain_step", "command": command_line(), "machine": machine_info(),
                       "matmul_peak_tflops": peak, "matmul_peak_tflops_before_after": peaks, "records": records})
    return 0


if __name__ == "__main__":
    sys.exit(main())
