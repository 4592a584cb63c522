"""Training-step time, peak memory and inference throughput against sequence length (issue 7).

    python benchmarks/scaling.py --size base --batch 8 --out results/bench/scaling.json

For each backbone on its fast path, bf16: token counts from 251 (2 s of audio) to 16001 (128 s).
Out-of-memory points are recorded as such ("status": "oom"), not dropped. Prints a table; writes the
records that `msmbench figure scaling` plots. Needs CUDA.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from msmbench.bench import HEADER, machine_info, scaling_study


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbones", nargs="+", default=["transformer", "mamba", "xlstm"])
    p.add_argument("--size", default="base")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--tokens", type=int, nargs="+", default=[251, 1001, 2001, 4001, 8001, 16001])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default="results/bench/scaling.json")
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("scaling: skipped: needs CUDA")
        return 0
    print(HEADER)
    records = scaling_study(a.backbones, a.size, a.tokens, a.batch, repeats=a.repeats,
                            log=lambda line: print(line, flush=True))
    for r in records:
        r["machine"] = machine_info()
        r["command"] = " ".join(sys.argv)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(records, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
