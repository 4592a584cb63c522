"""linear_chunks: F.linear(...).chunk(...) with a hand-written backward, checked against autograd's."""

import pytest
import torch
import torch.nn.functional as F

from torch.utils.flop_counter import FlopCounterMode

from msmbench.models.linear import linear_chunks, matmul_sum


def chunked_reference(x, weight, bias, chunks):
    return F.linear(x, weight, bias).chunk(chunks, dim=-1)


def gradients(fn, x, weight, bias, chunks, cotangents, autocast):
    inputs = [t.clone().requires_grad_() for t in (x, weight) + ((bias,) if bias is not None else ())]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        outs = fn(inputs[0], inputs[1], inputs[2] if bias is not None else None, chunks)
    loss = sum((o.float() * c).sum() for o, c in zip(outs, cotangents))
    return [o.dtype for o in outs], torch.autograd.grad(loss, inputs)


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
    dtypes_ref, ref = gradients(chunked_reference, x, weight, bias, chunks, cotangents, autocast)
    for fn in (linear_chunks, torch.compile(linear_chunks, backend="aot_eager")):
        dtypes, got = gradients(fn, x, weight, bias, chunks, cotangents, autocast)
        assert dtypes == dtypes_ref
        for g, r in zip(got, ref):
            assert g.dtype == r.dtype == torch.float32
            torch.testing.assert_close(g, r, rtol=tol, atol=tol)


def test_unused_chunk_gets_zero_gradient():
    x, weight, bias = torch.randn(5, 8), torch.randn(12, 8, requires_grad=True), torch.randn(12, requires_grad=True)
    q, k, v = linear_chunks(x, weight, bias, chunks=3)
    k.sum().backward()
    assert torch.equal(bias.grad, torch.cat([torch.zeros(4), torch.full((4,), 5.0), torch.zeros(4)]))  # 5 rows
    assert weight.grad[:4].abs().sum() == 0 and weight.grad[8:].abs().sum() == 0


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


@pytest.mark.gpu
def test_gpu_split_qkv_gradient_matches_packed_under_bf16():
    """On the GPU path (bf16 autocast, fused attention, and compiled by Inductor, where `matmul_sum` is an
    opaque op) the split backward gives the packed backward's gradients within bf16 rounding."""
    from msmbench.models.registry import backbone_config, build_backbone

    def grads(run, model, x):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = run(x)
        (y.float() * cotangent).sum().backward()  # not a norm of the LayerNormed output: that is ~constant
        return {n: p.grad.float() for n, p in model.named_parameters()}

    torch.manual_seed(0)
    options = dict(dim=384, heads=6, depth=2, residual="autocast")
    split = build_backbone("transformer", backbone_config("transformer", "small", **options)).cuda()
    packed = build_backbone("transformer", backbone_config("transformer", "small", qkv_grad="packed", **options)).cuda()
    packed.load_state_dict(split.state_dict())
    x, cotangent = torch.randn(2, 8, 251, 384, device="cuda")
    ref = grads(packed, packed, x)
    for run in (split, torch.compile(split)):
        got = grads(run, split, x)
        errors = {name: ((got[name] - r).norm() / r.norm()).item() for name, r in ref.items()}
        assert max(errors.values()) < 2e-2, errors  # bf16 rounding: 0.4% eager, 0.8% compiled on an H100
