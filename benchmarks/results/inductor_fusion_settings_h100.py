"""The record behind inductor_fusion_settings_h100.json (a scratch script, kept verbatim): the Transformer-Base step
(split qkv gradient, bf16 residual, compiled) under Inductor fusion settings. Run from the repository root with
PYTHONPATH=src OUT=<dir> python benchmarks/results/inductor_fusion_settings_h100.py default mix_order aggressive."""
import os, sys, time, json
import torch
import torch._inductor.config as ic
from msmbench.bench import cuda_time_ms, matmul_peak_tflops, frames_for_tokens
from msmbench.models.checkpoint import build_model, model_spec
from msmbench.train.optim import make_optimizer

print({k: getattr(ic, k, "missing") for k in ["aggressive_fusion", "loop_ordering_after_fusion", "split_reductions"]},
      "mix_order_reduction", getattr(ic.triton, "mix_order_reduction", "missing"), flush=True)
FLOPS = 35085230800896
peak = matmul_peak_tflops()
print(f"peak {peak:.0f} on {torch.cuda.get_device_name()}", flush=True)
out = {"peak": peak, "device": torch.cuda.get_device_name(), "rows": []}
VARIANTS = {"default": {}, "mix_order": {"triton.mix_order_reduction": True},
            "aggressive": {"aggressive_fusion": True}, "both": {"triton.mix_order_reduction": True, "aggressive_fusion": True}}

def make(mode):
    torch.manual_seed(0)
    frames = frames_for_tokens(251)
    model = build_model(model_spec("transformer", "base", frames=frames, options={"residual": "autocast"})).cuda()
    opt = make_optimizer(model, 1e-4, 0.05, (0.9, 0.95))
    x = torch.randn(256, frames, 80, device="cuda")
    run = torch.compile(model, mode=mode)
    def step():
        if mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss, _, _ = run(x)
        loss.backward()
        opt.step(); opt.zero_grad(set_to_none=True)
        return loss
    return step

for name in sys.argv[1:]:
    t0 = time.time()
    try:
        with ic.patch(VARIANTS[name]):
            step = make(None)
            first = float(step()); torch.cuda.synchronize()
            ms = cuda_time_ms(step, warmup=3, repeats=15)
        row = {"name": name, "config": VARIANTS[name], "ms": ms, "mfu": FLOPS / (ms / 1e3) / (peak * 1e12),
               "first_loss": first, "setup_s": time.time() - t0}
    except Exception as e:
        row = {"name": name, "error": repr(e)[:600]}
    print(row, flush=True); out["rows"].append(row)
    json.dump(out, open(os.environ["OUT"] + "/tx_s5c.json", "w"), indent=1)
    torch._dynamo.reset(); torch.cuda.empty_cache()
