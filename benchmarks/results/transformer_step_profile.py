"""Profile the compiled Transformer-Base step with the bf16 residual stream (the default options otherwise),
or another Base backbone's step: BACKBONE=mamba OPTIONS='{"kernel": "cuda"}'.

    MODE=reduce-overhead OUT=<dir> PROFILE_NAME=<file>.txt PYTHONPATH=src python benchmarks/results/transformer_step_profile.py
"""
import json, os, torch
from torch.profiler import profile, ProfilerActivity
from msmbench.bench import frames_for_tokens
from msmbench.models.checkpoint import build_model, model_spec
from msmbench.train.optim import make_optimizer

mode = os.environ.get("MODE") or None
torch.manual_seed(0)
frames = frames_for_tokens(251)
backbone = os.environ.get("BACKBONE", "transformer")
options = json.loads(os.environ.get("OPTIONS", '{"residual": "autocast"}'))
model = build_model(model_spec(backbone, "base", frames=frames, options=options)).cuda()
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
for _ in range(4): step()
torch.cuda.synchronize()
with profile(activities=[ProfilerActivity.CUDA]) as prof:
    for _ in range(3): step()
    torch.cuda.synchronize()
table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=int(os.environ.get("ROWS", 40)), max_name_column_width=90)
print(table)
open(os.environ["OUT"] + "/" + os.environ.get("PROFILE_NAME", "profile_residual.txt"), "w").write(table)
