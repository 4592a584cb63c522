"""GPU checks for the Mamba (SSAM) backbone: needs CUDA and mamba-ssm (causal-conv1d for the fully fused mixer).

    python benchmarks/gpu_mamba.py --out results/gpu_mamba.json

(a) parity, float32: msmbench's `selective_scan_chunked` against mamba-ssm's CUDA `selective_scan_fn` on random
    inputs (u, delta, A, B, C, D, z, delta_bias, delta_softplus=True) at the Base mixer's shape, B=4,
    D = 768 * expand 3 = 2304, N=24, L=251: relative error ||x - x_ref|| / ||x_ref|| of the output and of the
    gradient of every input (target < 1e-5; mamba-ssm's own fused-vs-reference error is ~6e-7). Then
    `MambaMixer` with kernel="torch" (our conv + scan) against kernel="mamba_ssm" (mamba_inner_fn, or
    mamba-ssm's scan kernel without causal-conv1d) with the same weights: output and parameter gradients.
(b) state_dict round trip: our mixer's state_dict loaded with strict=True into
    mamba_ssm.modules.mamba_simple.Mamba(768, d_state=24, d_conv=4, expand=3), outputs compared (and back).
(c) one fwd+bwd of the Base SSAM encoder (12 blocks, dim 768) on random tokens, batch 256 x 251, under
    bf16 autocast: fast path vs ours, median ms and peak memory. Out-of-memory is caught and the batch
    halved (the per-sample time is then reported too).

Prints tables and writes everything to --out (JSON). Without CUDA or mamba-ssm it says so and exits 0.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys

import torch


def skip(reason: str, out: str | None) -> None:
    print(f"gpu_mamba: skipped: {reason}")
    if out:
        with open(out, "w") as f:
            json.dump({"benchmark": "gpu_mamba", "skipped": reason}, f, indent=2)
    sys.exit(0)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def scan_inputs(batch: int, dim: int, dstate: int, length: int, seed: int = 0) -> list[torch.Tensor]:
    """Random inputs shaped and scaled like a Mamba mixer's at init (A = -(1..N), dt in [1e-3, 1e-1])."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    u, delta, z = r(batch, dim, length), r(batch, dim, length), r(batch, dim, length)
    A = -torch.arange(1, dstate + 1.0).repeat(dim, 1) * torch.exp(0.1 * r(dim, dstate))
    B, C, D = r(batch, dstate, length), r(batch, dstate, length), r(dim)
    dt = torch.exp(torch.rand(dim, generator=g) * (torch.log(torch.tensor(0.1)) - torch.log(torch.tensor(1e-3)))
                   + torch.log(torch.tensor(1e-3)))
    delta_bias = dt + torch.log(-torch.expm1(-dt))  # inverse softplus, as Mamba's dt_proj.bias
    return [t.cuda().requires_grad_() for t in (u, delta, A, B, C, D, z, delta_bias)]


def parity_scan(args) -> list[dict]:
    from msmbench.ops.selective_scan import mamba_kernels, selective_scan_chunked

    names = ["out", "du", "ddelta", "dA", "dB", "dC", "dD", "dz", "ddelta_bias"]
    ins = scan_inputs(4, 768 * 3, 24, 251)
    ins_ours = [t.detach().clone().requires_grad_() for t in ins]
    ref = mamba_kernels().selective_scan_fn(*ins[:6], z=ins[6], delta_bias=ins[7], delta_softplus=True)
    ours = selective_scan_chunked(*ins_ours[:6], z=ins_ours[6], delta_bias=ins_ours[7], delta_softplus=True)
    g = torch.randn_like(ref)
    g_ref = torch.autograd.grad(ref, ins, g)
    g_ours = torch.autograd.grad(ours, ins_ours, g)
    rows = [{"check": "selective_scan fp32", "tensor": n, "rel_err": rel(a, b)}
            for n, a, b in zip(names, [ours, *g_ours], [ref, *g_ref])]
    return rows


def parity_mixer(args) -> list[dict]:
    from msmbench.models.mamba import MambaMixer

    torch.manual_seed(0)
    ours = MambaMixer(768, d_state=24, d_conv=4, expand=3, kernel="torch").cuda()
    fast = MambaMixer(768, d_state=24, d_conv=4, expand=3, kernel="mamba_ssm").cuda()
    fast.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(4, 251, 768, device="cuda")
    out_o, out_f = ours(x), fast(x)
    g = torch.randn_like(out_o)
    out_o.backward(g)
    out_f.backward(g)
    rows = [{"check": "MambaMixer fast vs ours fp32", "tensor": "out", "rel_err": rel(out_f, out_o)}]
    for (name, p_o), p_f in zip(ours.named_parameters(), fast.parameters()):
        rows.append({"check": "MambaMixer fast vs ours fp32", "tensor": f"d{name}", "rel_err": rel(p_f.grad, p_o.grad)})
    return rows


def state_dict_round_trip(args) -> list[dict]:
    from mamba_ssm.modules.mamba_simple import Mamba

    from msmbench.models.mamba import MambaMixer

    torch.manual_seed(1)
    ours = MambaMixer(768, d_state=24, d_conv=4, expand=3, kernel="torch").cuda()
    ref = Mamba(768, d_state=24, d_conv=4, expand=3).cuda()
    missing = ref.load_state_dict(ours.state_dict(), strict=True)
    back = MambaMixer(768, d_state=24, d_conv=4, expand=3, kernel="torch").cuda()
    back.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(4, 251, 768, device="cuda")
    with torch.no_grad():
        o, r, b = ours(x), ref(x), back(x)
    same_keys = sorted(ours.state_dict()) == sorted(ref.state_dict())
    shapes = all(ours.state_dict()[k].shape == v.shape for k, v in ref.state_dict().items())
    return [{"check": "state_dict -> mamba_simple.Mamba (strict)", "tensor": "out", "rel_err": rel(r, o),
             "same_keys": same_keys, "same_shapes": shapes, "load_result": str(missing)},
            {"check": "state_dict mamba_simple.Mamba -> ours (strict)", "tensor": "out", "rel_err": rel(b, o)}]


def time_encoder(use_fast_path: bool, batch: int, repeats: int, warmup: int) -> dict:
    from msmbench.models.mamba import MambaEncoder
    from msmbench.models.registry import backbone_config

    cfg = backbone_config("mamba", "base", kernel="mamba_ssm" if use_fast_path else "torch")
    while batch >= 1:
        enc = x = None
        torch.cuda.empty_cache()
        try:
            torch.manual_seed(0)
            enc = MambaEncoder(cfg).cuda()
            x = torch.randn(batch, 251, 768, device="cuda")
            times = []
            torch.cuda.reset_peak_memory_stats()
            for i in range(warmup + repeats):
                enc.zero_grad(set_to_none=True)
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss = enc(x).float().square().mean()
                loss.backward()
                end.record()
                torch.cuda.synchronize()
                if i >= warmup:
                    times.append(start.elapsed_time(end))
            ms = statistics.median(times)
            return {"path": "fast (mamba-ssm)" if use_fast_path else "ours (chunked scan)", "batch": batch,
                    "ms_median": ms, "ms_all": times, "ms_per_256_samples": ms * 256 / batch,
                    "peak_gib": torch.cuda.max_memory_allocated() / 2**30}
        except torch.cuda.OutOfMemoryError:
            print(f"  {'fast' if use_fast_path else 'ours'}: out of memory at batch {batch}, halving")
            batch //= 2
        finally:
            del enc, x
    return {"path": "fast" if use_fast_path else "ours", "error": "out of memory even at batch 1"}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="JSON output path")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--skip-timing", action="store_true")
    args = parser.parse_args(argv)

    if not torch.cuda.is_available():
        skip("CUDA is not available", args.out)
    from msmbench.ops.selective_scan import has_fused_mixer, has_fused_scan
    if not has_fused_scan():
        skip("mamba_ssm (with its selective_scan_cuda extension) does not import; install it with "
             "`pip install msmbench[gpu]` or .gpu/build_gpu_deps.sh", args.out)
    torch.backends.cuda.matmul.allow_tf32 = False  # parity in true fp32
    torch.backends.cudnn.allow_tf32 = False

    rows = parity_scan(args) + parity_mixer(args) + state_dict_round_trip(args)
    print(f"{'check':<48} {'tensor':<26} {'rel err':>10}")
    for r in rows:
        print(f"{r['check']:<48} {r['tensor']:<26} {r['rel_err']:>10.2e}")
    worst_scan = max(r["rel_err"] for r in rows if r["check"] == "selective_scan fp32")
    print(f"selective_scan: worst relative error {worst_scan:.2e} (target < 1e-5): "
          f"{'OK' if worst_scan < 1e-5 else 'ABOVE TARGET'}")

    timings = []
    if not args.skip_timing:
        torch.backends.cuda.matmul.allow_tf32 = True
        for fast in (True, False):
            timings.append(time_encoder(fast, args.batch, args.repeats, args.warmup))
        print("\nBase SSAM encoder (12 blocks, dim 768), fwd+bwd, bf16 autocast, 251 tokens")
        print(f"{'path':<24} {'batch':>6} {'ms':>9} {'ms/256 samples':>15} {'peak GiB':>9}")
        for t in timings:
            if "error" in t:
                print(f"{t['path']:<24} {t['error']}")
            else:
                print(f"{t['path']:<24} {t['batch']:>6} {t['ms_median']:>9.1f} {t['ms_per_256_samples']:>15.1f} "
                      f"{t['peak_gib']:>9.1f}")

    import importlib.metadata as md
    versions = {}
    for pkg in ("mamba-ssm", "causal-conv1d", "triton"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    record = {
        "benchmark": "gpu_mamba",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["gpu_mamba.py"] + (argv if argv is not None else sys.argv[1:])),
        "machine": {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": torch.version.cuda,
                    "python": platform.python_version(), **versions},
        "fused_mixer_available": has_fused_mixer(),
        "parity": rows, "timing": timings,
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump(record, f, indent=2)
        print(f"wrote {args.out}")
    return record


if __name__ == "__main__":
    main()
