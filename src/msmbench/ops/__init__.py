"""msmbench.ops"""

from msmbench.ops.selective_scan import (causal_conv1d, selective_scan_chunked, selective_scan_fn,  # noqa: F401
                                       selective_scan_ref)
