"""Mamba / SSAM backbone: the chunked selective scan against the step-by-step recurrence, the mixer against
mamba_simple's layout and math, the SSAM encoder's structure and sizes, and (on CUDA with mamba-ssm) the
fused kernels against ours."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from msmbench.models.mamba import MambaConfig, MambaEncoder, MambaMixer
from msmbench.models.objectives import MaskedSpectrogramModel, objective_config, paper_parameter_count
from msmbench.models.registry import backbone_config, backbone_names, backbone_spec, build_backbone
from msmbench.ops import triton_installed
from msmbench.ops.selective_scan import (causal_conv1d, has_fused_scan, selective_scan_chunked, selective_scan_fn,
                                         selective_scan_ref)

# Relative-error tolerances per dtype: chunked scan vs the reference (float64 reference for float32/64,
# outputs and gradients). float32 measures ~1e-7; bfloat16 is dominated by rounding the output to bf16.
TOL = {torch.float64: (1e-10, 1e-9), torch.float32: (1e-5, 1e-4), torch.bfloat16: (2e-2, 2e-2)}
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def scan_inputs(batch=2, dim=6, dstate=4, length=37, dtype=torch.float64, seed=0, decay_scale=1.0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    u, delta, z = r(batch, dim, length), 0.5 * r(batch, dim, length), r(batch, dim, length)
    A = -torch.exp(r(dim, dstate)) * decay_scale                      # negative, as -exp(A_log)
    B, C, D, bias = r(batch, dstate, length), r(batch, dstate, length), r(dim), 0.1 * r(dim)
    return [t.to(dtype) for t in (u, delta, A, B, C, D, z, bias)]


def step_by_step(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The recurrence written out once more, in float64, independent of msmbench (a second reference)."""
    u, delta, A, B, C = (t.double() for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.double()[:, None]
    dt = F.softplus(delta) if delta_softplus else delta
    h = torch.zeros(u.shape[0], A.shape[0], A.shape[1], dtype=torch.float64)
    ys = []
    for t in range(u.shape[-1]):
        h = torch.exp(dt[:, :, t, None] * A) * h + (dt[:, :, t] * u[:, :, t])[:, :, None] * B[:, None, :, t]
        ys.append((h * C[:, None, :, t]).sum(-1))
    y = torch.stack(ys, -1)
    if D is not None:
        y = y + u * D.double()[:, None]
    return y * F.silu(z.double()) if z is not None else y


def call(fn, ins, use_D, use_z, use_bias, softplus, **kw):
    u, delta, A, B, C, D, z, bias = ins
    return fn(u, delta, A, B, C, D if use_D else None, z=z if use_z else None,
              delta_bias=bias if use_bias else None, delta_softplus=softplus, **kw)


# --------------------------------------------------------------------------------------------------
# The scan
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("length,chunk,block", [(37, 8, None), (37, 5, 1), (64, 16, None), (1, None, None),
                                                (5, None, None), (16, 1, 2), (33, 32, 1)])
def test_scan_matches_float64_recurrence(length, chunk, block):
    ins = scan_inputs(batch=3, length=length)
    want = step_by_step(*ins[:5], D=ins[5], z=ins[6], delta_bias=ins[7], delta_softplus=True)
    got = call(selective_scan_chunked, ins, True, True, True, True, chunk_size=chunk, batch_block=block)
    assert got.dtype == torch.float64
    assert rel_err(got, want) < 1e-6  # the acceptance bound; measured ~1e-16
    assert rel_err(got, call(selective_scan_ref, ins, True, True, True, True)) < TOL[torch.float64][0]


def test_scan_long_sequence():
    ins = scan_inputs(batch=1, dim=4, dstate=3, length=4096, seed=9)
    want = call(selective_scan_ref, ins, True, True, True, True)
    assert rel_err(call(selective_scan_chunked, ins, True, True, True, True), want) < 1e-12
    got32 = call(selective_scan_chunked, [t.float() for t in ins], True, True, True, True)
    assert rel_err(got32, want) < TOL[torch.float32][0]


@pytest.mark.parametrize("use_D,use_z,use_bias,softplus", [(True, True, True, True), (False, False, False, False),
                                                           (True, False, True, False), (False, True, False, True)])
def test_scan_gradients_match_reference(use_D, use_z, use_bias, softplus):
    ins = scan_inputs(length=29, seed=1)
    if not softplus:  # delta is the step itself: keep it positive
        ins[1] = ins[1].abs() + 0.05
    leaves = [t.clone().requires_grad_() for t in ins]
    leaves_ref = [t.clone().requires_grad_() for t in ins]
    out = call(selective_scan_chunked, leaves, use_D, use_z, use_bias, softplus, chunk_size=8)
    ref = call(selective_scan_ref, leaves_ref, use_D, use_z, use_bias, softplus)
    assert rel_err(out, ref) < TOL[torch.float64][0]
    g = torch.randn_like(ref)
    used = [True, True, True, True, True, use_D, use_z, use_bias]
    got = torch.autograd.grad(out, [t for t, k in zip(leaves, used) if k], g)
    want = torch.autograd.grad(ref, [t for t, k in zip(leaves_ref, used) if k], g)
    for name, a, b in zip([n for n, k in zip(NAMES, used) if k], got, want):
        assert rel_err(a, b) < TOL[torch.float64][1], name


def test_scan_gradcheck():
    ins = [t.requires_grad_() for t in scan_inputs(batch=2, dim=3, dstate=2, length=11, seed=2)]
    fn = lambda *a: selective_scan_chunked(*a[:5], D=a[5], z=a[6], delta_bias=a[7],  # noqa: E731
                                           delta_softplus=True, chunk_size=4, batch_block=1)
    assert torch.autograd.gradcheck(fn, ins)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_scan_low_precision(dtype):
    ins64 = scan_inputs(length=64, seed=3)
    ins = [t.to(dtype).requires_grad_() for t in ins64]
    # the reference sees the same (rounded) inputs, in float64
    ins_ref = [t.detach().double().requires_grad_() for t in ins]
    out = call(selective_scan_chunked, ins, True, True, True, True)
    ref = call(selective_scan_ref, ins_ref, True, True, True, True)
    assert out.dtype == dtype
    tol_out, tol_grad = TOL[dtype]
    assert rel_err(out, ref) < tol_out
    g = torch.randn_like(ref)
    for name, a, b in zip(NAMES, torch.autograd.grad(out, ins, g.to(dtype)), torch.autograd.grad(ref, ins_ref, g)):
        assert a.dtype == dtype
        assert rel_err(a, b) < tol_grad, name


def test_scan_large_decay_is_stable():
    # dt * A down to about -1e4: any exp of a positive cumulative sum would overflow (float32 max ~ e^88).
    ins = scan_inputs(length=70, dtype=torch.float32, seed=4, decay_scale=50.0)
    ins[1] = ins[1] * 20 + 10                                          # large steps
    ins[1][:, :, 30:40] = -30                                          # and a stretch with dt ~ 1e-13
    leaves = [t.clone().requires_grad_() for t in ins]
    out, last = call(selective_scan_chunked, leaves, True, True, True, True, chunk_size=16, return_last_state=True)
    assert torch.isfinite(out).all() and torch.isfinite(last).all()
    grads = torch.autograd.grad(out.square().sum(), leaves)
    assert all(torch.isfinite(g).all() for g in grads)
    want = step_by_step(*ins[:5], D=ins[5], z=ins[6], delta_bias=ins[7], delta_softplus=True)
    assert rel_err(out, want) < 1e-5


def test_scan_last_state_and_layouts():
    ins = scan_inputs(length=23, seed=5)
    out, last = call(selective_scan_chunked, ins, True, True, True, True, chunk_size=4, return_last_state=True)
    ref_out, ref_last = call(selective_scan_ref, ins, True, True, True, True, return_last_state=True)
    assert last.shape == ref_last.shape == (2, 6, 4)
    assert rel_err(last, ref_last) < 1e-12 and rel_err(out, ref_out) < 1e-12
    u, delta, A, B, C, D, z, bias = ins
    t = lambda x: x.transpose(1, 2).contiguous()  # noqa: E731
    out_bld = selective_scan_chunked(t(u), t(delta), A, t(B), t(C), D, z=t(z), delta_bias=bias,
                                     delta_softplus=True, layout="bld")
    assert torch.allclose(out_bld.transpose(1, 2), out, rtol=0, atol=1e-13)


def test_selective_scan_fn_dispatch_on_cpu():
    ins = scan_inputs(length=9, dtype=torch.float32)
    want = call(selective_scan_chunked, ins, True, True, True, True)
    assert torch.equal(call(selective_scan_fn, ins, True, True, True, True), want)
    assert torch.equal(call(selective_scan_fn, ins, True, True, True, True, use_fast_path=False), want)
    with pytest.raises(RuntimeError, match="msmbench\\[gpu\\]|CUDA"):
        call(selective_scan_fn, ins, True, True, True, True, use_fast_path=True)


@pytest.mark.parametrize("length,width", [(10, 4), (3, 4), (1, 4), (7, 2)])
def test_causal_conv1d_matches_conv1d(length, width):
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, length, 5, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 1, width, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, generator=g, dtype=torch.float64, requires_grad=True)
    ref = F.silu(F.conv1d(x.transpose(1, 2), w, b, padding=width - 1, groups=5)[..., :length].transpose(1, 2))
    out = causal_conv1d(x, w, b, activation="silu")
    assert torch.allclose(out, ref, atol=1e-12)
    gr = torch.randn_like(ref)
    for a, c in zip(torch.autograd.grad(out, (x, w, b), gr), torch.autograd.grad(ref, (x, w, b), gr)):
        assert torch.allclose(a, c, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# The mixer
# --------------------------------------------------------------------------------------------------
def mamba_simple_params(d_model, d_state=16, d_conv=4, expand=2):
    """mamba_ssm.modules.mamba_simple.Mamba's parameters (names and shapes), written out."""
    d_inner, dt_rank = expand * d_model, math.ceil(d_model / 16)
    return {
        "A_log": (d_inner, d_state), "D": (d_inner,),
        "in_proj.weight": (2 * d_inner, d_model),
        "conv1d.weight": (d_inner, 1, d_conv), "conv1d.bias": (d_inner,),
        "x_proj.weight": (dt_rank + 2 * d_state, d_inner),
        "dt_proj.weight": (d_inner, dt_rank), "dt_proj.bias": (d_inner,),
        "out_proj.weight": (d_model, d_inner),
    }


@pytest.mark.parametrize("kwargs", [dict(d_model=192, d_state=24, d_conv=4, expand=3), dict(d_model=40)])
def test_mixer_parameters_match_mamba_simple(kwargs):
    mixer = MambaMixer(**kwargs)
    got = {k: tuple(v.shape) for k, v in mixer.state_dict().items()}
    assert got == mamba_simple_params(**kwargs)
    assert all(v.dtype == torch.float32 for v in mixer.state_dict().values())


def test_mixer_init():
    torch.manual_seed(0)
    m = MambaMixer(64, d_state=24, d_conv=4, expand=3)
    assert torch.equal(m.A_log, torch.log(torch.arange(1, 25.0)).expand(192, 24))
    assert torch.equal(m.D, torch.ones(192))
    dt = F.softplus(m.dt_proj.bias)
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    assert m.dt_proj.weight.abs().max() <= m.dt_rank ** -0.5
    assert m.dt_proj.bias._no_reinit and m.A_log._no_weight_decay and m.D._no_weight_decay


def mamba_simple_forward(m: MambaMixer, hidden):
    """mamba_simple.Mamba.forward's slow path (nn.Conv1d + selective_scan_ref), (B, D, L) layout."""
    L = hidden.shape[1]
    xz = (m.in_proj.weight @ hidden.reshape(-1, hidden.shape[-1]).t()).reshape(-1, hidden.shape[0], L).permute(1, 0, 2)
    x, z = xz.chunk(2, dim=1)
    x = F.silu(m.conv1d(x)[..., :L])
    x_dbl = m.x_proj(x.transpose(1, 2).reshape(-1, x.shape[1]))
    dt, B, C = torch.split(x_dbl, [m.dt_rank, m.d_state, m.d_state], dim=-1)
    dt = (m.dt_proj.weight @ dt.t()).reshape(-1, hidden.shape[0], L).permute(1, 0, 2)
    B = B.reshape(hidden.shape[0], L, -1).transpose(1, 2)
    C = C.reshape(hidden.shape[0], L, -1).transpose(1, 2)
    y = selective_scan_ref(x, dt, -torch.exp(m.A_log.float()), B, C, m.D.float(), z=z,
                           delta_bias=m.dt_proj.bias.float(), delta_softplus=True)
    return m.out_proj(y.transpose(1, 2))


def test_mixer_matches_mamba_simple_math():
    torch.manual_seed(1)
    m = MambaMixer(32, d_state=8, d_conv=4, expand=3, kernel="torch").double()
    with torch.no_grad():  # make the scan matter: larger steps than the init's
        m.dt_proj.bias.add_(2.0)
    x = torch.randn(3, 21, 32, dtype=torch.float64, requires_grad=True)
    out, ref = m(x), mamba_simple_forward(m, x)
    assert rel_err(out, ref) < 1e-10
    g = torch.randn_like(ref)
    params = [x] + list(m.parameters())
    for a, b in zip(torch.autograd.grad(out, params, g), torch.autograd.grad(ref, params, g)):
        assert rel_err(a, b) < 1e-9


def test_mixer_state_dict_round_trip():
    a, b = MambaMixer(48, d_state=24, expand=3), MambaMixer(48, d_state=24, expand=3)
    b.load_state_dict(a.state_dict(), strict=True)
    x = torch.randn(2, 13, 48)
    assert torch.equal(a(x), b(x))


# --------------------------------------------------------------------------------------------------
# The SSAM encoder
# --------------------------------------------------------------------------------------------------
def test_registered_with_sizes():
    assert {"mamba", "mamba-bi"} <= set(backbone_names())
    spec = backbone_spec("mamba")
    assert set(spec.sizes) >= {"cpu", "tiny", "small", "base"}
    for size, dim in [("tiny", 192), ("small", 384), ("base", 768)]:
        cfg = spec.sizes[size]
        assert (cfg.dim, cfg.depth, cfg.d_state, cfg.d_conv, cfg.expand) == (dim, 12, 24, 4, 3)
        assert not cfg.bidirectional and backbone_spec("mamba-bi").sizes[size].bidirectional


@pytest.mark.parametrize("size", ["tiny", "small", "base"])
def test_parameter_counts_match_paper(size):
    model = MaskedSpectrogramModel("mamba", backbone_config("mamba", size), objective_config("ssast-official"))
    expected = backbone_spec("mamba").paper_params[size] * 1e6
    assert abs(paper_parameter_count(model) - expected) / expected < 0.02


def test_out_proj_rescaled_and_biases():
    torch.manual_seed(0)
    enc = build_backbone("mamba", MambaConfig(dim=64, depth=9))
    bound = 1 / math.sqrt(192) / math.sqrt(9)  # kaiming_uniform(a=sqrt(5)) bound, / sqrt(n_layer)
    for blk in enc.blocks:
        w = blk.mixer.out_proj.weight
        assert w.abs().max() <= bound and w.abs().max() > 0.8 * bound
        assert F.softplus(blk.mixer.dt_proj.bias).min() >= 1e-3 * (1 - 1e-5)  # not zeroed


def test_block_structure_and_fp32_residual():
    torch.manual_seed(2)
    cfg = MambaConfig(dim=32, depth=3, d_state=8)
    enc = MambaEncoder(cfg)
    x = torch.randn(2, 17, 32)
    # add -> LayerNorm -> mixer, residual stream carried separately, final add + LayerNorm
    hidden, residual = x, None
    for blk in enc.blocks:
        residual = hidden if residual is None else residual + hidden
        hidden = blk.mixer(blk.norm(residual))
    want = enc.norm(residual + hidden)
    assert torch.allclose(enc(x), want, atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h, r = enc.blocks[0](x.bfloat16(), None)
        h2, r2 = enc.blocks[1](h, r)
        assert r.dtype == torch.float32 and r2.dtype == torch.float32
        out = enc(x)
    assert torch.isfinite(out).all()
    out.float().sum().backward()
    assert all(p.grad is not None for p in enc.parameters())


def test_unidirectional_is_causal_and_bidirectional_is_not():
    torch.manual_seed(3)
    cfg = MambaConfig(dim=32, depth=2, d_state=8)
    uni = MambaEncoder(cfg)
    bi = build_backbone("mamba-bi", MambaConfig(dim=32, depth=2, d_state=8, bidirectional=True))
    bi.load_state_dict(uni.state_dict(), strict=True)  # "alternate" has the same parameters
    x = torch.randn(2, 15, 32)
    x2 = x.clone()
    x2[:, -1] = torch.randn(2, 32)                     # change only the last token
    assert torch.allclose(uni(x)[:, :-1], uni(x2)[:, :-1], atol=1e-6)
    # the reversed blocks carry it backwards (decaying with distance, fast at init: dt A up to -2.4 a step)
    assert (bi(x)[:, -2] - bi(x2)[:, -2]).abs().max() > 1e-3
    assert (bi(x)[:, :-1] - bi(x2)[:, :-1]).abs().amax(-1).min() > 0
    assert not torch.allclose(bi(x), uni(x), atol=1e-4)
    # block 1 of "alternate" runs on the flipped sequence
    h = torch.randn(2, 15, 32)
    blk = bi.blocks[1]
    assert torch.allclose(blk.mixer(blk.norm(h).flip(1)).flip(1), blk(h, torch.zeros_like(h))[0], atol=1e-6)


def test_bidirectional_sum_mode():
    cfg = MambaConfig(dim=32, depth=2, d_state=8, bidirectional=True, bidirectional_mode="sum")
    enc = MambaEncoder(cfg)
    n_uni = sum(p.numel() for p in MambaEncoder(MambaConfig(dim=32, depth=2, d_state=8)).parameters())
    n_mixer = sum(p.numel() for p in enc.blocks[0].mixer.parameters())
    assert sum(p.numel() for p in enc.parameters()) == n_uni + 2 * n_mixer
    out = enc(torch.randn(2, 9, 32))
    assert out.shape == (2, 9, 32) and torch.isfinite(out).all()
    with pytest.raises(ValueError):
        MambaEncoder(MambaConfig(dim=32, depth=1, bidirectional=True, bidirectional_mode="zigzag"))


@pytest.mark.parametrize("backbone,objective", [("mamba", "ssast-official"), ("mamba", "mae"), ("mamba-bi", "ssast")])
def test_masked_spectrogram_model_trains(backbone, objective):
    torch.manual_seed(4)
    cfg = backbone_config(backbone, "cpu", dim=32, depth=2)
    model = MaskedSpectrogramModel(backbone, cfg, objective_config(objective))
    spec = torch.randn(2, 200, 80)
    loss, pred, mask = model(spec)
    assert pred.shape == (2, 250, 64) and torch.isfinite(loss)
    loss.backward()
    enc_grads = [p.grad for p in model.encoder.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in enc_grads)
    assert model.forward_features(spec).shape == (2, 250, 32)


# --------------------------------------------------------------------------------------------------
# GPU: the fused mamba-ssm kernels against ours (run by the lead on an H100 with mamba-ssm installed)
# --------------------------------------------------------------------------------------------------
needs_kernels = pytest.mark.skipif(not (torch.cuda.is_available() and has_fused_scan()),
                                   reason="needs CUDA and mamba-ssm's selective_scan_cuda")


@pytest.mark.gpu
@needs_kernels
def test_gpu_fused_scan_matches_chunked():
    ins = [t.float().cuda().requires_grad_() for t in scan_inputs(batch=2, dim=64, dstate=24, length=251, seed=7)]
    ins2 = [t.detach().clone().requires_grad_() for t in ins]
    fused = call(selective_scan_fn, ins, True, True, True, True, use_fast_path=True)
    ours = call(selective_scan_fn, ins2, True, True, True, True, use_fast_path=False)
    assert rel_err(fused, ours) < 1e-5
    g = torch.randn_like(ours)
    for name, a, b in zip(NAMES, torch.autograd.grad(fused, ins, g), torch.autograd.grad(ours, ins2, g)):
        assert rel_err(a, b) < 1e-4, name


@pytest.mark.gpu
@needs_kernels
def test_gpu_mixer_fast_path_matches_ours_and_mamba_simple():
    from mamba_ssm.modules.mamba_simple import Mamba

    torch.manual_seed(8)
    ours = MambaMixer(192, d_state=24, d_conv=4, expand=3, kernel="torch").cuda()
    fast = MambaMixer(192, d_state=24, d_conv=4, expand=3, kernel="mamba_ssm").cuda()
    fast.load_state_dict(ours.state_dict())
    ref = Mamba(192, d_state=24, d_conv=4, expand=3).cuda()
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(4, 251, 192, device="cuda")
    out = ours(x)
    assert rel_err(fast(x), out) < 1e-4
    assert rel_err(ref(x), out) < 1e-4  # fast = mamba_inner_fn if causal-conv1d is installed, else the scan kernel


def test_kernel_choice_on_cpu():
    from msmbench.models.mamba import resolve_mamba_kernel

    assert resolve_mamba_kernel("auto", "cpu") == "torch"
    for kernel in ("cuda", "triton", "mamba_ssm"):
        with pytest.raises(RuntimeError, match="needs CUDA"):
            resolve_mamba_kernel(kernel, "cpu")
    with pytest.raises(ValueError, match="unknown Mamba kernel"):
        MambaMixer(32, kernel="cudnn")


def test_auto_kernel_on_cuda_follows_the_grid(monkeypatch):
    """On CUDA, "auto" runs our CUDA scan when its grid (one block per 32 rows of batch x d_inner) covers the
    SMs, and mamba-ssm's kernels below that when installed (they were faster there, BENCHMARKS.md)."""
    import types

    from msmbench.models import mamba

    monkeypatch.setattr(mamba, "cuda_kernels_available", lambda: True)
    monkeypatch.setattr(mamba.torch.cuda, "get_device_properties",
                        lambda device: types.SimpleNamespace(multi_processor_count=132))
    for installed, rows, expected in [(True, 2304, "mamba_ssm"), (True, 4224, "cuda"), (True, 4608, "cuda"),
                                      (True, None, "cuda"), (False, 2304, "cuda")]:
        monkeypatch.setattr(mamba, "has_fused_scan", lambda installed=installed: installed)
        assert mamba.resolve_mamba_kernel("auto", "cuda:0", rows=rows) == expected, (installed, rows)


@pytest.mark.gpu
@needs_kernels
def test_gpu_auto_kernel_follows_the_batch_and_compiles():
    """On this GPU, "auto" hands a batch too small for our scan's grid to mamba-ssm and a large one to our CUDA
    scan; either way the compiled mixer (which reads the SM count while tracing) matches the eager one."""
    from msmbench.models.mamba import resolve_mamba_kernel
    from msmbench.ops.nvrtc import cuda_kernels_available
    from msmbench.ops.selective_scan_cuda import DEFAULT_CUDA_CONFIG, default_grid_fills_gpu

    if not cuda_kernels_available():
        pytest.skip("needs torch's NVRTC wrapper")
    torch.manual_seed(3)
    mixer = MambaMixer(768, d_state=24, d_conv=4, expand=3).cuda()
    if default_grid_fills_gpu(mixer.d_inner, torch.device("cuda", 0)):
        pytest.skip("batch 1 already gives our scan a block per SM on this GPU")
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    filling_batch = -(-DEFAULT_CUDA_CONFIG.channels * sms // mixer.d_inner)
    for batch, expected in ((1, "mamba_ssm"), (filling_batch, "cuda")):
        assert resolve_mamba_kernel("auto", "cuda:0", rows=batch * mixer.d_inner) == expected, batch
        x = torch.randn(batch, 64, 768, device="cuda")
        torch._dynamo.reset()
        with torch.no_grad():
            assert rel_err(torch.compile(mixer)(x), mixer(x)) < 1e-4, batch


@pytest.mark.gpu
@pytest.mark.parametrize("kernel", ["cuda", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_mixer_fast_scans_match_torch(dtype, kernel):
    """The whole mixer (our conv, projections, CUDA or Triton scan, gating) against the PyTorch path, same
    weights: outputs and every parameter gradient, at the Base state size and a sequence length that is not
    a multiple of any chunk. bf16 runs both under autocast (the training setting)."""
    if kernel == "triton" and not triton_installed():
        pytest.skip("needs Triton")
    torch.manual_seed(9)
    ours = MambaMixer(192, d_state=24, d_conv=4, expand=3, kernel="torch").cuda()
    fast = MambaMixer(192, d_state=24, d_conv=4, expand=3, kernel=kernel).cuda()
    fast.load_state_dict(ours.state_dict())
    x = torch.randn(4, 251, 192, device="cuda")
    g = torch.randn(4, 251, 192, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        out_ref, out = ours(x), fast(x)
    out_ref.float().backward(g)
    out.float().backward(g)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert rel_err(out.float(), out_ref.float()) < tol
    for (name, p_ref), p in zip(ours.named_parameters(), fast.parameters()):
        assert rel_err(p.grad, p_ref.grad) < 10 * tol, name
