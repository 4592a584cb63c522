"""The GPU benchmarks' bookkeeping (runs without a GPU): failures become records, not crashes."""

import torch

from msmbench.bench import _measured, format_record


def test_measured_records_ok_oom_and_error():
    base = {"backbone": "mamba", "size": "base", "tokens": 251, "batch": 8}
    assert _measured(base, lambda: {"train_step_ms": 1.0}) == {**base, "status": "ok", "train_step_ms": 1.0}

    def oom():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB\nmore detail")

    def broken():
        raise RuntimeError("triton compile failed")

    rec = _measured(base, oom)
    assert rec["status"] == "oom" and rec["error"] == "CUDA out of memory. Tried to allocate 4.00 GiB"
    rec = _measured(base, broken)
    assert rec["status"] == "error" and "triton compile failed" in rec["error"]
    assert format_record(rec).rstrip().endswith("ERROR")
