"""Scratch: GELU backward with libdevice erf vs an erfc-based Phi (Numerical Recipes' Chebyshev fit, fractional
error < 1.2e-7) sharing exp(-x^2/2) with phi; unmasked, Base shape. Also the copy-like ceiling."""
import torch, triton, triton.language as tl
from msmbench.bench import cuda_time_ms

@triton.jit
def phi_fast(x):
    z = tl.abs(x) * 0.7071067811865476
    t = 1.0 / (1.0 + 0.5 * z)
    p = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))))
    e = tl.exp(-0.5 * x * x)
    half_erfc = 0.5 * t * e * tl.exp(p)
    cdf = tl.where(x >= 0, 1.0 - half_erfc, half_erfc)
    return cdf, e

@triton.jit
def k(grad_ptr, pre_ptr, out_ptr, partial_ptr, M, N, ROWS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, MODE: tl.constexpr):
    pid_m = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    rows = tl.arange(0, BLOCK_M)
    first = pid_m.to(tl.int64) * ROWS * N
    grad_ptr, pre_ptr, out_ptr = grad_ptr + first, pre_ptr + first, out_ptr + first
    tile = rows[:, None] * N + cols[None, :]
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for start in tl.range(0, ROWS, BLOCK_M, num_stages=3):
        offsets = tile + start * N
        x = tl.load(pre_ptr + offsets).to(tl.float32)
        g = tl.load(grad_ptr + offsets).to(tl.float32)
        if MODE == 0:
            out = (g + x).to(tl.bfloat16)
        elif MODE == 1:
            cdf = 0.5 * (1.0 + tl.erf(x * 0.7071067811865476))
            pdf = tl.exp(-0.5 * x * x) * 0.3989422804014327
            out = (g * (cdf + x * pdf)).to(tl.bfloat16)
        else:
            cdf, e = phi_fast(x)
            out = (g * (cdf + x * e * 0.3989422804014327)).to(tl.bfloat16)
        tl.store(out_ptr + offsets, out)
        acc += out.to(tl.float32)
    tl.store(partial_ptr + pid_m * N + cols, tl.sum(acc, axis=0))

@triton.jit
def fwd(pre_ptr, out_ptr, n, BLOCK: tl.constexpr, MODE: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(pre_ptr + offs).to(tl.float32)
    if MODE == 0:
        y = x
    elif MODE == 1:
        y = 0.5 * x * (1.0 + tl.erf(x * 0.7071067811865476))
    else:
        cdf, e = phi_fast(x)
        y = x * cdf
    tl.store(out_ptr + offs, y.to(tl.bfloat16))

M, N = 64256, 3072
g, h = (torch.randn(M, N, device="cuda", dtype=torch.bfloat16) * 3 for _ in range(2))
out = torch.empty_like(g); part = torch.empty(M // 256, N, device="cuda")
gb = 3 * M * N * 2 / 1e6
ref = torch.ops.aten.gelu_backward(g, h)
x64 = h.double(); exact = g.double() * (0.5 * (1 + torch.erf(x64 / 2**0.5)) + x64 * torch.exp(-0.5 * x64**2) / (2 * torch.pi) ** 0.5)
for rows, bm, bn, w in [(256, 16, 128, 4), (256, 32, 128, 4), (256, 32, 128, 8)]:
    for mode, name in [(0, "copy-like"), (1, "libdevice erf"), (2, "erfc fit")]:
        f = lambda: k[(M // rows, N // bn)](g, h, out, part, M, N, ROWS=rows, BLOCK_M=bm, BLOCK_N=bn, MODE=mode, num_warps=w)
        ms = cuda_time_ms(lambda: [f() for _ in range(10)], warmup=2, repeats=20) / 10
        extra = ""
        if mode:
            extra = f" differs from aten in {(out != ref).float().mean().item():.2e} of elements; vs correctly rounded {(out != exact.bfloat16()).float().mean().item():.2e} (aten {(ref != exact.bfloat16()).float().mean().item():.2e})"
        print(f"bwd {ms:.3f} ms {gb/ms:.0f} GB/s  {name} {rows} {bm} {bn} {w}{extra}", flush=True)
ref_f = torch.nn.functional.gelu(h)
for mode, name in [(0, "copy"), (1, "libdevice erf"), (2, "erfc fit")]:
    for block, w in [(1024, 4), (2048, 8)]:
        f = lambda: fwd[(M * N // block,)](h, out, M * N, BLOCK=block, MODE=mode, num_warps=w)
        ms = cuda_time_ms(lambda: [f() for _ in range(10)], warmup=2, repeats=20) / 10
        extra = f" differs from aten in {(out != ref_f).float().mean().item():.2e}" if mode else ""
        print(f"fwd {ms:.3f} ms {2*M*N*2/1e6/ms:.0f} GB/s  {name} {block} {w}{extra}", flush=True)
f = lambda: torch.nn.functional.gelu(h)
ms = cuda_time_ms(lambda: [f() for _ in range(10)], warmup=2, repeats=20) / 10
print(f"fwd {ms:.3f} ms  aten gelu")
