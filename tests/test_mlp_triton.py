"""mlp_triton: the fused GELU MLP's output and five gradients agree with float64 autograd through the reference.

Without a GPU the kernels run under Triton's CPU interpreter, which must be switched on (TRITON_INTERPRET=1)
before Triton's @jit decorators run: the interpreted cases run in one subprocess (this file run as a
script) and the tests read its results. They force 32 x 32 x 32 tiles (patching FWD_CONFIG / BWD_CONFIG)
so that M, D and H straddle tile edges and the grouped program order has a short last group. With CUDA the
same cases, plus ones at the default tiles and the Base shape, run on the GPU (marked gpu).

Tolerances (relative Frobenius error against float64 on the same, already rounded, inputs): float32 1e-5
(full-precision dots; measured <= 2.2e-7 in the interpreter); float16 5e-3 and bfloat16 2e-2: pre, post,
out, grad_pre and every gradient are rounded to the input dtype (unit roundoff 2^-11 ~ 5e-4 for float16,
2^-9 ~ 2e-3 for bfloat16) and the gradient GEMMs take rounded operands, so a few roundings add up (measured
in the interpreter: bfloat16 <= 3.6e-3, float16 <= 4.4e-4, no worse than PyTorch's unfused reference in
that dtype, which each result reports as "baseline"); 5x headroom for longer sums at larger shapes.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch

TOL = {torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 2e-2}
NAMES = ("out", "x", "w1", "b1", "w2", "b2")
SMALL = (32, 32, 32)  # block_m, block_n, block_k forced on the interpreted cases

# name -> leading dims of x, D, H, dtype, forced tiles (None: the defaults), which inputs require grad,
# "strided": x with non-contiguous leading dims and weights whose last dim is not contiguous
CASES = {
    "fp32_ragged": {"lead": (70,), "D": 40, "H": 104},
    "fp32_leading_dims": {"lead": (2, 37), "D": 48, "H": 80},
    "bf16_ragged": {"lead": (70,), "D": 40, "H": 104, "dtype": "bfloat16"},
    "bf16_leading_dims": {"lead": (2, 37), "D": 48, "H": 80, "dtype": "bfloat16"},
    "fp16_ragged": {"lead": (70,), "D": 40, "H": 104, "dtype": "float16"},
    "H_below_block_n": {"lead": (50,), "D": 40, "H": 24, "blocks": (32, 64, 32)},
    "bf16_H_below_block_n": {"lead": (50,), "D": 40, "H": 24, "blocks": (32, 64, 32), "dtype": "bfloat16"},
    "M_below_block_m_D_below_block_k": {"lead": (5,), "D": 20, "H": 72},
    "frozen_weights": {"lead": (40,), "D": 40, "H": 72, "requires": ("x",)},
    "frozen_x_and_b1": {"lead": (40,), "D": 40, "H": 72, "requires": ("w1", "w2", "b2")},
    "strided_inputs": {"lead": (2, 37), "D": 40, "H": 72, "strided": True},
}
GPU_CASES = {
    **CASES,
    "default_tiles_ragged_bf16": {"lead": (1000,), "D": 200, "H": 504, "dtype": "bfloat16", "blocks": None},
    "default_tiles_fp32": {"lead": (2, 300), "D": 768, "H": 3072, "blocks": None},
    "base_bf16": {"lead": (4096,), "D": 768, "H": 3072, "dtype": "bfloat16", "blocks": None},
    "base_fp16": {"lead": (4096,), "D": 768, "H": 3072, "dtype": "float16", "blocks": None},
    "base_leading_dims_bf16": {"lead": (16, 251), "D": 768, "H": 3072, "dtype": "bfloat16", "blocks": None},
}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    err, scale = (a.double() - b.double()).norm().item(), b.double().norm().item()
    return err / scale if scale > 0 else err


def case_inputs(lead, D, H, dtype="float32", strided=False, seed=0, **_) -> list[torch.Tensor]:
    """x ~ N(0, 1) and weights scaled so that pre ~ N(0, 1.25): GELU's curved part, both signs."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*lead, D, generator=g, dtype=torch.float64)
    w1 = torch.randn(H, D, generator=g, dtype=torch.float64) / D ** 0.5
    b1 = 0.5 * torch.randn(H, generator=g, dtype=torch.float64)
    w2 = torch.randn(D, H, generator=g, dtype=torch.float64) / H ** 0.5
    b2 = 0.5 * torch.randn(D, generator=g, dtype=torch.float64)
    ins = [t.to(getattr(torch, dtype)) for t in (x, w1, b1, w2, b2)]
    if strided:  # same values, other layouts: x's leading dims swapped, w1 and w2 stored transposed
        x, w1, b1, w2, b2 = ins
        ins = [x.transpose(0, 1).contiguous().transpose(0, 1), w1.t().contiguous().t(), b1,
               w2.t().contiguous().t(), b2]
        assert not ins[0].is_contiguous() and ins[1].stride(-1) != 1 and ins[3].stride(-1) != 1
    return ins


def kernel_settings(spec: dict):
    from msmbench.ops import mlp_triton as mt
    blocks = spec.get("blocks", SMALL)
    if blocks is None:
        return contextlib.nullcontext()  # the defaults
    config = mt.MLPKernelConfig(*blocks, group_m=2, num_warps=4, num_stages=2)
    return mock.patch.multiple(mt, FWD_CONFIG=config, BWD_CONFIG=config)


def run_case(name: str, device: str, cases=CASES) -> dict:
    """Relative errors of out and of the gradients against float64 autograd through gelu_mlp_reference;
    the same for the reference in the inputs' dtype ("baseline"); whether a second run is bitwise equal."""
    from msmbench.ops.mlp_triton import gelu_mlp_reference, gelu_mlp_triton
    spec = cases[name]
    inputs = [t.to(device) for t in case_inputs(**spec)]
    requires = [n in spec.get("requires", NAMES) for n in NAMES[1:]]
    weight = torch.randn(*spec["lead"], spec["D"], generator=torch.Generator().manual_seed(1),
                         dtype=torch.float64).to(device)

    def fwd_bwd(fn, ins):
        leaves = [t.detach().requires_grad_(r) for t, r in zip(ins, requires)]
        out = fn(*leaves)
        grads = torch.autograd.grad((out.double() * weight).sum(), [t for t in leaves if t.requires_grad])
        return out, grads

    out_ref, grads_ref = fwd_bwd(gelu_mlp_reference, [t.double() for t in inputs])
    with kernel_settings(spec):
        out, grads = fwd_bwd(gelu_mlp_triton, inputs)
        out2, grads2 = fwd_bwd(gelu_mlp_triton, inputs)
    out_base, grads_base = fwd_bwd(gelu_mlp_reference, inputs)
    names = ["out"] + [n for n, r in zip(NAMES[1:], requires) if r]
    wanted = [t for t, r in zip(inputs, requires) if r]
    return {
        "errors": dict(zip(names, (rel(a, b) for a, b in zip((out, *grads), (out_ref, *grads_ref))))),
        "baseline": dict(zip(names, (rel(a, b) for a, b in zip((out_base, *grads_base), (out_ref, *grads_ref))))),
        "dtypes_ok": out.dtype == inputs[0].dtype and all(g.dtype == t.dtype for g, t in zip(grads, wanted)),
        "shape_ok": out.shape == inputs[0].shape,
        "bitwise_equal": {n: torch.equal(a, b) for n, a, b in zip(names, (out, *grads), (out2, *grads2))},
    }


def check(name: str, result: dict, cases=CASES) -> None:
    spec = cases[name]
    tol = TOL[getattr(torch, spec.get("dtype", "float32"))]
    assert result["dtypes_ok"] and result["shape_ok"], "out and the gradients must keep the inputs' dtypes/shapes"
    expected = ["out"] + [n for n in NAMES[1:] if n in spec.get("requires", NAMES)]
    assert list(result["errors"]) == expected
    bad = {k: f"{e:.3g} > {tol:.3g}" for k, e in result["errors"].items() if not e < tol}  # NaN fails too
    assert not bad, f"{name}: relative errors {bad} (all: {result['errors']}; baseline: {result['baseline']})"
    # no atomics anywhere, so a rerun is bitwise identical (db1 from per-tile partial sums, above all)
    assert all(result["bitwise_equal"].values()), f"{name}: not deterministic: {result['bitwise_equal']}"


def transformer_case(device: str, compiled: bool = False) -> dict:
    """The Transformer with mlp="triton" against mlp="torch" on the same weights: relative errors of the
    output and of the input's gradient, in float32 and under bfloat16 autocast (optionally compiled)."""
    from msmbench.models.registry import backbone_config, build_backbone
    torch.manual_seed(0)
    ref = build_backbone("transformer", backbone_config("transformer", "cpu")).to(device)
    fused = build_backbone("transformer", backbone_config("transformer", "cpu", mlp="triton")).to(device)
    fused.load_state_dict(ref.state_dict())
    run = torch.compile(fused) if compiled else fused
    x = torch.randn(2, 37, 64, device=device)
    weight = torch.randn(2, 37, 64, device=device)  # not out.square(): a LayerNorm's output has a near-fixed norm
    errors = {}
    for precision in ("float32", "bfloat16"):
        with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bfloat16"):
            results = []
            for model in (ref, run):
                leaf = x.clone().requires_grad_()
                out = model(leaf)
                results.append((out, *torch.autograd.grad((out.float() * weight).sum(), leaf)))
        errors[precision] = {n: rel(a, b) for n, a, b in zip(("out", "x"), results[1], results[0])}
    return errors


def check_transformer(errors: dict) -> None:
    assert errors["float32"]["out"] < 1e-5 and errors["float32"]["x"] < 1e-5, errors
    assert errors["bfloat16"]["out"] < 2e-2 and errors["bfloat16"]["x"] < 5e-2, errors


# --- Triton's CPU interpreter, in a subprocess ---------------------------------------------------------------
def _patch_interpreter() -> None:
    """Work around three Triton 3.6 interpreter bugs (the compiled kernels are unaffected):
    - scalar kernel arguments are 1-element arrays, and a loop bound made of them (range(tl.cdiv(K, BLOCK_K)))
      takes int() of one, which NumPy >= 2.3 refuses ("only 0-dimensional arrays can be converted");
    - tl.dot multiplies bfloat16 operands as their raw uint16 bits (NumPy has no bfloat16); they are widened
      to float32 first (exact: bfloat16 products accumulated in float32, as tensor cores do);
    - float32 -> bfloat16 casts truncate the mantissa (twice the error of the GPU's round to nearest even,
      which the bfloat16 tolerance is about); here they round to nearest even, through PyTorch."""
    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter as interp

    patch_tensor = interp._patch_lang_tensor

    def patch_tensor_index(tensor, scope):
        patch_tensor(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    interp._patch_lang_tensor = patch_tensor_index
    create_dot = interp.InterpreterBuilder.create_dot

    def widen(x):
        if x.dtype.scalar != tl.bfloat16:
            return x
        return interp.TensorHandle(interp._convert_float(x.data, tl.bfloat16, tl.float32, None).view(np.float32),
                                   tl.float32)

    def create_dot_widened(self, a, b, d, input_precision, max_num_imprecise_acc):
        return create_dot(self, widen(a), widen(b), d, input_precision, max_num_imprecise_acc)

    interp.InterpreterBuilder.create_dot = create_dot_widened
    cast = interp.InterpreterBuilder.cast_impl

    def cast_rounded(self, src, dst_type):
        if src.dtype.scalar != tl.float32 or dst_type.scalar != tl.bfloat16:
            return cast(self, src, dst_type)
        bits = torch.from_numpy(np.ascontiguousarray(src.data)).to(torch.bfloat16).view(torch.int16).numpy()
        return interp.TensorHandle(bits.view(np.uint16), tl.bfloat16)

    interp.InterpreterBuilder.cast_impl = cast_rounded


@pytest.fixture(scope="module")
def interpreted() -> dict:
    pytest.importorskip("triton", reason="Triton is not installed (pip install triton)")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve())], check=False, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", list(CASES))
def test_interpreted_matches_float64_reference(interpreted, name):
    check(name, interpreted[name])


def test_interpreted_transformer_mlp_option(interpreted):
    check_transformer(interpreted["_transformer"])


# --- CUDA ---------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("name", list(GPU_CASES))
def test_cuda_matches_float64_reference(name):
    pytest.importorskip("triton", reason="Triton is not installed (pip install triton)")
    check(name, run_case(name, "cuda", GPU_CASES), GPU_CASES)


@pytest.mark.gpu
@pytest.mark.parametrize("compiled", [False, True])
def test_cuda_transformer_mlp_option(compiled):
    pytest.importorskip("triton", reason="Triton is not installed (pip install triton)")
    from msmbench.ops import mlp_triton as mt
    seen = []

    def spy(x, *args, **kwargs):  # the custom op runs this eagerly, compiled or not
        seen.append(x.dtype)
        return linear_gelu(x, *args, **kwargs)

    linear_gelu = mt.linear_gelu
    with mock.patch.object(mt, "linear_gelu", spy):
        check_transformer(transformer_case("cuda", compiled))
    assert set(seen) == {torch.float32, torch.bfloat16}, f"the kernel ran in {set(seen)}, not as autocast asks"


@pytest.mark.gpu
def test_cuda_db1_deterministic_at_base_shape():
    pytest.importorskip("triton", reason="Triton is not installed (pip install triton)")
    from msmbench.ops.mlp_triton import gelu_mlp_triton
    x, w1, b1, w2, b2 = (t.cuda() for t in case_inputs((8192,), 768, 3072, "bfloat16"))
    b1.requires_grad_()
    grad = torch.randn_like(x)
    db1 = [torch.autograd.grad(gelu_mlp_triton(x, w1, b1, w2, b2), b1, grad)[0] for _ in range(3)]
    assert all(torch.equal(db1[0], d) for d in db1[1:])


# --- without Triton's kernels running --------------------------------------------------------------------------
def test_reference_is_the_transformer_mlp():
    from msmbench.models.transformer import MLP
    mt = pytest.importorskip("msmbench.ops.mlp_triton", reason="Triton is not installed (pip install triton)")
    mlp = MLP(24, 96)
    x = torch.randn(3, 5, 24)
    out = mt.gelu_mlp_reference(x, mlp.fc1.weight, mlp.fc1.bias, mlp.fc2.weight, mlp.fc2.bias)
    torch.testing.assert_close(out, mlp(x), rtol=0, atol=0)


def test_rejects_mixed_or_unsupported_dtypes_and_bad_shapes():
    mt = pytest.importorskip("msmbench.ops.mlp_triton", reason="Triton is not installed (pip install triton)")
    x, w1, b1, w2, b2 = case_inputs((4,), 16, 32)
    with pytest.raises(ValueError, match="one dtype"):
        mt.gelu_mlp_triton(x.bfloat16(), w1, b1, w2, b2)  # e.g. forgot to cast the weights under autocast
    with pytest.raises(ValueError, match="one dtype"):
        mt.gelu_mlp_triton(*(t.double() for t in (x, w1, b1, w2, b2)))
    with pytest.raises(ValueError, match=r"w2 \[D, H\]"):
        mt.gelu_mlp_triton(x, w1, b1, w2.t(), b2)
    with pytest.raises(ValueError, match="multiples of 16 bytes"):  # 100 bf16 values: rows TMA cannot address
        mt.gelu_mlp_triton(*(t.bfloat16() for t in case_inputs((4,), 16, 100)))
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        with pytest.raises(RuntimeError, match="CUDA"):
            mt.gelu_mlp_triton(x, w1, b1, w2, b2)


if __name__ == "__main__":  # the interpreted run: `TRITON_INTERPRET=1 python tests/test_mlp_triton.py`
    torch.set_num_threads(min(2, torch.get_num_threads()))
    _patch_interpreter()
    print(json.dumps({**{name: run_case(name, "cpu") for name in CASES}, "_transformer": transformer_case("cpu")}))
