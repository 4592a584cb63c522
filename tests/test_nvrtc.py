"""msmbench.ops.nvrtc: the kernels' sources as NVRTC sees them, and launches from threads with no CUDA context.

torch loads and launches these kernels through the driver API, which needs a context current on the calling
thread; new threads (autograd's device thread among them) start with none. A pytest run on an H200 once
failed with "invalid device context" at a launch; NvrtcKernel now makes the primary context current itself,
and this test compiles and launches on a fresh thread. (On an H100 the same launch without that step also
ran, torch's own allocations having made the context current first: the test checks the fix's effect, not
the failure.)
"""

from __future__ import annotations

import ctypes
import threading

import pytest
import torch

from msmbench.ops.nvrtc import SHARED_HEADER, kernel_source


@pytest.mark.parametrize("name", ["selective_scan.cu", "causal_conv1d.cu"])
def test_shared_header_pasted(name):
    text = kernel_source(name)
    assert f'#include "{SHARED_HEADER}"' not in text
    assert "to_f32" in text and "__global__" in text


def in_fresh_thread(fn):
    """fn() run on a new thread (which has no current CUDA context), its result or exception returned."""
    box = {}

    def target():
        try:
            box["result"] = fn()
        except BaseException as error:  # noqa: BLE001 - handed back to the test
            box["error"] = error

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


def current_context() -> int:
    context = ctypes.c_void_p()
    torch.cuda._utils._get_gpu_runtime_library().cuCtxGetCurrent(ctypes.byref(context))
    return context.value or 0


@pytest.mark.gpu
def test_kernels_launch_from_a_thread_without_context():
    from msmbench.ops.causal_conv1d_cuda import CudaConvConfig, causal_conv1d_cuda
    from msmbench.ops.nvrtc import make_context_current

    assert in_fresh_thread(current_context) == 0  # the premise: new threads start without a context
    x = torch.randn(2, 33, 48, device="cuda", requires_grad=True)
    weight = torch.randn(48, 4, device="cuda", requires_grad=True)
    config = CudaConvConfig(channels=96, steps=7, rows=2)  # a launch shape no other test compiles

    def conv_and_grad():
        out = causal_conv1d_cuda(x, weight, None, "silu", config=config)
        return out.detach(), *torch.autograd.grad(out.sum(), (x, weight))

    ours = in_fresh_thread(conv_and_grad)  # compiled and launched on the fresh thread
    again = conv_and_grad()
    for a, b in zip(ours, again):
        assert torch.equal(a, b)

    def after_make_current():
        make_context_current(torch.cuda.current_device())
        return current_context()

    assert in_fresh_thread(after_make_current) == current_context() != 0
