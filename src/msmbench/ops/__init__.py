"""msmbench.ops"""

import functools
import importlib.util

from msmbench.ops.selective_scan import (causal_conv1d, selective_scan_chunked, selective_scan_fn,  # noqa: F401
                                       selective_scan_ref)


@functools.cache
def triton_installed() -> bool:
    """Triton importable (checked once per process): the condition for the "triton" kernels on CUDA."""
    return importlib.util.find_spec("triton") is not None
