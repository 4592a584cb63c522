"""The CUDA selective scan (msmbench.ops.selective_scan_cuda) against the float64 reference.

Same cases, inputs, error measure and tolerances as the Triton kernel's tests (test_selective_scan_triton):
fp32 inputs 1e-5; bf16 inputs 1e-2 for what is returned in bf16, 1e-5 for the fp32 gradients. The launch
shapes below cover a channel's states on 1, 2, 4 and 8 lanes (N = 5 and 24 padded), segments of 1, 5, 8, 16
and 24 steps (L not a multiple of them) and channel counts that do not divide D, among them both shapes a
call without `config` can get (the default and the few-rows one). Without CUDA only the
argument checks and the custom ops' shape functions run.
"""

from __future__ import annotations

import functools

import pytest
import torch
from test_selective_scan_triton import (
    CASES,
    GPU_CASES,
    GRAD_NAMES,
    _check,
    _inputs,
    case_errors,
)

from msmbench.ops.selective_scan_cuda import (
    DEFAULT_CUDA_CONFIG,
    FEW_ROWS_CUDA_CONFIG,
    CudaScanConfig,
    launch_config,
    selective_scan_cuda,
)

CONFIGS = {
    "default": CudaScanConfig(),
    "one_lane": CudaScanConfig(threads_per_channel=1, channels=32, segment=5, reduce_steps=1),
    "two_lanes": CudaScanConfig(threads_per_channel=2, channels=32, segment=24, reduce_steps=4),
    "eight_lanes": CudaScanConfig(threads_per_channel=8, channels=8, segment=1, reduce_steps=1),
    "long_segment": CudaScanConfig(segment=16, reduce_steps=4),
    "few_rows": FEW_ROWS_CUDA_CONFIG,   # what a call without `config` runs when its rows leave SMs idle
}


@pytest.mark.gpu
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("name", list(CASES) + list(GPU_CASES))
def test_cuda_parity(name, config):
    case = {**CASES, **GPU_CASES}[name]
    _check(name, case, case_errors(case, "cuda", functools.partial(selective_scan_cuda, config=CONFIGS[config])))


@pytest.mark.gpu
def test_cuda_matches_triton_at_base_width():
    """Two independent fp32 kernels at the paper's width and length agree to fp32 rounding."""
    from msmbench.ops.selective_scan_triton import selective_scan_triton

    case = {**GPU_CASES["paper_like_fp32"], "B": 2, "D": 2304}
    results = []
    for scan in (selective_scan_cuda, selective_scan_triton):
        x = _inputs(case, "cuda")
        out = scan(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True)
        results.append([out, *torch.autograd.grad(out.square().sum(), [x[k] for k in GRAD_NAMES])])
    for name, a, b in zip(("out", *GRAD_NAMES), *results):
        err = ((a - b).abs().max() / b.abs().max()).item()
        assert err < 1e-5, (name, err)


@pytest.mark.gpu
def test_cuda_deterministic_and_compiles():
    """Bitwise the same twice, and the same under torch.compile(fullgraph=True) (custom ops, no graph break)."""
    case = GPU_CASES["paper_like_bf16"]

    def run(fn):
        x = _inputs(case, "cuda")
        out = fn(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True)
        return [out, *torch.autograd.grad(out.float().square().sum(), [x[k] for k in GRAD_NAMES])]

    first, second = run(selective_scan_cuda), run(selective_scan_cuda)
    compiled = run(torch.compile(selective_scan_cuda, fullgraph=True))
    for a, b, c in zip(first, second, compiled):
        assert torch.equal(a, b)
        assert torch.equal(a, c)


def test_config_checked():
    for bad in (CudaScanConfig(threads_per_channel=3), CudaScanConfig(threads_per_channel=4, channels=12),
                CudaScanConfig(segment=0), CudaScanConfig(segment=6, reduce_steps=4)):
        with pytest.raises(ValueError, match="CudaScanConfig"):
            bad.check()
    CudaScanConfig(threads_per_channel=2, channels=16).check()
    assert CudaScanConfig(segment=16).backward_shared_bytes(24) == 33792   # what ptxas reports
    with pytest.raises(ValueError, match="shared memory"):
        CudaScanConfig(channels=64, segment=16).check(24)
    for config in CONFIGS.values():
        config.check(24)


def test_launch_config_follows_the_grid(monkeypatch):
    """Without `config`, the default launch shape when its grid (one block per 32 rows) covers the SMs, else
    the few-rows shape with 4x the blocks."""
    import types

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: types.SimpleNamespace(
        multi_processor_count=132))
    cuda = torch.device("cuda", 0)
    assert launch_config(2304, cuda) == FEW_ROWS_CUDA_CONFIG       # Base at batch 1: 72 blocks
    assert launch_config(132 * 32, cuda) == DEFAULT_CUDA_CONFIG
    assert launch_config(4608, cuda) == DEFAULT_CUDA_CONFIG         # Base at batch 2: 144 blocks


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_clear_error_without_cuda():
    x = torch.zeros(1, 2, 3)
    with pytest.raises(RuntimeError, match="CUDA"):
        selective_scan_cuda(x, x, -torch.ones(3, 4), torch.zeros(1, 2, 4), torch.zeros(1, 2, 4))


def test_shape_functions():
    """The custom ops' fake implementations (what torch.compile traces with) give the kernels' shapes."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        u, A, Bm = torch.empty(2, 37, 10), torch.empty(10, 24), torch.empty(2, 37, 24)
        D = torch.empty(10)
        out, hs = torch.ops.msmbench.selective_scan_cuda_fwd(u, u, A, Bm, Bm, D, u, D, True, True, 4, 32, 16, 2)
        assert out.shape == (2, 37, 10) and hs.shape == (2, 3, 10, 24) and hs.dtype == torch.float32
        grads = torch.ops.msmbench.selective_scan_cuda_bwd(out, hs, u, u, A, Bm, Bm, D, u, D, False, True, 4, 32, 16,
                                                           2)
        assert [tuple(g.shape) for g in grads] == [(2, 37, 10), (2, 37, 10), (0,), (10, 24), (2, 37, 24),
                                                   (2, 37, 24), (10,), (10,)]
