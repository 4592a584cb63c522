"""The mLSTM cell of the Base xLSTM, 12 layers deep: the released code's parallel form against our kernel.

    python benchmarks/mlstm_cells.py --out benchmarks/out/mlstm_cells.json

Issue 7's xLSTM target, measured side by side in one run: forward + backward of 12 mLSTM cells (4 heads x
head dim 384, Base), each with its own bf16 q, k, v (as the model produces them under autocast) and float32
gate pre-activations, at 251 tokens x batch 256 (the paper's setting), 4,096 x 16, 16,384 x 4 and
65,536 x 1 (the same 64k tokens per step at each length). Where the 12-layer parallel form runs out of
memory, one layer of each is measured too, so a side-by-side ratio exists at every length.
"parallel" is `mlstm_parallel` (the quadratic stabilised form of the released AxLSTM code, in float32);
"triton/cN" is `mlstm_triton` (msmbench/ops/mlstm_triton.py) with chunk_size N: chunkwise, linear time,
beyond N steps ("triton/whole": one tile sweep over the whole sequence, quadratic time; "triton" is the
default: whole up to WHOLE_MAX steps, chunks of CHUNK beyond). Time is the CUDA-event median; memory is
the peak allocated during the step minus what was allocated before it (the inputs). Out-of-memory is reported as such. A parity row (float64 parallel
form as reference, bf16 and fp32 inputs; one tiled sweep at 300 steps, chunkwise beyond WHOLE_MAX) is
measured first, so the speed rows are known to compute the same function.
"""

from __future__ import annotations

import argparse
import sys

import torch

from msmbench.bench import command_line, cuda_time_ms, machine_info
from msmbench.io import write_json
from msmbench.ops.mlstm import _parallel_form, mlstm_parallel
from msmbench.ops.mlstm_triton import CHUNK, WHOLE_MAX, mlstm_triton

SETTINGS = [(251, 256), (4096, 16), (16384, 4), (65536, 1)]  # (tokens, batch): 64k tokens a step
CHUNKS = (512, 1024, 2048)  # swept beyond the first setting


def kernel_fn(name: str):
    """'parallel', 'triton' (default chunk), 'triton/cN' or 'triton/whole' -> the cell function."""
    if name == "parallel":
        return mlstm_parallel
    chunk = name.partition("/c")[2]
    if name == "triton/whole":
        return lambda *x: mlstm_triton(*x, chunk_size=x[0].shape[-2])
    return lambda *x: mlstm_triton(*x, chunk_size=int(chunk) if chunk else None)


def cell_inputs(layers: int, batch: int, seq: int, heads: int = 4, head_dim: int = 384, seed: int = 0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    per_layer = []
    for _ in range(layers):
        q, k, v = (torch.randn(batch, heads, seq, head_dim, device="cuda", generator=g, dtype=torch.bfloat16)
                   for _ in range(3))
        igate = torch.randn(batch, heads, seq, device="cuda", generator=g)
        fgate = torch.randn(batch, heads, seq, device="cuda", generator=g) + 3.0
        per_layer.append([t.requires_grad_() for t in (q, k, v, igate, fgate)])
    return per_layer


def stack_step(kernel: str, layers: int, batch: int, seq: int, repeats: int) -> dict:
    row = {"kernel": kernel, "layers": layers, "batch": batch, "tokens": seq}
    fn = kernel_fn(kernel)
    try:
        inputs = cell_inputs(layers, batch, seq)
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()

        def step():
            total = sum(fn(*x).float().sum() for x in inputs)
            total.backward()
            for x in inputs:
                for t in x:
                    t.grad = None

        step()
        torch.cuda.reset_peak_memory_stats()
        ms = cuda_time_ms(step, warmup=1, repeats=repeats)
        row.update(status="ok", ms=ms, peak_gib=(torch.cuda.max_memory_allocated() - before) / 2**30)
    except torch.OutOfMemoryError as e:
        row.update(status="oom", error=str(e).split("\n")[0][:160])
    finally:
        inputs = None
        torch.cuda.empty_cache()
    return row


def parity(dtype: torch.dtype, batch=2, heads=4, seq=300, head_dim=384) -> dict:
    """Relative error of `mlstm_triton` (default chunk: chunkwise beyond CHUNK steps) against the float64
    parallel form on the same (rounded) inputs: output and all gradients."""
    g = torch.Generator(device="cuda").manual_seed(1)
    base = [torch.randn(batch, heads, seq, head_dim, device="cuda", generator=g).to(dtype) for _ in range(3)]
    base += [torch.randn(batch, heads, seq, device="cuda", generator=g),
             torch.randn(batch, heads, seq, device="cuda", generator=g) + 3.0]
    grad = torch.randn(batch, heads, seq, head_dim, device="cuda", generator=g, dtype=torch.float64)

    def run(fn, cast):
        xs = [cast(t).detach().requires_grad_() for t in base]
        h = fn(*xs)
        h.double().backward(grad)
        return [h.double()] + [x.grad.double() for x in xs]

    ref = run(_parallel_form, lambda t: t.double())
    got = run(mlstm_triton, lambda t: t)
    names = ["h", "dq", "dk", "dv", "digate", "dfgate"]
    return {"dtype": str(dtype).removeprefix("torch."), "shape": [batch, heads, seq, head_dim],
            "whole_max": WHOLE_MAX, "chunk": CHUNK,
            **{n: ((a - b).norm() / b.norm()).item() for n, a, b in zip(names, got, ref)}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--parity-only", action="store_true")
    p.add_argument("--out", default="benchmarks/out/mlstm_cells.json")
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("mlstm_cells: skipped: needs CUDA")
        return 0
    record = {"benchmark": "mlstm_cells", "command": command_line(), "machine": machine_info(),
              "parity": [parity(torch.float32), parity(torch.bfloat16),
                         parity(torch.float32, batch=1, seq=WHOLE_MAX + CHUNK + 100),
                         parity(torch.bfloat16, batch=1, seq=WHOLE_MAX + CHUNK + 100)], "rows": []}
    for r in record["parity"]:
        print("parity vs float64 parallel form ({dtype} inputs, S {shape[2]}): ".format(**r)
              + ", ".join(f"{k} {r[k]:.1e}" for k in ("h", "dq", "dk", "dv", "digate", "dfgate")), flush=True)
    if a.parity_only:
        write_json(a.out, record)
        return 0
    print(f"{'tokens':>7}{'batch':>6}{'layers':>7}{'kernel':>14}{'ms':>10}{'GiB':>8}{'speedup':>9}{'memory':>8}")
    for i, (seq, batch) in enumerate(SETTINGS):
        kernels = ["triton"] + ([f"triton/c{c}" for c in CHUNKS if c != CHUNK] + ["triton/whole"] if i else [])
        for layers in (a.layers, 1):
            rows = [stack_step(k, layers, batch, seq, a.repeats) for k in ["parallel", *kernels]]
            ref = rows[0]
            for r in rows[1:]:
                if ref["status"] == r["status"] == "ok":
                    r["speedup"] = ref["ms"] / r["ms"]
                    r["memory_fraction"] = r["peak_gib"] / ref["peak_gib"]
            for r in rows:
                head = f"{seq:>7}{batch:>6}{layers:>7}{r['kernel']:>14}"
                if r["status"] != "ok":
                    print(f"{head}{'OOM':>10}", flush=True)
                    continue
                extra = f"{r['speedup']:>8.2f}x{r['memory_fraction']:>8.3f}" if "speedup" in r else ""
                print(f"{head}{r['ms']:>10.1f}{r['peak_gib']:>8.2f}{extra}", flush=True)
            record["rows"] += rows
            write_json(a.out, record)
            if ref["status"] == "ok" or layers == 1:
                break  # one layer only where the full stack's reference could not run
    return 0


if __name__ == "__main__":
    sys.exit(main())
