"""Prototype 2 (not in the package): residual add + LayerNorm whose backward is one Triton pass that also yields
dgamma, dbeta and colsum(g) (the preceding GEMM's bias gradient, once its bias moves into the add).
The forward stays torch ops (Inductor fuses it, 128 us in the step); only the backward is ours.

    TRITON_INTERPRET=1 python .gpu/add_ln2.py test
    PYTHONPATH=src python .gpu/add_ln2.py bench        ($OUT/add_ln2.json)
"""
import json, os, sys, itertools
import torch
import torch.nn.functional as F
import triton
import triton.language as tl


@triton.jit
def _bwd(dn_ptr, x_ptr, gin_ptr, mean_ptr, rstd_ptr, w_ptr, g_ptr, partial_ptr, R, P,
         D: tl.constexpr, ROWS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr, HAS_GIN: tl.constexpr,
         STAGES: tl.constexpr, ACC2D: tl.constexpr):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_D)
    cmask = cols < D
    w = tl.load(w_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
    if ACC2D:
        acc_dw = tl.zeros([BLOCK_R, BLOCK_D], dtype=tl.float32)
        acc_db = tl.zeros([BLOCK_R, BLOCK_D], dtype=tl.float32)
        acc_g = tl.zeros([BLOCK_R, BLOCK_D], dtype=tl.float32)
    else:
        acc_dw = tl.zeros([BLOCK_D], dtype=tl.float32)
        acc_db = tl.zeros([BLOCK_D], dtype=tl.float32)
        acc_g = tl.zeros([BLOCK_D], dtype=tl.float32)
    first = pid * ROWS
    for start in tl.range(0, ROWS, BLOCK_R, num_stages=STAGES):
        rows = first + start + tl.arange(0, BLOCK_R)
        rmask = rows < R
        mask = rmask[:, None] & cmask[None, :]
        offs = rows[:, None].to(tl.int64) * D + cols[None, :]
        dn = tl.load(dn_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(mean_ptr + rows, mask=rmask, other=0.0)
        rstd = tl.load(rstd_ptr + rows, mask=rmask, other=0.0)
        xhat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
        wdy = w[None, :] * dn
        c1 = tl.sum(xhat * wdy, axis=1) / D
        c2 = tl.sum(wdy, axis=1) / D
        dx = (wdy - (xhat * c1[:, None] + c2[:, None])) * rstd[:, None]
        if HAS_GIN:
            dx += tl.load(gin_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        g = dx.to(g_ptr.dtype.element_ty)
        tl.store(g_ptr + offs, g, mask=mask)
        gf = tl.where(mask, g.to(tl.float32), 0.0)
        if ACC2D:
            acc_dw += dn * xhat
            acc_db += dn
            acc_g += gf
        else:
            acc_dw += tl.sum(dn * xhat, axis=0)
            acc_db += tl.sum(dn, axis=0)
            acc_g += tl.sum(gf, axis=0)
    if ACC2D:
        s_dw, s_db, s_g = tl.sum(acc_dw, axis=0), tl.sum(acc_db, axis=0), tl.sum(acc_g, axis=0)
    else:
        s_dw, s_db, s_g = acc_dw, acc_db, acc_g
    tl.store(partial_ptr + pid * D + cols, s_dw, mask=cmask)
    tl.store(partial_ptr + (P + pid) * D + cols, s_db, mask=cmask)
    tl.store(partial_ptr + (2 * P + pid) * D + cols, s_g, mask=cmask)


CFG = dict(rows=128, block_r=2, num_warps=4, stages=1, acc2d=True)


def add_ln_backward_triton(dn, x, g_in, mean, rstd, weight, g_dtype, rows, block_r, num_warps, stages, acc2d):
    R, D = x.shape
    P = triton.cdiv(R, rows)
    g = torch.empty(R, D, device=x.device, dtype=g_dtype)
    partial = torch.empty(3, P, D, device=x.device, dtype=torch.float32)
    _bwd[(P,)](dn, x, g_in if g_in is not None else dn, mean, rstd, weight, g, partial, R, P, D=D, ROWS=rows,
               BLOCK_R=block_r, BLOCK_D=triton.next_power_of_2(D), HAS_GIN=g_in is not None, STAGES=stages,
               ACC2D=acc2d, num_warps=num_warps)
    dgamma, dbeta, dbias = (p.sum(0) for p in partial)
    return g, dgamma, dbeta, dbias


@torch.library.custom_op("proto::add_ln_bwd", mutates_args=())
def add_ln_bwd(dn: torch.Tensor, x: torch.Tensor, g_in: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor,
               weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return add_ln_backward_triton(dn.contiguous(), x, g_in.contiguous(), mean, rstd, weight, x.dtype, **CFG)


@add_ln_bwd.register_fake
def _(dn, x, g_in, mean, rstd, weight):
    v = weight.new_empty(x.shape[1], dtype=torch.float32)
    return torch.empty_like(x), v, v.clone(), v.clone()


class AddLN(torch.autograd.Function):
    """(x, n) = (x_prev + branch + bias, LayerNorm(x)); x in x_prev's dtype, n in n_dtype."""
    @staticmethod
    def forward(ctx, x_prev, branch, bias, weight, beta, eps, n_dtype):
        x = (x_prev.float() + branch.float() + bias.float()).to(x_prev.dtype)
        xf = x.float()
        var, mean = torch.var_mean(xf, -1, correction=0)
        rstd = torch.rsqrt(var + eps)
        n = ((xf - mean.unsqueeze(-1)) * rstd.unsqueeze(-1) * weight + beta).to(n_dtype)
        ctx.save_for_backward(x, mean, rstd, weight)
        ctx.branch_dtype = branch.dtype
        return x, n

    @staticmethod
    def backward(ctx, gx, gn):
        x, mean, rstd, weight = ctx.saved_tensors
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        g, dgamma, dbeta, dbias = add_ln_bwd(gn.reshape(x2.shape).to(x.dtype), x2, gx.reshape(x2.shape).to(x.dtype),
                                             mean.reshape(-1), rstd.reshape(-1), weight)
        g = g.view(shape)
        return g, g.to(ctx.branch_dtype), dbias, dgamma, dbeta, None, None


def add_ln_ours(x_prev, branch, bias, weight, beta, eps=1e-6, n_dtype=None):
    return AddLN.apply(x_prev, branch, bias, weight, beta, eps, n_dtype or x_prev.dtype)


def add_ln_ref(x_prev, branch, bias, weight, beta, eps=1e-6, n_dtype=None):
    x = x_prev + (branch + bias).to(branch.dtype)  # what the step does now: the GEMM adds its bias, then the stream add
    n = F.layer_norm(x.float(), (x.shape[-1],), weight, beta, eps).to(n_dtype or x_prev.dtype)
    return x, n


def test():
    torch.manual_seed(0)
    worst = {}
    for dtype in (torch.float32, torch.bfloat16):
        for (R, D), cfg in (((37, 48), dict(rows=8, block_r=4)), ((16, 64), dict(rows=16, block_r=2)), ((5, 20), dict(rows=4, block_r=4))):
            for acc2d in (True, False):
                CFG.update(cfg, acc2d=acc2d, stages=1, num_warps=4)
                leaves = [torch.randn(R, D).to(dtype), torch.randn(R, D).to(dtype), torch.randn(D), 1 + 0.1 * torch.randn(D), 0.1 * torch.randn(D)]
                cx, cn = torch.randn(R, D).to(dtype), torch.randn(R, D).to(dtype)
                outs = {}
                for name, fn in (("ref", add_ln_ref), ("ours", add_ln_ours)):
                    ls = [t.clone().requires_grad_() for t in leaves]
                    x, n = fn(*ls)
                    torch.autograd.backward((x, n), (cx, cn))
                    outs[name] = [x, n] + [t.grad for t in ls]
                for i, nm in enumerate(["x", "n", "d x_prev", "d branch", "d bias", "d gamma", "d beta"]):
                    r, o = outs["ref"][i].float(), outs["ours"][i].float()
                    worst[f"{str(dtype)[6:]} {R}x{D} acc2d={acc2d} {nm}"] = ((o - r).abs().max() / r.abs().max()).item()
    tol = {"float32": 1e-5, "bfloat16": 2e-2}
    bad = {k: v for k, v in worst.items() if v > tol[k.split()[0]]}
    print(json.dumps(worst, indent=0))
    print("FAILED" if bad else "all within tolerance", bad)
    return 1 if bad else 0


def bench():
    from msmbench.bench import cuda_time_ms
    R, D, eps, dt = 64256, 768, 1e-6, torch.bfloat16
    torch.manual_seed(0)
    x_prev, branch, dn, g_in = (torch.randn(R, D, device="cuda", dtype=dt) for _ in range(4))
    bias, weight, beta = (torch.randn(D, device="cuda") for _ in range(3))
    xf = x_prev.float() + branch.float()
    x = xf.to(dt)
    var, mean = torch.var_mean(x.float(), -1, correction=0)
    rstd = torch.rsqrt(var + eps)
    rec = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__, "shape": [R, D], "bwd": []}
    ref = None
    for rows, block_r, warps, stages, acc2d in itertools.product((64, 128, 256), (1, 2, 4), (4, 8), (1, 3), (True, False)):
        cfg = dict(rows=rows, block_r=block_r, num_warps=warps, stages=stages, acc2d=acc2d)
        try:
            fn = lambda: add_ln_backward_triton(dn, x, g_in, mean, rstd, weight, dt, **cfg)
            out = fn()
            if ref is None:
                ref = out
            err = max(((o.float() - r.float()).abs().max() / r.float().abs().max()).item() for o, r in zip(out, ref))
            rec["bwd"].append([cfg, cuda_time_ms(fn, warmup=5, repeats=50), err])
        except Exception as e:  # noqa: BLE001
            rec["bwd"].append([cfg, repr(e)[:200]])
    ok = [r for r in rec["bwd"] if len(r) == 3 and r[2] < 1e-3]
    best = min(ok, key=lambda r: r[1])
    rec["best_bwd"] = best
    print("best bwd", best, flush=True)
    CFG.update(best[0])
    # layer level, compiled, forward + backward, as in the step (bf16 stream and branch, n in bf16):
    # Inductor alone (bias added by the GEMM, then the stream add; colsum for the bias) against ours
    for name, fn in (("inductor", add_ln_ref), ("ours", add_ln_ours)):
        leaves = [t.clone().requires_grad_() for t in (x_prev, branch, bias, weight, beta)]
        cfn = torch.compile(fn)
        def step():
            xo, no = cfn(*leaves)
            torch.autograd.backward((xo, no), (g_in, dn))
        rec[f"{name}_fwd_bwd_ms"] = cuda_time_ms(step, warmup=5, repeats=50)
        rec[f"{name}_fwd_ms"] = cuda_time_ms(lambda: cfn(*leaves), warmup=5, repeats=50)
        for t in leaves:
            t.grad = None
    print(json.dumps({k: v for k, v in rec.items() if k.endswith("_ms")}), flush=True)
    json.dump(rec, open(os.path.join(os.environ.get("OUT", "."), "add_ln2.json"), "w"), indent=1)


if __name__ == "__main__":
    if sys.argv[1] == "test":
        sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
        from test_mlstm_triton import _patch_interpreter
        _patch_interpreter()
        sys.exit(test())
    bench()
