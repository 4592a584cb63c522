"""Scratch: the layout of cuDNN attention's dq for q a chunk of a packed projection vs a dense tensor; then the
Transformer-Base step with one GEMM per chunk (new linear_chunks) vs one packed GEMM chunked (old)."""
import sys, torch, torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
from msmbench.bench import matmul_peak_tflops, train_step
from msmbench.models import linear

B, L, H, d = 8, 251, 12, 64
D = H * d
packed = torch.randn(B, L, 3 * D, device="cuda", dtype=torch.bfloat16)
dense = [torch.randn(B, L, D, device="cuda", dtype=torch.bfloat16) for _ in range(3)]
for name, qkv in [("chunk of packed", packed.chunk(3, -1)), ("dense", dense)]:
    q, k, v = (t.detach().view(B, L, H, d).transpose(1, 2).requires_grad_() for t in qkv)
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        y = F.scaled_dot_product_attention(q, k, v)
        y.backward(torch.randn_like(y))
    print(f"{name}: q strides {q.stride()} o strides {y.stride()} dq strides {q.grad.stride()}; dq as [B, L, D] without a copy: {q.grad.transpose(1, 2).is_contiguous()}", flush=True)

old_forward = linear.LinearChunks.forward
def packed_forward(ctx, x, weight, bias, chunks):
    dtype = linear._compute_dtype(x)
    x, weight = x.to(dtype), weight.to(dtype)
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None
    return F.linear(x, weight, None if bias is None else bias.to(dtype)).chunk(chunks, dim=-1)

peak = matmul_peak_tflops()
print(f"peak {peak:.0f}", flush=True)
recs = []
for label in sys.argv[1:]:
    linear.LinearChunks.forward = staticmethod(packed_forward) if label == "one-gemm" else old_forward
    torch._dynamo.reset()
    rec = train_step("transformer", "base", 256, 251, {"residual": "autocast"}, compile="reduce-overhead", repeats=20, peak_tflops=peak)
    print(label, rec.get("status"), rec.get("error", "")[:300], f"{rec.get('train_step_ms', 0):.2f} ms  {rec.get('flops_per_step', 0):.4e}", flush=True)
    recs.append((label, rec))
peak2 = matmul_peak_tflops()
top = max(peak, peak2)
print(f"peak again {peak2:.0f}; MFU against {top:.0f}")
for label, rec in recs:
    if rec.get("status") == "ok":
        print(f"{label}: {rec['train_step_ms']:.2f} ms  MFU {rec['flops_per_step'] / (rec['train_step_ms'] / 1e3) / (top * 1e12):.4f}")
