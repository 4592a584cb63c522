"""Scratch: SDPA backends at the Base shape (q, k, v as our model makes them), fwd+bwd time."""
import torch, torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
from msmbench.bench import cuda_time_ms
B, L, H, d = 256, 251, 12, 64
torch.manual_seed(0)
q, k, v = (torch.randn(B, L, H, d, device="cuda", dtype=torch.bfloat16).transpose(1, 2).requires_grad_() for _ in range(3))
go = torch.randn(B, H, L, d, device="cuda", dtype=torch.bfloat16)
for name, be in [("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION)]:
    try:
        with sdpa_kernel(be):
            fwd = lambda: F.scaled_dot_product_attention(q, k, v)
            def fb():
                y = F.scaled_dot_product_attention(q, k, v)
                torch.autograd.grad(y, (q, k, v), go)
            print(f"{name:10s} fwd {cuda_time_ms(fwd, repeats=20):.3f} ms  fwd+bwd {cuda_time_ms(fb, repeats=20):.3f} ms", flush=True)
    except Exception as e:
        print(name, "failed", str(e)[:200])
