"""linear_chunks and linear_gelu: F.linear(...).chunk(...) and F.gelu(F.linear(...)) with hand-written backward
passes, checked against autograd's; the fused GELU-backward kernel against its reference."""

import pytest
import torch
import torch.nn.functional as F

from torch.utils.flop_counter import FlopCounterMode

from msmbench.models.linear import aten_gelu, linear_chunks, linear_gelu, matmul_sum
from msmbench.ops.gelu import gelu_backward_colsum, gelu_backward_colsum_ref


def chunked_reference(x, weight, bias, chunks):
    return F.linear(x, weight, bias).chunk(chunks, dim=-1)


def gradients(fn, inputs, cotangents, autocast):
    """fn(*leaves) -> one output or a tuple of them, leaves = copies of `inputs` (x, weight[, bias]) that
    require grad; returns the outputs and the leaves' gradients of sum(output * cotangent)."""
    leaves = [t.clone().requires_grad_() for t in inputs]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        outs = fn(*leaves)
    outs = outs if isinstance(outs, tuple) else (outs,)
    loss = sum((o.float() * c).sum() for o, c in zip(outs, cotangents))
    return outs, torch.autograd.grad(loss, leaves)


@pytest.mark.parametrize("chunks", [1, 3])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("autocast", [False, True])
def test_gradients_match_autograd(chunks, with_bias, autocast):
    """Same outputs' dtypes and same input, weight and bias gradients as autograd through F.linear, in
    float32 and under bf16 autocast (matmuls in bf16, float32 gradients for float32 leaves), eagerly and
    traced by torch.compile."""
    torch.manual_seed(0)
    x, weight = torch.randn(2, 37, 64), torch.randn(48 * chunks, 64) / 8
    bias = torch.randn(48 * chunks) if with_bias else None
    cotangents = torch.randn(chunks, 2, 37, 48)
    tol = 2e-2 if autocast else 1e-5
    inputs = [t for t in (x, weight, bias) if t is not None]
    outs_ref, ref = gradients(lambda x, w, b=None: chunked_reference(x, w, b, chunks), inputs, cotangents, autocast)
    for fn in (linear_chunks, torch.compile(linear_chunks, backend="aot_eager")):
        outs, got = gradients(lambda x, w, b=None: fn(x, w, b, chunks), inputs, cotangents, autocast)
        assert [o.dtype for o in outs] == [o.dtype for o in outs_ref]
        for g, r in zip(got, ref):
            assert g.dtype == r.dtype == torch.float32
            torch.testing.assert_close(g, r, rtol=tol, atol=tol)


def test_unused_chunk_gets_zero_gradient():
    x, weight, bias = torch.randn(5, 8), torch.randn(12, 8, requires_grad=True), torch.randn(12, requires_grad=True)
    q, k, v = linear_chunks(x, weight, bias, chunks=3)
    k.sum().backward()
    assert torch.equal(bias.grad, torch.cat([torch.zeros(4), torch.full((4,), 5.0), torch.zeros(4)]))  # 5 rows
    assert weight.grad[:4].abs().sum() == 0 and weight.grad[8:].abs().sum() == 0


def test_unbiased_chunks_add_no_bias_and_get_no_bias_gradient():
    """biased=(0,): chunks 1 and 2 are F.linear without their bias slices, whose gradients are exact zeros;
    everything else is autograd's."""
    torch.manual_seed(0)
    x, weight, bias = torch.randn(2, 7, 8), torch.randn(12, 8), torch.randn(12)
    cotangents = torch.randn(3, 2, 7, 4)
    keep = torch.tensor([1.0] * 4 + [0.0] * 8)
    outs_ref, ref = gradients(lambda x, w, b: linear_chunks(x, w, b * keep, 3), [x, weight, bias], cotangents, False)
    outs, got = gradients(lambda x, w, b: linear_chunks(x, w, b, 3, biased=(0,)), [x, weight, bias], cotangents, False)
    for g, r in zip(outs + got, outs_ref + ref):
        torch.testing.assert_close(g, r, rtol=0, atol=0)
    assert torch.equal(got[2][4:], torch.zeros(8)) and got[2][:4].abs().sum() > 0
    with pytest.raises(ValueError, match="biased"):
        linear_chunks(x, weight, bias, 3, biased=(3,))


def test_matmul_sum_and_bad_chunks():
    a, b = [torch.randn(6, 4) for _ in range(3)], [torch.randn(4, 5) for _ in range(3)]
    torch.testing.assert_close(matmul_sum(a, b), sum(x @ y for x, y in zip(a, b)))
    with pytest.raises(ValueError, match="chunks"):
        linear_chunks(torch.randn(2, 8), torch.randn(10, 8), chunks=3)


def test_flop_counter_sees_the_same_matmuls():
    """MFU is computed from FlopCounterMode: the split backward must count what the packed one does."""
    x, weight, bias = torch.randn(2, 37, 64), torch.randn(144, 64, requires_grad=True), torch.randn(144)
    counts = []
    for fn in (chunked_reference, linear_chunks):
        with FlopCounterMode(display=False) as counter:
            sum(o.sum() for o in fn(x.clone().requires_grad_(), weight, bias, 3)).backward()
        counts.append(counter.get_total_flops())
    assert counts[0] == counts[1] == 3 * 2 * (2 * 37) * 64 * 144


def test_linear_gelu_matches_autograd():
    """Same output and same input, weight and bias gradients as autograd through F.gelu(F.linear(...)), in
    float32 and under bf16 autocast, with and without bias, eagerly and traced by torch.compile."""
    torch.manual_seed(0)
    x, weight, bias = torch.randn(2, 37, 64), torch.randn(96, 64) / 8, torch.randn(96)
    cotangent = torch.randn(2, 37, 96)
    reference = lambda x, w, b=None: F.gelu(F.linear(x, w, b))  # noqa: E731
    for autocast in (False, True):
        tol = 2e-2 if autocast else 1e-5
        for b in (bias, None):
            inputs = [t for t in (x, weight, b) if t is not None]
            outs_ref, ref = gradients(reference, inputs, [cotangent], autocast)
            for fn in (linear_gelu, torch.compile(linear_gelu, backend="aot_eager")):
                outs, got = gradients(fn, inputs, [cotangent], autocast)
                assert outs[0].dtype == outs_ref[0].dtype
                for g, r in zip(outs + got, outs_ref + ref):
                    torch.testing.assert_close(g, r, rtol=tol, atol=tol)


def test_linear_gelu_forward_is_atens_gelu_in_one_opaque_op():
    """The forward's GELU is ATen's (same values as F.gelu) and reaches a tracer as one op, so torch.compile
    calls ATen's kernel instead of generating its own."""
    from torch.fx.experimental.proxy_tensor import make_fx

    x = torch.randn(64, 32)
    assert torch.equal(aten_gelu(x), F.gelu(x))
    graph = make_fx(linear_gelu)(torch.randn(3, 8), torch.randn(16, 8), torch.randn(16)).graph
    targets = [str(n.target) for n in graph.nodes if n.op == "call_function"]
    assert "msmbench.aten_gelu.default" in targets and "aten.gelu.default" not in targets


def test_gelu_backward_colsum_reference_and_bad_shapes():
    grad, pre = torch.randn(7, 5, dtype=torch.float64), torch.randn(7, 5, dtype=torch.float64)
    out, colsum = gelu_backward_colsum(grad, pre)
    pre_leaf = pre.clone().requires_grad_()
    expected = torch.autograd.grad(F.gelu(pre_leaf), pre_leaf, grad)[0]
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(colsum, expected.sum(0).float())
    assert colsum.dtype == torch.float32
    with pytest.raises(ValueError, match=r"\[M, N\]"):
        gelu_backward_colsum(torch.randn(7, 5), torch.randn(7, 4))


def test_flop_counter_counts_linear_gelu_as_autograd():
    x, weight, bias = torch.randn(2, 37, 64), torch.randn(96, 64, requires_grad=True), torch.randn(96)
    counts = []
    for fn in (lambda x, w, b: F.gelu(F.linear(x, w, b)), linear_gelu):
        with FlopCounterMode(display=False) as counter:
            fn(x.clone().requires_grad_(), weight, bias).sum().backward()
        counts.append(counter.get_total_flops())
    assert counts[0] == counts[1] == 3 * 2 * (2 * 37) * 64 * 96


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [(1, 1), (37, 300), (5021, 3072), (64, 130), (1024, 256)])
def test_gpu_fused_gelu_backward_matches_reference(dtype, shape):
    """The Triton kernel against the reference (autograd's GELU backward, then a float32 sum) on shapes that
    are and are not multiples of its tiles (1024 x 256: no masks): the gradient equal to rounding, the column
    sums within float32 summation error."""
    from msmbench.ops.gelu_triton import gelu_backward_colsum as fused

    torch.manual_seed(0)
    grad, pre = (3 * torch.randn(*shape, device="cuda")).to(dtype), (3 * torch.randn(*shape, device="cuda")).to(dtype)
    out, colsum = fused(grad, pre)
    ref_out, ref_colsum = gelu_backward_colsum_ref(grad, pre)
    assert out.dtype == dtype and colsum.dtype == torch.float32 and colsum.shape == (shape[1],)
    ulp = 2 ** -7 if dtype == torch.bfloat16 else 1e-6  # one bf16 rounding step; erf/exp ulps in float32
    torch.testing.assert_close(out, ref_out, rtol=ulp, atol=1e-6)
    for tiles in [{}, dict(rows=64, block_m=64), dict(rows=256, block_m=16, stages=1)]:  # any tiling
        out2, colsum2 = fused(grad, pre, **tiles)
        assert torch.equal(out2, out)
        for o, c in ((out2, colsum2), (ref_out, ref_colsum)):  # float32 sums of the rounded gradient
            exact, size = o.double().sum(0), o.double().abs().sum(0)
            assert ((c.double() - exact).abs() <= 4e-6 * size + 1e-6).all()
    with pytest.raises(ValueError, match="multiple"):
        fused(grad, pre, rows=100, block_m=32)


@pytest.mark.gpu
@pytest.mark.parametrize("option", [{"qkv_grad": "packed"}, {"kv_bias": "direct"}, {"mlp_grad": "autograd"}])
def test_gpu_hand_written_gradients_match_autograd_under_bf16(option):
    """On the GPU path (bf16 autocast, fused attention, and compiled by Inductor, where `matmul_sum`,
    `aten_gelu` and `gelu_backward_colsum` are opaque ops) the split q, k, v backward, the folded key and value
    biases and the fused fc1 + GELU give autograd's gradients within bf16 rounding."""
    from msmbench.models.registry import backbone_config, build_backbone

    def grads(run, model, x):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = run(x)
        (y.float() * cotangent).sum().backward()  # not a norm of the LayerNormed output: that is ~constant
        return {n: p.grad.float() for n, p in model.named_parameters()}

    torch.manual_seed(0)
    options = dict(dim=384, heads=6, depth=2, residual="autocast")
    ours = build_backbone("transformer", backbone_config("transformer", "small", **options)).cuda()
    autograd = build_backbone("transformer", backbone_config("transformer", "small", **option, **options)).cuda()
    autograd.load_state_dict(ours.state_dict())
    x, cotangent = torch.randn(2, 8, 251, 384, device="cuda")
    ref = grads(autograd, autograd, x)
    for run in (ours, torch.compile(ours)):
        got = grads(run, ours, x)
        errors = {name: ((got[name] - r).norm() / r.norm()).item() for name, r in ref.items()}
        assert max(errors.values()) < 2e-2, errors  # bf16 rounding: qkv 0.4% eager, 0.8% compiled on an H100
