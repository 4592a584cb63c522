"""Profile the compiled Mamba-Base step on our CUDA scan."""
import os, torch
from torch.profiler import profile, ProfilerActivity
from msmbench.bench import frames_for_tokens
from msmbench.models.checkpoint import build_model, model_spec
from msmbench.train.optim import make_optimizer

mode = os.environ.get("MODE") or None
torch.manual_seed(0)
frames = frames_for_tokens(251)
model = build_model(model_spec("mamba", "base", frames=frames, options={"kernel": os.environ.get("KERNEL", "cuda")})).cuda()
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
table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=45, max_name_column_width=90)
print(table)
open(os.environ["OUT"] + "/" + os.environ.get("PROFILE_NAME", "profile_mamba.txt"), "w").write(table)
