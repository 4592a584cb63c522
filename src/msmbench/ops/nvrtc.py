"""Run-time compilation of msmbench's CUDA kernels (the .cu files beside this module) with NVRTC.

torch.cuda._compile_kernel (torch >= 2.8) compiles CUDA C++ for the current device at first use, so the
kernels need no build step and no compiler at install time (a second or so per configuration, cached for
the process). Compile-time parameters are passed as -D defines; the one shared header, cuda_elem.cuh, is
pasted in place of its #include because NVRTC does not search this folder.

torch loads and launches these kernels through the CUDA driver API, which needs a current context on the
calling thread; torch's own runtime calls create one only lazily, so a thread whose first CUDA work is one of
our kernels (autograd's device thread reusing cached memory, say) would fail with "invalid device context".
`NvrtcKernel` makes the device's primary context, the one torch uses, current before each load and launch.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch

HERE = Path(__file__).parent
SHARED_HEADER = "cuda_elem.cuh"
ELEM_CODES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}  # cuda_elem.cuh's ELEM per storage type


def cuda_kernels_available() -> bool:
    """A CUDA device and torch's NVRTC wrapper (torch >= 2.8), the conditions for these kernels."""
    return torch.cuda.is_available() and hasattr(torch.cuda, "_compile_kernel")


def kernel_source(name: str) -> str:
    """The text of HERE/name with the shared header pasted in place of its #include."""
    include = f'#include "{SHARED_HEADER}"'
    return (HERE / name).read_text().replace(include, (HERE / SHARED_HEADER).read_text())


@functools.cache
def _driver() -> ctypes.CDLL:
    """The CUDA driver library, loaded once: torch's getter builds a new handle on every call."""
    return torch.cuda._utils._get_gpu_runtime_library()


@functools.cache
def _primary_context(device: int) -> int:
    """The driver handle of `device`'s primary context (retained once per process)."""
    torch.cuda.init()
    driver, handle, context = _driver(), ctypes.c_int(), ctypes.c_void_p()
    torch.cuda._utils._check_cuda(driver.cuDeviceGet(ctypes.byref(handle), device))
    torch.cuda._utils._check_cuda(driver.cuDevicePrimaryCtxRetain(ctypes.byref(context), handle))
    return context.value


def make_context_current(device: int) -> None:
    """Make `device`'s primary context current on this thread unless it already is (a cheap query)."""
    driver, context = _driver(), ctypes.c_void_p()
    torch.cuda._utils._check_cuda(driver.cuCtxGetCurrent(ctypes.byref(context)))
    primary = _primary_context(device)
    if context.value != primary:
        torch.cuda._utils._check_cuda(driver.cuCtxSetCurrent(ctypes.c_void_p(primary)))


class NvrtcKernel:
    """A compiled kernel bound to one device; calling it launches on that device's current stream."""

    def __init__(self, kernel, device: int):
        self.kernel, self.device = kernel, device

    def __call__(self, grid: tuple[int, int, int], block: tuple[int, int, int], args: list) -> None:
        make_context_current(self.device)
        self.kernel(grid=grid, block=block, args=args, stream=torch.cuda.current_stream(self.device))


def compile_kernels(source: str, names: tuple[str, ...], device: torch.device, **defines: int
                    ) -> tuple[NvrtcKernel, ...]:
    """The kernels `names` of HERE/source for `device`, compiled with -Dkey=value for each define."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    return _compile(source, names, index, tuple(sorted(defines.items())))


@functools.cache
def _compile(source: str, names: tuple[str, ...], device: int, defines: tuple) -> tuple[NvrtcKernel, ...]:
    text = kernel_source(source)
    options = ["-std=c++17", *(f"-D{key}={value}" for key, value in defines)]
    with torch.cuda.device(device):  # compiles for this device's architecture, loads into its context
        make_context_current(device)
        return tuple(NvrtcKernel(torch.cuda._compile_kernel(text, name, nvcc_options=options), device)
                     for name in names)
