"""The CUDA causal conv (msmbench.ops.causal_conv1d_cuda) against float64 nn.functional.conv1d.

Cases cover kernel widths 2-4, SiLU on and off, no bias, lengths shorter than, equal to and not a multiple
of a block's steps, batches not a multiple of a backward block's rows, a channel count that does not fill
a block, and input that is a slice of a wider projection (as the mixer passes it). Tolerances: fp32 1e-5
relative to the largest reference value; bf16 1e-2 for what is returned in bf16 (x's gradient, the output),
1e-4 for the fp32 weight and bias gradients (summed in fp32 from bf16 inputs). Without CUDA only the
argument checks and the custom ops' shape functions run.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from msmbench.ops.causal_conv1d_cuda import CudaConvConfig, causal_conv1d_cuda
from msmbench.ops.selective_scan import causal_conv1d

CASES = {
    "base_like": dict(B=3, L=251, D=300, K=4, silu=True, bias=True),
    "short": dict(B=2, L=3, D=40, K=4, silu=True, bias=True),           # L < K: some taps never reach an input
    "no_silu_k2": dict(B=5, L=70, D=33, K=2, silu=False, bias=True),
    "no_bias_k3": dict(B=1, L=129, D=64, K=3, silu=True, bias=False),
    "one_step": dict(B=2, L=1, D=8, K=4, silu=True, bias=True),
}
CONFIGS = {
    "default": CudaConvConfig(),
    "small_blocks": CudaConvConfig(channels=32, steps=5, rows=3),
    "one_step_blocks": CudaConvConfig(channels=64, steps=1, rows=1),
}


def reference(x, weight, bias, silu):
    """nn.functional.conv1d in float64: the causal conv as mamba_simple runs it (pad K-1, keep the first L)."""
    L, K = x.shape[1], weight.shape[1]
    out = F.conv1d(x.double().transpose(1, 2), weight.double()[:, None], None if bias is None else bias.double(),
                   padding=K - 1, groups=x.shape[-1])[..., :L].transpose(1, 2)
    return F.silu(out) if silu else out


def make_inputs(case, dtype, device, sliced=True):
    g = torch.Generator().manual_seed(0)
    B, L, D, K = case["B"], case["L"], case["D"], case["K"]
    wide = torch.randn(B, L, 2 * D, generator=g)
    x = (wide[..., :D] if sliced else wide[..., :D].contiguous()).to(device, dtype)   # stride 2D along L
    weight = (torch.randn(D, K, generator=g) / K ** 0.5).to(device)
    bias = torch.randn(D, generator=g).to(device) if case["bias"] else None
    leaves = [t.requires_grad_() for t in (x, weight, bias) if t is not None]
    return x, weight, bias, leaves


def errors(case, dtype, config=None, conv=None):
    conv = conv or (lambda x, w, b, act: causal_conv1d_cuda(x, w, b, act, config=config))
    x, weight, bias, leaves = make_inputs(case, dtype, "cuda")
    act = "silu" if case["silu"] else None
    out = conv(x, weight, bias, act)
    assert out.dtype == dtype and out.shape == x.shape
    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    ref = reference(ref_leaves[0], ref_leaves[1], ref_leaves[2] if case["bias"] else None, case["silu"])
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out)
    grads = torch.autograd.grad(out, leaves, dout)
    ref_grads = torch.autograd.grad(ref, ref_leaves, dout.double())

    def err(a, r):
        return ((a.double() - r).abs().max() / r.abs().max().clamp_min(1e-30)).item()

    for leaf, grad in zip(leaves, grads):
        assert grad.dtype == leaf.dtype and grad.shape == leaf.shape
    return {"out": err(out, ref), **{f"grad{i}": err(a, r) for i, (a, r) in enumerate(zip(grads, ref_grads))}}


@pytest.mark.gpu
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", list(CASES))
def test_cuda_conv_parity(name, dtype, config):
    res = errors(CASES[name], dtype, CONFIGS[config])
    for key, value in res.items():
        low_precision = dtype == torch.bfloat16 and key in ("out", "grad0")
        tol = 1e-2 if low_precision else 1e-4 if dtype == torch.bfloat16 else 1e-5
        assert value < tol, (name, key, res)


@pytest.mark.gpu
def test_cuda_conv_matches_pytorch_reference_and_is_deterministic():
    """Same numbers as our PyTorch conv (the CPU path) in fp32, bitwise repeatable, and the same compiled."""
    case = CASES["base_like"]
    for conv in (causal_conv1d, torch.compile(causal_conv1d_cuda, fullgraph=True)):
        res = errors(case, torch.float32, conv=conv)
        assert max(res.values()) < 1e-5, res

    def run(fn):
        x, weight, bias, leaves = make_inputs(case, torch.bfloat16, "cuda")
        out = fn(x, weight, bias, "silu")
        return [out, *torch.autograd.grad(out.float().square().sum(), leaves)]

    first, second = run(causal_conv1d_cuda), run(causal_conv1d_cuda)
    compiled = run(torch.compile(causal_conv1d_cuda, fullgraph=True))
    for a, b, c in zip(first, second, compiled):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_config_checked():
    for bad in (CudaConvConfig(channels=48), CudaConvConfig(channels=2048), CudaConvConfig(steps=0),
                CudaConvConfig(rows=0)):
        with pytest.raises(ValueError, match="CudaConvConfig"):
            bad.check()
    for config in CONFIGS.values():
        config.check()


def test_clear_errors():
    x = torch.zeros(1, 4, 3)
    with pytest.raises(ValueError, match="activation"):
        causal_conv1d_cuda(x, torch.zeros(3, 4), activation="relu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            causal_conv1d_cuda(x, torch.zeros(3, 4))


def test_shape_functions():
    """The custom ops' fake implementations (what torch.compile traces with) give the kernels' shapes."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x, w, b = torch.empty(2, 37, 20, dtype=torch.bfloat16)[..., :10], torch.empty(10, 4), torch.empty(10)
        y = torch.ops.msmbench.causal_conv1d_cuda_fwd(x, w, b, True, 128, 64, 4)
        assert y.shape == (2, 37, 10) and y.dtype == torch.bfloat16 and y.is_contiguous()
        dx, dw, db = torch.ops.msmbench.causal_conv1d_cuda_bwd(y, x, w, b, True, 128, 64, 4)
        assert dx.shape == (2, 37, 10) and dw.shape == (10, 4) and db.shape == (10,)
        assert dw.dtype == torch.float32 and dx.dtype == torch.bfloat16


def test_reference_is_the_pytorch_conv():
    """The float64 reference above and our CPU conv (the "torch" kernel's) agree, so a GPU pass is meaningful."""
    for case in CASES.values():
        x, weight, bias, _ = make_inputs(case, torch.float64, "cpu")
        ours = causal_conv1d(x, weight, bias, "silu" if case["silu"] else None)
        assert torch.allclose(ours, reference(x, weight, bias, case["silu"]), atol=1e-12)
