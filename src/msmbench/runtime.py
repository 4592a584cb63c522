"""Process-level CPU settings shared by the command-line entry points and the benchmarks."""

from __future__ import annotations

import ctypes


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory in the heap (trim threshold 1 GiB, mmap threshold 32 MiB).

    PyTorch's CPU allocator does not cache: a backbone whose activations are freed and re-taken every
    step otherwise pays page faults each time (measured: ~30k minor faults, ~10% of a CPU Mamba
    step). Returns False where glibc's mallopt is not available; nothing changes then.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_trim_threshold, 1 << 30) and libc.mallopt(m_mmap_threshold, 32 << 20))


def configure_cpu(threads: int | None) -> None:
    """Torch threads (a workflow job gets what its rule declares) and the allocator setting above."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    keep_freed_memory()
