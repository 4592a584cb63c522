"""Transformer-Base step (251 x 256, bf16 residual, compiled, CUDA graphs) under variants, one process
(scratch experiment kept verbatim, BENCHMARKS.md thirteenth session):
    OUT=some/dir PYTHONPATH=src python benchmarks/results/transformer_variants_h100/variants.py [names...]
main: the key bias's gradient as autograd computes it (the code before this session); key_bias_zero: its gradient
as an exact zero (an intermediate of this session, option key_bias_grad, since replaced by kv_bias="folded", so
this script no longer runs as is); aten_gelu: GELU's forward as an opaque ATen call instead of Inductor's kernel; pdl:
Inductor's programmatic dependent launch (Hopper). Also times GELU's forward alone, ATen vs Inductor."""
import json, os, sys, time, types
import torch
import torch.nn.functional as F
import torch._inductor.config as ic
import msmbench.models.linear as linear
from msmbench.bench import cuda_time_ms, frames_for_tokens, matmul_peak_tflops, step_flops
from msmbench.models.checkpoint import build_model, model_spec
from msmbench.train.optim import make_optimizer

OUT = os.environ["OUT"]
res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": []}
save = lambda: json.dump(res, open(OUT + "/variants.json", "w"), indent=1)  # noqa: E731
res["peak_before"] = matmul_peak_tflops()
print("peak", res["peak_before"], flush=True)


@torch.library.custom_op("scratch::gelu", mutates_args=())
def aten_gelu(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x)


@aten_gelu.register_fake
def _(x):
    return torch.empty_like(x)


pre = torch.randn(64256, 3072, device="cuda", dtype=torch.bfloat16)
inductor_gelu = torch.compile(F.gelu)
res["gelu_forward_ms"] = {"aten": cuda_time_ms(lambda: F.gelu(pre), warmup=5, repeats=50),
                          "inductor": cuda_time_ms(lambda: inductor_gelu(pre), warmup=5, repeats=50)}
print("gelu", res["gelu_forward_ms"], flush=True)
del pre
frames = frames_for_tokens(251)
x = torch.randn(256, frames, 80, device="cuda")
VARIANTS = {"main": ({"key_bias_grad": "autograd"}, {}), "key_bias_zero": ({}, {}),
            "key_bias_zero+aten_gelu": ({}, {"aten_gelu": True}), "key_bias_zero+pdl": ({}, {"pdl": True})}
for name in sys.argv[1:] or list(VARIANTS):
    options, extra = VARIANTS[name.removesuffix("#2")]
    t0 = time.time()
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = build_model(model_spec("transformer", "base", frames=frames, options={"residual": "autocast", **options})).cuda()
    opt = make_optimizer(model, 1e-4, 0.05, (0.9, 0.95))
    if "flops" not in res:
        res["flops"] = step_flops(model, x)
    old_f, old_pdl = linear.F, ic.triton.enable_pdl
    if extra.get("aten_gelu"):
        linear.F = types.SimpleNamespace(linear=F.linear, gelu=lambda t: torch.ops.scratch.gelu(t))
    ic.triton.enable_pdl = bool(extra.get("pdl"))
    run = torch.compile(model, mode="reduce-overhead")

    def step():
        torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss, _, _ = run(x)
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
        return loss

    first = step().item()
    for _ in range(3): step()
    torch.cuda.synchronize()
    setup = time.time() - t0
    ms = [cuda_time_ms(step, warmup=2, repeats=20) for _ in range(3)]
    linear.F, ic.triton.enable_pdl = old_f, old_pdl
    row = {"name": name, "options": options, "extra": extra, "ms": ms, "first_loss": first, "setup_s": setup,
           "mfu_best_vs_peak_before": res["flops"] / (min(ms) / 1e3) / (res["peak_before"] * 1e12)}
    res["rows"].append(row)
    print(json.dumps(row), flush=True)
    save()
    del run, model, opt
    torch.cuda.empty_cache()
res["peak_after"] = matmul_peak_tflops()
print("peak after", res["peak_after"], flush=True)
save()
