"""Training-step time, peak memory and inference throughput against sequence length (issue 7).

    python benchmarks/scaling.py --size base --out results/bench/scaling.json

For each backbone on its fast path, bf16: token counts from 251 (2 s of audio) to 64001 (512 s), each step
holding the same number of tokens (--tokens-per-step, default the paper's 256 x 251: batch 256 at 251
tokens, 1 at 64001) unless --batch fixes the batch. Out-of-memory points are recorded as such ("status":
"oom"), not dropped. Prints a table; writes the records that `msmbench figure scaling` plots. Needs CUDA.
`--options '{"mamba": {"kernel": "mamba_ssm"}}'` runs a backbone on other options than its defaults.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from msmbench.bench import HEADER, PAPER_TOKENS_PER_STEP, command_line, machine_info, scaling_study
from msmbench.io import write_json


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbones", nargs="+", default=["transformer", "mamba", "xlstm"])
    p.add_argument("--size", default="base")
    p.add_argument("--batch", type=int, default=None, help="fixed batch (default: from --tokens-per-step)")
    p.add_argument("--tokens-per-step", type=int, default=PAPER_TOKENS_PER_STEP)
    p.add_argument("--tokens", type=int, nargs="+", default=[251, 1001, 2001, 4001, 8001, 16001, 32001, 64001])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--options", type=json.loads, default={}, help="JSON: backbone -> options, e.g. "
                   '\'{"mamba": {"kernel": "mamba_ssm"}}\'')
    p.add_argument("--out", default="results/bench/scaling.json")
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("scaling: skipped: needs CUDA")
        return 0
    print(HEADER)
    records, extra = [], {"machine": machine_info(), "command": command_line()}
    for backbone in a.backbones:
        for n in a.tokens:  # one point at a time, written as it comes: a run cut short keeps what it measured
            point = scaling_study([backbone], a.size, [n], a.batch, a.tokens_per_step, a.options, a.repeats,
                                  log=lambda line: print(line, flush=True))
            records += [{**r, **extra} for r in point]
            write_json(a.out, records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
