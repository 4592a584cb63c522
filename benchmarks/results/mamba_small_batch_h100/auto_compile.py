"""Mamba's `auto` kernel by batch; compiled and eager mixers agree (the SM count read while compiling).
    PYTHONPATH=src python benchmarks/results/mamba_small_batch_h100/auto_compile.py"""
import torch
from msmbench.models.mamba import MambaMixer, resolve_mamba_kernel
torch.manual_seed(0)
m = MambaMixer(768, d_state=24, d_conv=4, expand=3).cuda()
for b in (1, 2, 8):
    x = torch.randn(b, 251, 768, device="cuda")
    torch._dynamo.reset()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        eager = m(x).float(); comp = torch.compile(m)(x).float()
    print("batch", b, "auto ->", resolve_mamba_kernel("auto", x.device, rows=b * m.d_inner),
          "compiled vs eager rel", ((comp - eager).abs().max() / eager.abs().max()).item(), flush=True)
