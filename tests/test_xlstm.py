"""AxLSTM backbone: mLSTM kernels agree with the parallel reference; the ViL layout, directions, sizes."""

from __future__ import annotations

import math

import pytest
import torch

from msmbench.models.objectives import MaskedSpectrogramModel, objective_config, paper_parameter_count
from msmbench.models.registry import backbone_config, backbone_spec, build_backbone
from msmbench.models.xlstm import MLSTMCell, SLSTMBlock, ViLBlock, ViLLayer, XLSTMConfig
from msmbench.ops.mlstm import (
    EPS,
    _parallel_form,
    mlstm,
    mlstm_chunkwise_native,
    mlstm_parallel,
    resolve_kernel,
    triton_available,
)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def cell_inputs(B=2, NH=4, S=37, DH=16, dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, NH, S, DH, generator=g, dtype=torch.float64) for _ in range(3))
    igate = torch.randn(B, NH, S, generator=g, dtype=torch.float64)
    fgate = torch.randn(B, NH, S, generator=g, dtype=torch.float64) + 3.0  # ~ the xLSTM init (bias 3..6)
    return [t.to(device=device, dtype=dtype).requires_grad_() for t in (q, k, v, igate, fgate)]


def out_and_grads(fn, inputs, seed=1):
    h = fn(*inputs)
    w = torch.randn(h.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(h)
    return h, torch.autograd.grad((h * w).sum(), inputs)


def recurrent_reference(q, k, v, igate, fgate, eps=EPS):
    """The xLSTM paper's recurrent form, step by step from the zero state (float64)."""
    B, NH, S, DH = q.shape
    C = q.new_zeros(B, NH, DH, DH)
    n = q.new_zeros(B, NH, DH)
    m = q.new_zeros(B, NH)
    out = []
    for t in range(S):
        log_f = torch.nn.functional.logsigmoid(fgate[..., t])
        m_new = torch.maximum(log_f + m, igate[..., t])
        i_s, f_s = torch.exp(igate[..., t] - m_new), torch.exp(log_f + m - m_new)
        C = f_s[..., None, None] * C + i_s[..., None, None] * k[..., t, :, None] * v[..., t, None, :]
        n = f_s[..., None] * n + i_s[..., None] * k[..., t, :]
        qs = q[..., t, :] * DH ** -0.5
        den = torch.maximum((qs * n).sum(-1).abs(), torch.exp(-m_new))
        out.append((qs[..., None] * C).sum(-2) / (den[..., None] + eps))
        m = m_new
    return torch.stack(out, dim=2)


# --- the cell: kernels against the reference ------------------------------------------------------------
@pytest.mark.parametrize("S,chunk", [(1, 64), (16, 16), (37, 16), (100, 32), (251, 64)])
def test_chunkwise_native_matches_parallel_fp32(S, chunk):
    inputs = cell_inputs(S=S)
    h_ref, g_ref = out_and_grads(mlstm_parallel, inputs)
    h, g = out_and_grads(lambda *a: mlstm(*a, kernel="chunkwise_native", chunk_size=chunk), inputs)
    assert h.dtype == torch.float32 and h.shape == h_ref.shape
    assert rel(h, h_ref) < 1e-5
    # Gradients: 1e-5, except at S = 251, where float32 rounding alone reaches ~1e-5 (both kernels are
    # ~4e-6 (parallel) and ~9e-6 (chunkwise) from a float64 reference there).
    grad_tol = 1e-5 if S <= 128 else 3e-5
    names = ["q", "k", "v", "igate", "fgate"]
    for name, a, b in zip(names, g, g_ref):
        if name == "fgate" and S == 1:
            # With one step the parallel form does not depend on the forget gate at all; the chunkwise
            # kernel (zero initial state) only through the eps term: a gradient of order eps.
            assert b.abs().max() == 0 and a.abs().max() < 10 * EPS
            continue
        assert rel(a, b) < grad_tol, name


@pytest.mark.parametrize("S,chunk", [(1, 4), (23, 8), (64, 16)])
def test_all_forms_compute_one_function_fp64(S, chunk):
    """Chunkwise == recurrent (zero initial state) == parallel with the kernels' stabiliser, to rounding;
    the released parallel form (row-max stabiliser) differs only through eps (<= eps relative)."""
    inputs = cell_inputs(S=S, dtype=torch.float64)
    rec = recurrent_reference(*inputs)
    par0 = _parallel_form(*inputs, zero_initial_state=True)
    chunk_fn = lambda *a: mlstm_chunkwise_native(*[t.double() for t in a], chunk_size=chunk)
    from mlstm_kernels.torch.chunkwise.native import mlstm_chunkwise__native_autograd as kernel

    from msmbench.ops.mlstm import _pad_to_chunks
    h64 = kernel(*_pad_to_chunks(*inputs, chunk), chunk_size=chunk)[..., :S, :]  # the kernel in float64
    assert rel(h64, rec) < 1e-10
    assert rel(par0, rec) < 1e-10
    assert rel(_parallel_form(*inputs), rec) < 2 * EPS
    assert rel(chunk_fn(*inputs), rec) < 1e-5  # our wrapper computes in float32


def _custbw(q, k, v, igate, fgate, eps=EPS, chunk_size=16, **kwargs):
    """mlstm_kernels' chunkwise native kernel with its hand-written backward (the Triton kernels' math)."""
    from mlstm_kernels.torch.chunkwise.native import mlstm_chunkwise__native_custbw

    from msmbench.ops.mlstm import _pad_to_chunks

    S = q.shape[-2]
    padded = _pad_to_chunks(q, k, v, igate, fgate, chunk_size)
    return mlstm_chunkwise__native_custbw(*padded, eps=eps, chunk_size=chunk_size)[..., :S, :]


def test_package_custom_backward_holds_normaliser_constant():
    """Characterises mlstm_kernels 2.0.6: its hand-written backward treats n and m as constants, so dq, dk,
    digate, dfgate are not the gradient of the forward function (dv is). The Triton backward kernels
    divide by the saved n the same way (triton/chunkwise/*/bw_kernel_*.py); the GPU tests below check
    msmbench's wrapped Triton kernels against the exact gradient."""
    inputs = cell_inputs(S=48, dtype=torch.float64)
    _, g = out_and_grads(_custbw, inputs)
    _, g_stop = out_and_grads(
        lambda *a: _parallel_form(*a, zero_initial_state=True, stop_grad_normaliser=True), inputs)
    _, g_full = out_and_grads(lambda *a: _parallel_form(*a, zero_initial_state=True), inputs)
    assert max(rel(a, b) for a, b in zip(g, g_stop)) < 1e-10
    assert rel(g[2], g_full[2]) < 1e-10  # dv
    assert min(rel(a, b) for a, b in zip(g[:2] + g[3:], g_full[:2] + g_full[3:])) > 0.1


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 5e-6), (torch.float32, 1e-5)])
@pytest.mark.parametrize("S,fshift", [(37, 3.0), (100, -2.0), (128, 0.0)])
def test_exact_normaliser_grad_restores_the_gradient(dtype, tol, S, fshift):
    """The wrapper used around the Triton kernels, checked around native_custbw (same backward math).
    float64 keeps ~1e-6: the wrapper, like the kernels, drops m's own gradient, an O(eps) term."""
    from msmbench.ops.mlstm import _exact_normaliser_grad

    inputs = cell_inputs(S=S, dtype=dtype)
    with torch.no_grad():
        inputs[4] += fshift - 3.0
    h_ref, g_ref = out_and_grads(lambda *a: _parallel_form(*[t.double() for t in a], zero_initial_state=True), inputs)
    h, g = out_and_grads(lambda *a: _exact_normaliser_grad(_custbw, *a, chunk_size=16), inputs)
    assert rel(h, h_ref) < tol
    for name, a, b in zip(["q", "k", "v", "igate", "fgate"], g, g_ref):
        assert rel(a, b) < tol, name


def test_parallel_reference_is_float32_and_casts_back():
    inputs = [t.detach().to(torch.bfloat16) for t in cell_inputs(S=20)]
    h = mlstm(*inputs, kernel="parallel")
    assert h.dtype == torch.bfloat16
    h_chunk = mlstm(*inputs, kernel="chunkwise_native", chunk_size=8)
    assert h_chunk.dtype == torch.bfloat16 and rel(h_chunk, h) < 1e-2


def test_kernel_dispatch_and_errors():
    assert resolve_kernel("auto", "cpu") == "chunkwise_native" == resolve_kernel("auto", "cpu", 100)
    with pytest.raises(ValueError, match="unknown mLSTM kernel"):
        resolve_kernel("flash", "cpu")
    with pytest.raises(ValueError, match=r"\[B, NH, S, DH\]"):
        q = torch.zeros(1, 2, 3, 4)
        mlstm(q, q, q, torch.zeros(1, 2, 4), torch.zeros(1, 2, 3))
    if not torch.cuda.is_available():
        q = torch.zeros(1, 2, 3, 4)
        g = torch.zeros(1, 2, 3)
        with pytest.raises((RuntimeError, ImportError), match="pip install"):
            mlstm(q, q, q, g, g, kernel="chunkwise_triton")


# --- the ViL layer and block ----------------------------------------------------------------------------
def small_cfg(**kw) -> XLSTMConfig:
    return XLSTMConfig(**{"dim": 32, "depth": 2, "chunk_size": 16, **kw})


@pytest.mark.parametrize("kernel", ["parallel", "chunkwise_native"])
@pytest.mark.parametrize("fused", [True, False])
def test_vil_layer_matches_xlstm_mlstm_layer(kernel, fused):
    """The forward-direction ViL layer is xlstm's mLSTMLayer: same state dict, same outputs."""
    from xlstm.blocks.mlstm.layer import mLSTMLayer, mLSTMLayerConfig

    S = 40
    torch.manual_seed(0)
    ref = mLSTMLayer(mLSTMLayerConfig(embedding_dim=32, num_heads=4, proj_factor=2.0, qkv_proj_blocksize=4,
                                      conv1d_kernel_size=4, context_length=S, _num_blocks=1))
    with torch.no_grad():  # non-trivial gates (the init zeroes their weights)
        for gate in (ref.mlstm_cell.igate, ref.mlstm_cell.fgate):
            gate.weight.normal_(0, 0.1)
    layer = ViLLayer(small_cfg(kernel=kernel, fused_projections=fused), flip=False)
    missing, unexpected = layer.load_state_dict(ref.state_dict(), strict=False)
    assert not missing and not unexpected
    assert {k: v.shape for k, v in layer.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    x = torch.randn(3, S, 32, requires_grad=True)
    y_ref, (gx_ref,) = out_and_grads(ref, [x])
    y, (gx,) = out_and_grads(layer, [x])
    assert rel(y, y_ref) < 1e-5 and rel(gx, gx_ref) < 1e-5


def test_vil_init_follows_vision_lstm():
    cfg = XLSTMConfig(dim=192, depth=1)
    layer = ViLBlock(cfg).layer
    D = 192
    assert layer.proj_up.weight.shape == (2 * 384, D) and layer.proj_down.weight.shape == (D, 384)
    assert layer.q_proj.weight.shape == (96, 4, 4)  # 96 blocks of 4 x 4
    assert layer.proj_up.weight.std().item() == pytest.approx(math.sqrt(2 / (5 * D)), rel=0.05)
    assert layer.proj_down.weight.std().item() == pytest.approx(2 / math.sqrt(D), rel=0.05)
    cell = layer.mlstm_cell
    assert torch.allclose(cell.fgate.bias, torch.linspace(3.0, 6.0, 4))
    assert cell.fgate.weight.abs().max() == 0 and cell.igate.weight.abs().max() == 0
    assert torch.all(layer.learnable_skip == 1)


def _influence(model, S=20, D=32, j=10):
    """Which outputs change when token j changes? -> bool [S]."""
    torch.manual_seed(0)
    x = torch.randn(2, S, D)
    x2 = x.clone()
    x2[:, j] += torch.randn(D)  # not a constant shift: the norms would remove that
    with torch.no_grad():
        return (model(x2) - model(x)).abs().amax(dim=(0, 2)) > 1e-6


@pytest.fixture
def gate_noise():
    def apply(model):
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, MLSTMCell):
                    m.igate.weight.normal_(0, 0.1)
                    m.fgate.weight.normal_(0, 0.1)
        return model
    return apply


def test_direction_alternation(gate_noise):
    j = 10
    one = gate_noise(build_backbone("xlstm", small_cfg(depth=1)))
    changed = _influence(one, j=j)
    assert not changed[:j].any() and changed[j:].all()  # block 0 scans forward: causal
    odd = gate_noise(ViLBlock(small_cfg(), flip=True))
    changed = _influence(odd, j=j)
    assert changed[: j + 1].all() and not changed[j + 1:].any()  # an odd block scans the flipped sequence
    two = gate_noise(build_backbone("xlstm", small_cfg(depth=2)))
    assert [b.layer.flip for b in two.blocks] == [False, True]
    assert _influence(two, j=j).all()  # forward then backward: every output sees every token


# --- the encoder -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", ["tiny", "small", "base"])
def test_parameter_counts_match_spec(size):
    model = MaskedSpectrogramModel("xlstm", backbone_config("xlstm", size), objective_config("ssast-official"))
    expected = backbone_spec("xlstm").paper_params[size] * 1e6
    assert abs(paper_parameter_count(model) - expected) / expected < 0.02


def test_sizes_and_bias_free_norms():
    spec = backbone_spec("xlstm")
    assert {"cpu", "tiny", "small", "base"} <= set(spec.sizes)
    assert [spec.sizes[s].dim for s in ("tiny", "small", "base")] == [192, 384, 768]
    assert all(spec.sizes[s].depth == 12 and spec.sizes[s].num_heads == 4 for s in ("tiny", "small", "base"))
    enc = build_backbone("xlstm", small_cfg(depth=2))
    for block in enc.blocks:
        assert block.norm.bias is None and block.layer.mlstm_cell.outnorm.bias is None
        assert block.layer.proj_up.bias is None and block.layer.proj_down.bias is None
    # the released encoder norm: torch LayerNorm(eps=1e-6) with bias; bias-free on request
    assert enc.norm.bias is not None and enc.norm.eps == 1e-6
    assert build_backbone("xlstm", small_cfg(final_norm_bias=False)).norm.bias is None


def test_encoder_kernels_agree(gate_noise):
    enc = gate_noise(build_backbone("xlstm", small_cfg(depth=2, kernel="chunkwise_native")))
    x = torch.randn(2, 51, 32, requires_grad=True)
    inputs = [x] + list(enc.parameters())
    y, g = out_and_grads(lambda x, *params: enc(x), inputs)
    enc.set_kernel("parallel")
    y_ref, g_ref = out_and_grads(lambda x, *params: enc(x), inputs)
    assert rel(y, y_ref) < 1e-5
    assert max(rel(a, b) for a, b in zip(g, g_ref) if b.abs().max() > 0) < 1e-4


@pytest.mark.parametrize("objective", ["ssast-official", "mae"])
def test_masked_spectrogram_model_xlstm(objective):
    torch.manual_seed(0)
    model = MaskedSpectrogramModel("xlstm", backbone_config("xlstm", "cpu"), objective_config(objective))
    spec = torch.randn(2, 200, 80)
    loss, pred, _ = model(spec)
    assert pred.shape == (2, 250, 64) and torch.isfinite(loss)
    loss.backward()
    for name, p in model.encoder.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    latent, _, ids_keep = model.forward_encoder(spec)
    expected_len = 1 + (ids_keep.shape[1] if objective == "mae" else 250)
    assert latent.shape == (2, expected_len, model.encoder.dim)


def test_xlstm_slstm_runs_on_cpu():
    cfg = backbone_config("xlstm-slstm", "cpu", dim=32, depth=4)
    enc = build_backbone("xlstm-slstm", cfg)
    kinds = [type(b) for b in enc.blocks]
    assert kinds == [ViLBlock, ViLBlock, ViLBlock, SLSTMBlock]
    assert enc.blocks[3].flip and enc.blocks[3].block.xlstm.config.backend == "vanilla"
    x = torch.randn(2, 21, 32, requires_grad=True)
    y = enc(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in enc.blocks[3].parameters())


# --- GPU ---------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@cuda
# float32 tolerance allows for TF32 inside the Triton kernels' tl.dot (10-bit mantissa)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 5e-3), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("kernel", ["chunkwise_triton"])
@pytest.mark.xfail(reason="measured on an H100 (BENCHMARKS.md): mlstm_kernels' Triton backward fails gradient parity "
                          "even behind the exact-gradient wrapper; 'auto' therefore never picks it", strict=False)
def test_triton_matches_parallel(kernel, dtype, tol):
    if not triton_available():
        pytest.skip("Triton / mlstm_kernels Triton kernels not importable")
    inputs = cell_inputs(B=8, NH=4, S=256, DH=96, dtype=dtype, device="cuda")
    ref_inputs = [t.detach().double().requires_grad_() for t in inputs]
    h_ref, g_ref = out_and_grads(lambda *a: _parallel_form(*a, zero_initial_state=True), ref_inputs)
    h, g = out_and_grads(lambda *a: mlstm(*a, kernel=kernel, chunk_size=64), inputs)
    assert h.dtype == dtype and rel(h, h_ref) < tol
    for name, a, b in zip(["q", "k", "v", "igate", "fgate"], g, g_ref):
        assert rel(a, b) < 2 * tol, f"d{name}: relative error {rel(a, b):.3g} (tolerance {2 * tol})"


@pytest.mark.gpu
@cuda
def test_auto_picks_the_triton_kernel_on_cuda_and_encoder_runs():
    assert resolve_kernel("auto", "cuda", 251) == "triton" == resolve_kernel("auto", "cuda", 4096)
    model = MaskedSpectrogramModel("xlstm", backbone_config("xlstm", "tiny"), objective_config("ssast-official")).cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss, _, _ = model(torch.randn(4, 200, 80, device="cuda"))
    loss.backward()
    assert torch.isfinite(loss)
