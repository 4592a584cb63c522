"""GPU checks for the AxLSTM backbone (needs CUDA + triton + mlstm_kernels + xlstm).

    python benchmarks/gpu_xlstm.py --out gpu_xlstm.json       # PYTHONPATH=src if msmbench is not installed
    python benchmarks/gpu_xlstm.py --skip encoder --lengths 256 1024   # a quicker subset

(a) parity: every mLSTM kernel against the parallel reference on random inputs, B=8, 4 heads, head dim 96
    (AxLSTM-Tiny: inner width 384 / 4 heads), S=256; float32 and bfloat16 inputs; relative error
    ||x - x_ref|| / ||x_ref|| of the output and of the gradients of q, k, v, igate, fgate. The reference is
    the parallel form in float64 (so the float32 parallel form is measured too). Rows "...(package bw)"
    call mlstm_kernels' Triton kernels directly: their backward holds the normaliser constant, so their
    dq/dk/di/df are expected to be far off; msmbench's "chunkwise_triton*" wrap them to restore the exact
    gradient (msmbench/ops/mlstm.py) and should match.
(b) the mLSTM cell alone, fwd+bwd time and peak memory: parallel (float32, quadratic) vs chunkwise Triton
    (bf16; msmbench's exact-gradient wrapper and the package's raw kernel) and chunkwise native (float32)
    at S = 256, 1024, 4096, 16384; out-of-memory is caught and reported.
(c) one fwd+bwd of the Base AxLSTM encoder (inside the SSAST model, loss included) at batch 256 x 251
    tokens under bf16 autocast, per kernel (and with the fused q/k/v projections off).

Prints tables and writes everything to --out (JSON). Without CUDA or Triton it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import torch


def skip(reason: str, out: str | None) -> None:
    print(f"gpu_xlstm: skipped: {reason}")
    if out:
        with open(out, "w") as f:
            json.dump({"skipped": reason}, f, indent=2)
    sys.exit(0)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def make_inputs(B, NH, S, DH, dtype, seed=0, device="cuda"):
    g = torch.Generator(device="cpu").manual_seed(seed)
    q, k, v = (torch.randn(B, NH, S, DH, generator=g) for _ in range(3))
    igate = torch.randn(B, NH, S, generator=g)
    fgate = torch.randn(B, NH, S, generator=g) + 3.0  # around the xLSTM forget-gate bias init (3..6)
    return [t.to(device=device, dtype=dtype).requires_grad_() for t in (q, k, v, igate, fgate)]


def fwd_bwd(fn, inputs, grad_out=None):
    for t in inputs:
        t.grad = None
    h = fn(*inputs)
    if grad_out is None:
        grad_out = torch.randn(h.shape, generator=torch.Generator().manual_seed(1)).to(h)
    h.backward(grad_out)
    return h.detach(), [t.grad.detach() for t in inputs], grad_out


def package_kernel(name: str, chunk_size: int):
    """mlstm_kernels' kernel called directly (its own backward), padded like msmbench does."""
    from mlstm_kernels.torch import get_mlstm_kernel

    from msmbench.ops.mlstm import _pad_to_chunks, _triton_chunk

    fn = get_mlstm_kernel(name)

    def call(q, k, v, igate, fgate):
        S = q.shape[-2]
        chunk = _triton_chunk(S, chunk_size)
        padded = _pad_to_chunks(q, k, v, igate.to(q.dtype), fgate.to(q.dtype), chunk)  # as msmbench passes them
        return fn(*padded, chunk_size=chunk, autocast_kernel_dtype=q.dtype)[..., :S, :]
    return call


def kernel_fn(kernel: str, chunk_size: int):
    from msmbench.ops.mlstm import mlstm

    if kernel.endswith("(package bw)"):
        return package_kernel("chunkwise--" + kernel.split()[0], chunk_size)
    return lambda *a: mlstm(*a, kernel=kernel, chunk_size=chunk_size)


def parity(kernels, args) -> list[dict]:
    """Reference per dtype: the parallel form in float64 on the same (dtype-rounded) inputs and output
    gradient, so the bf16 rows measure the kernels, not the rounding of their inputs."""
    from msmbench.ops.mlstm import _parallel_form

    B, NH, S, DH = 8, 4, args.parity_len, 96
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        name = str(dtype).replace("torch.", "")
        ref_in = [t.detach().double().requires_grad_() for t in make_inputs(B, NH, S, DH, dtype)]
        # the chunkwise kernels' stabiliser (zero initial state); the released row-max form differs by <= eps
        h_ref, g_ref, gout = fwd_bwd(lambda *a: _parallel_form(*a, zero_initial_state=True), ref_in,
                                     grad_out=None)
        gout = gout.to(dtype).double()
        h_ref, g_ref, _ = fwd_bwd(lambda *a: _parallel_form(*a, zero_initial_state=True), ref_in, gout)
        for kernel in kernels:
            if kernel.endswith("(package bw)") and dtype == torch.bfloat16:
                continue  # the raw bf16 kernel aborts Triton 3.6's compiler (LLVM assertion), killing the process
            row = {"kernel": kernel, "dtype": name}
            try:
                inputs = make_inputs(B, NH, S, DH, dtype)
                h, g, _ = fwd_bwd(kernel_fn(kernel, args.chunk_size), inputs, gout.to(dtype))
                row["out"] = rel(h, h_ref)
                row.update({f"d{n}": rel(a, b) for n, a, b in zip(["q", "k", "v", "i", "f"], g, g_ref)})
            except Exception as err:  # noqa: BLE001 - report, keep going
                row["error"] = f"{type(err).__name__}: {err}"[:300]
            rows.append(row)
    return rows


def timed(fn, reps: int) -> tuple[float, float]:
    """Median ms of fn() over reps (after warm-up) and peak memory in GiB above the start."""
    from msmbench.bench import cuda_time_ms

    fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    ms = cuda_time_ms(fn, warmup=1, repeats=reps)
    return ms, (torch.cuda.max_memory_allocated() - base) / 2**30


def cell_scaling(args) -> list[dict]:
    configs = [("parallel", torch.float32), ("chunkwise_native", torch.float32),
               ("chunkwise_triton", torch.bfloat16), ("chunkwise_triton", torch.float32),
               ("triton_xl_chunk (package bw)", torch.float32)]
    rows = []
    for S in args.lengths:
        for kernel, dtype in configs:
            row = {"kernel": kernel, "dtype": str(dtype).replace("torch.", ""), "S": S}
            try:
                inputs = make_inputs(8, 4, S, 96, dtype)
                grad = torch.ones(8, 4, S, 96, device="cuda", dtype=dtype)
                fn = kernel_fn(kernel, args.chunk_size)

                def step(fn=fn, inputs=inputs, grad=grad):
                    for t in inputs:
                        t.grad = None
                    fn(*inputs).backward(grad)

                row["ms"], row["peak_gib"] = timed(step, args.reps)
            except torch.cuda.OutOfMemoryError:
                row["error"] = "OOM"
            except Exception as err:  # noqa: BLE001 - report, keep going
                row["error"] = f"{type(err).__name__}: {err}"[:300]
            finally:
                inputs = grad = None
                torch.cuda.empty_cache()
            rows.append(row)
    return rows


def encoder_step(args) -> list[dict]:
    from msmbench.models.objectives import MaskedSpectrogramModel, objective_config
    from msmbench.models.registry import backbone_config

    rows = []
    variants = [("auto", True), ("auto", False), ("chunkwise_native", True),
                ("parallel", True)]
    for kernel, fused in variants:
        row = {"kernel": kernel, "fused_projections": fused, "batch": args.batch, "tokens": 251}
        model = None
        try:
            torch.manual_seed(0)
            cfg = backbone_config("xlstm", "base", kernel=kernel, fused_projections=fused)
            model = MaskedSpectrogramModel("xlstm", cfg, objective_config("ssast-official")).cuda()
            spec = torch.randn(args.batch, 200, 80, device="cuda")

            def step(model=model, spec=spec):
                model.zero_grad(set_to_none=True)
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss, _, _ = model(spec)
                loss.backward()
                return loss

            row["loss_finite"] = bool(torch.isfinite(step()))
            row["ms"], row["peak_gib"] = timed(step, max(3, args.reps // 3))
            row["tokens_per_s"] = args.batch * 251 / (row["ms"] / 1e3)
        except torch.cuda.OutOfMemoryError:
            row["error"] = "OOM"
        except Exception as err:  # noqa: BLE001 - report, keep going
            row["error"] = f"{type(err).__name__}: {err}"[:300]
        finally:
            model = None
            torch.cuda.empty_cache()
        rows.append(row)
    return rows


def table(rows: list[dict], title: str) -> None:
    print(f"\n## {title}")
    keys = list(dict.fromkeys(k for r in rows for k in r))
    print(" | ".join(keys))
    for r in rows:
        cells = []
        for k in keys:
            v = r.get(k, "")
            cells.append(f"{v:.3g}" if isinstance(v, float) else str(v))
        print(" | ".join(cells))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="JSON results file")
    ap.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096, 16384])
    ap.add_argument("--parity-len", type=int, default=256)
    ap.add_argument("--chunk-size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=256, help="encoder batch for (c)")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--skip", nargs="*", default=[], choices=["parity", "cell", "encoder"])
    args = ap.parse_args()

    if not torch.cuda.is_available():
        skip("CUDA is not available", args.out)
    try:
        import mlstm_kernels
        import triton
        import xlstm
    except ImportError as err:
        skip(f"{err} (pip install triton 'mlstm_kernels>=2.0.6' 'xlstm>=2.0.6')", args.out)
    from msmbench.ops.mlstm import triton_available

    if not triton_available():
        skip("mlstm_kernels' Triton kernels are not importable", args.out)

    results = {
        "device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
        "mlstm_kernels": getattr(mlstm_kernels, "__version__", "?"), "xlstm": getattr(xlstm, "__version__", "?"),
        "python": platform.python_version(), "chunk_size": args.chunk_size, "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print(f"{results['device']}  torch {results['torch']}  triton {results['triton']}")
    if "parity" not in args.skip:
        results["parity"] = parity(["parallel", "chunkwise_native", "chunkwise_triton", "triton_xl_chunk (package bw)"],
                                   args)
        table(results["parity"], f"(a) parity vs float64 parallel form, B8 x 4 heads x DH 96 x S {args.parity_len}")
    if "cell" not in args.skip:
        results["cell"] = cell_scaling(args)
        table(results["cell"], "(b) mLSTM cell fwd+bwd, B8 x 4 heads x DH 96")
    if "encoder" not in args.skip:
        results["encoder"] = encoder_step(args)
        table(results["encoder"], f"(c) AxLSTM-Base SSAST step, batch {args.batch} x 251 tokens, bf16 autocast")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
