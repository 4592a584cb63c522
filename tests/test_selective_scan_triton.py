"""Parity of the Triton selective scan (msmbench.ops.selective_scan_triton) with `selective_scan_ref`.

The kernels run under Triton's CPU interpreter in a subprocess (TRITON_INTERPRET=1 has to be set before
triton's @jit decorators run, i.e. before the module is imported), on small shapes with small tiles so
that partial chunks, partial channel blocks, several saved segments and both backward phases are hit.
With CUDA they also run compiled (tests marked gpu), at the default tiles.

Errors are max |x - ref| / max |ref| per tensor, the reference in float64 from the same (rounded) inputs.
Tolerances: fp32 inputs 1e-5 (measured ~1e-7); bf16 inputs 1e-2 for what is returned in bf16 (out and the
gradients of bf16 inputs: one bf16 rounding, 2^-8 relative, of values whose errors are otherwise fp32's)
and 1e-5 for what is returned in fp32 (the gradients of A, D, delta_bias).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HAS_TRITON = importlib.util.find_spec("triton") is not None
GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
FP32_GRADS = ("A", "D", "delta_bias")

# Small tiles for the interpreter: chunks of 4 steps, states saved every 8 (K = 2 chunks a segment), 8
# channels a block; "k1" saves every chunk, "k4" has 4 chunks of 2 steps a segment in the backward.
SMALL = {"save_every": 8, "fwd_chunk": 4, "fwd_block_d": 8, "fwd_warps": 1,
         "bwd_chunk": 4, "bwd_block_d": 8, "bwd_warps": 1}
K1 = {**SMALL, "save_every": 4}
K4 = {**SMALL, "bwd_chunk": 2, "fwd_chunk": 8}


def _case(B, L, D, N, *, z=True, D_skip=True, bias=True, softplus=True, cfg=SMALL, **extra) -> dict:
    """Shapes, options (extra: dtype, strided, big_dt) and tiles (None: the default H100 tiles)."""
    return {"B": B, "L": L, "D": D, "N": N, "z": z, "D_skip": D_skip, "bias": bias, "softplus": softplus,
            "cfg": cfg, **extra}


# L=13 is not a multiple of the chunk nor of save_every; D=10 is not a multiple of the block; N=24 pads to 32.
CASES = {
    "full": _case(2, 13, 10, 24, strided=True),
    "bare": _case(2, 13, 10, 24, z=False, D_skip=False, bias=False, softplus=False),
    "no_z": _case(1, 9, 6, 5, z=False),
    "L1": _case(2, 1, 10, 24),
    "k1": _case(1, 11, 10, 24, bias=False, cfg=K1),
    "k4": _case(1, 21, 9, 24, cfg=K4),
    "large_dt": _case(1, 13, 10, 24, big_dt=True),
    "bf16": _case(2, 13, 10, 24, dtype="bfloat16"),
}
GPU_CASES = {
    "paper_like_fp32": _case(3, 251, 200, 24, cfg=None),
    "paper_like_bf16": _case(3, 251, 200, 24, cfg=None, dtype="bfloat16", strided=True),
    "large_dt_gpu": _case(2, 70, 40, 16, cfg=None, big_dt=True),
    "bare_L1_gpu": _case(2, 1, 33, 24, z=False, D_skip=False, bias=False, softplus=False, cfg=None),
}


def _inputs(case: dict, device: str) -> dict:
    """Leaf tensors in the case's dtypes (u, delta, z, B, C low precision; A, D, bias fp32), seeded."""
    g = torch.Generator().manual_seed(sum(map(ord, repr(sorted(case.items())))) % 2**31)
    Bt, L, Dm, N = case["B"], case["L"], case["D"], case["N"]
    lo = getattr(torch, case.get("dtype", "float32"))

    def rnd(*shape, scale=1.0, shift=0.0):
        return torch.randn(*shape, generator=g) * scale + shift

    if case.get("big_dt"):      # dt = softplus(delta + bias) in ~[3, 35], |A| up to 16: decays underflow to 0
        delta = rnd(Bt, L, Dm, scale=8.0, shift=15.0)
        A = -torch.rand(Dm, N, generator=g) * 15.5 - 0.5
    elif case["softplus"]:      # Mamba-like: dt ~ 1e-3 .. 0.3
        delta = rnd(Bt, L, Dm, scale=1.5, shift=-4.0)
        A = -torch.rand(Dm, N, generator=g) * 4.0 - 0.05
    else:                       # raw dt must be positive for the recurrence to decay
        delta = torch.rand(Bt, L, Dm, generator=g) * 0.5 + 0.01
        A = -torch.rand(Dm, N, generator=g) * 4.0 - 0.05
    t = {"u": rnd(Bt, L, Dm), "delta": delta, "A": A, "B": rnd(Bt, L, N), "C": rnd(Bt, L, N),
             "D": rnd(Dm) if case["D_skip"] else None, "z": rnd(Bt, L, Dm) if case["z"] else None,
             "delta_bias": rnd(Dm, scale=0.3) if case["bias"] else None}
    if case.get("strided"):     # unit last stride only: slices of wider (fused-projection-like) tensors
        for k in ("z", "B", "C"):
            if t[k] is not None:
                wide = torch.randn(*t[k].shape[:-1], 2 * t[k].shape[-1] + 3, generator=g)
                wide[..., 3:3 + t[k].shape[-1]] = t[k]
                t[k] = wide[..., 3:3 + t[k].shape[-1]]
    out = {}
    for k, v in t.items():
        if v is None:
            out[k] = None
            continue
        v = v.to(device=device, dtype=lo if k in ("u", "delta", "z", "B", "C") else torch.float32)
        out[k] = v.requires_grad_()
    return out


def _reference(x: dict, softplus: bool):
    """selective_scan_ref in float64 on channels-first copies of the same values."""
    from msmbench.ops.selective_scan import selective_scan_ref

    leaves = {k: (v.detach().double().requires_grad_() if v is not None else None) for k, v in x.items()}
    tr = (lambda v: v.transpose(1, 2) if v is not None else None)
    out = selective_scan_ref(tr(leaves["u"]), tr(leaves["delta"]), leaves["A"], tr(leaves["B"]), tr(leaves["C"]),
                             leaves["D"], tr(leaves["z"]), leaves["delta_bias"], softplus)
    return tr(out), leaves


def case_errors(case: dict, device: str, scan=None) -> dict:
    """{'out': err, 'grad_<name>': err, ...} of a scan against the float64 reference: selective_scan_triton at
    the case's tiles, or `scan(u, delta, A, B, C, D, z, delta_bias, softplus)`."""
    from msmbench.ops.selective_scan_triton import ScanConfig, selective_scan_triton

    x = _inputs(case, device)
    ref_out, ref_leaves = _reference(x, case["softplus"])
    if scan is None:
        cfg = ScanConfig(**case["cfg"]) if case["cfg"] else None
        scan = functools.partial(selective_scan_triton, config=cfg)
    out = scan(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], case["softplus"])
    assert out.dtype == x["u"].dtype and out.shape == x["u"].shape
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out)
    names = [k for k in GRAD_NAMES if x[k] is not None]
    grads = torch.autograd.grad(out, [x[k] for k in names], dout)
    ref_grads = torch.autograd.grad(ref_out, [ref_leaves[k] for k in names], dout.double())

    def err(a, ref):
        return ((a.double().cpu() - ref.cpu()).abs().max() / ref.abs().max().clamp_min(1e-30)).item()

    res = {"out": err(out, ref_out), "finite": bool(torch.isfinite(out).all())}
    for k, gk, rk in zip(names, grads, ref_grads):
        assert gk.dtype == x[k].dtype and gk.shape == x[k].shape, k
        res[f"grad_{k}"] = err(gk, rk)
        res["finite"] &= bool(torch.isfinite(gk).all())
    return res


def _check(name: str, case: dict, res: dict) -> None:
    assert res["finite"], (name, res)
    bf16 = case.get("dtype") == "bfloat16"
    for key, e in res.items():
        if key == "finite":
            continue
        tol = 1e-2 if bf16 and key.removeprefix("grad_") not in FP32_GRADS else 1e-5
        assert e <= tol, f"{name}: {key} relative error {e:.2e} > {tol:.0e} ({res})"


# ------------------------------------------------------------------------------------------------
# Interpreter (subprocess)
# ------------------------------------------------------------------------------------------------
def _install_interpreter_shims() -> None:
    """Two test-only patches of Triton 3.6's CPU interpreter (the compiled kernels are unaffected).

    - Scalars are 1-element arrays there and `int()` of those is an error since numpy 2.3, which breaks
      `range(0, n)` over a kernel argument: take the element.
    - Its generic associative scan calls the combine function once per element in Python; call it once
      per step on whole slices instead (the same sequential order of combines, so the same numbers).
    """
    import numpy as np
    import triton.runtime.interpreter as ti

    patch_tensor = ti._patch_lang_tensor

    def _patch_lang_tensor(tensor, scope):
        patch_tensor(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(np.asarray(self.handle.data).reshape(-1)[0]))

    def generic_scan(self, input):
        data = [np.asarray(a.handle.data) for a in input]
        n = data[0].shape[self.axis]
        outs = [np.empty_like(d) for d in data]
        acc = [np.take(d, 0, axis=self.axis) for d in data]
        for i in range(n):
            if i:
                xs = [self.to_tensor(np.take(d, i, axis=self.axis), a.dtype) for d, a in zip(data, input)]
                accs = [self.to_tensor(v, a.dtype) for v, a in zip(acc, input)]
                ret = self.combine_fn.fn(*accs, *xs)
                ret = ret if isinstance(ret, tuple) else (ret,)
                acc = [np.broadcast_to(np.asarray(r.handle.data), acc[0].shape) for r in ret]
            for o, v in zip(outs, acc):
                idx = [slice(None)] * o.ndim
                idx[self.axis] = i
                o[tuple(idx)] = v
        return [self.to_tensor(o, a.dtype) for o, a in zip(outs, input)]

    ti._patch_lang_tensor = _patch_lang_tensor
    ti.ScanOps.generic_scan = generic_scan


def _interpreter_main() -> None:
    assert os.environ.get("TRITON_INTERPRET") == "1"
    _install_interpreter_shims()
    torch.set_num_threads(1)
    print(json.dumps({name: case_errors(case, "cpu") for name, case in CASES.items()}))


@pytest.fixture(scope="module")
def interpreter_results():
    if not HAS_TRITON:
        pytest.skip("triton is not installed (the kernels need it; CI runs without)")
    env = dict(os.environ, TRITON_INTERPRET="1")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, __file__], check=False, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", list(CASES))
def test_interpreter_parity(interpreter_results, name):
    _check(name, CASES[name], interpreter_results[name])


# ------------------------------------------------------------------------------------------------
# Compiled, on CUDA
# ------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("tiles", ["case", "default"])
@pytest.mark.parametrize("name", list(CASES) + list(GPU_CASES))
def test_cuda_parity(name, tiles):
    """Compiled kernels: each case at its own tiles and at the default (H100) ones."""
    if not HAS_TRITON:
        pytest.skip("triton is not installed")
    case = {**CASES, **GPU_CASES}[name]
    if tiles == "default":
        case = {**case, "cfg": None}
    _check(name, case, case_errors(case, "cuda"))


@pytest.mark.gpu
def test_cuda_deterministic():
    if not HAS_TRITON:
        pytest.skip("triton is not installed")
    from msmbench.ops.selective_scan_triton import selective_scan_triton

    case = GPU_CASES["paper_like_bf16"]
    runs = []
    for _ in range(2):
        x = _inputs(case, "cuda")
        out = selective_scan_triton(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"],
                                    True)
        runs.append([out, *torch.autograd.grad(out.float().square().sum(), [x[k] for k in GRAD_NAMES])])
    for a, b in zip(*runs):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------------
# Without triton / without CUDA
# ------------------------------------------------------------------------------------------------
def test_import_without_triton_and_clear_error():
    code = ("import sys; sys.modules['triton'] = None\n"
            "import torch\n"
            "from msmbench.ops import selective_scan_triton as m\n"
            "assert not m.HAS_TRITON\n"
            "x = torch.zeros(1, 2, 3); A = -torch.ones(3, 4); Bm = torch.zeros(1, 2, 4)\n"
            "try:\n"
            "    m.selective_scan_triton(x, x, A, Bm, Bm)\n"
            "except RuntimeError as e:\n"
            "    assert 'triton is not installed' in str(e), e\n"
            "else:\n"
            "    raise AssertionError('no error')\n")
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.mark.skipif(not HAS_TRITON or os.environ.get("TRITON_INTERPRET") == "1",
                    reason="needs triton, compiled mode")
def test_cpu_tensors_rejected():
    from msmbench.ops.selective_scan_triton import selective_scan_triton

    x = torch.zeros(1, 2, 3)
    with pytest.raises(RuntimeError, match="CUDA"):
        selective_scan_triton(x, x, -torch.ones(3, 4), torch.zeros(1, 2, 4), torch.zeros(1, 2, 4))


if __name__ == "__main__":
    _interpreter_main()
