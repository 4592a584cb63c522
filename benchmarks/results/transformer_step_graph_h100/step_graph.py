"""Transformer-Base step (251 x 256, bf16 residual): where the GPU idles between kernels, and whether one CUDA graph
for the whole step (forward, backward, AdamW) closes the gap. Scratch experiment (BENCHMARKS.md, twelfth session):
    OUT=some/dir PYTHONPATH=src python benchmarks/results/transformer_step_graph_h100/step_graph.py"""
import gzip, json, os, statistics, sys, time, torch
from torch.profiler import profile, ProfilerActivity
from msmbench.bench import frames_for_tokens, cuda_time_ms, matmul_peak_tflops, step_flops
from msmbench.models.checkpoint import build_model, model_spec
from msmbench.train.optim import make_optimizer

OUT = os.environ["OUT"]
frames = frames_for_tokens(251)
res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
res["peak_before"] = matmul_peak_tflops()
print("peak", res["peak_before"], flush=True)

def fresh():
    torch.manual_seed(0)
    m = build_model(model_spec("transformer", "base", frames=frames, options={"residual": "autocast"})).cuda()
    return m, make_optimizer(m, 1e-4, 0.05, (0.9, 0.95))

x = torch.randn(256, frames, 80, device="cuda")

def gaps(prof, name):
    ev = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    iv = sorted((e.time_range.start, e.time_range.end, e.name) for e in ev)
    busy, idle, big, end = 0.0, 0.0, [], None
    for s, t, n in iv:
        if end is not None and s > end:
            idle += s - end
            big.append((s - end, prev, n))
        if end is None or t > end:
            end = t; prev = n
        busy += t - s
    big.sort(reverse=True)
    span = iv[-1][1] - iv[0][0]
    out = {"span_us": span, "kernel_sum_us": busy, "idle_us": idle,
           "top_gaps": [(round(g, 1), a[:60], b[:60]) for g, a, b in big[:25]]}
    print(name, json.dumps(out, indent=1), flush=True)
    return out

# (a) today's default: compiled with CUDA graphs (cudagraph trees), optimizer eager
model, opt = fresh()
run = torch.compile(model, mode="reduce-overhead")
def step_a():
    torch.compiler.cudagraph_mark_step_begin()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss, _, _ = run(x)
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
t0 = time.time()
for _ in range(4): step_a()
torch.cuda.synchronize(); print("compile a", time.time() - t0, flush=True)
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    for _ in range(2): step_a()
    torch.cuda.synchronize()
res["gaps_a"] = gaps(prof, "a")
prof.export_chrome_trace("/tmp/trace_a.json")
with open("/tmp/trace_a.json", "rb") as f, gzip.open(OUT + "/trace_a.json.gz", "wb") as g: g.write(f.read())
res["a_ms"] = [cuda_time_ms(step_a, warmup=2, repeats=20) for _ in range(3)]
print("a", res["a_ms"], flush=True)
del run, model, opt; torch._dynamo.reset(); torch.cuda.empty_cache()

# (b) compiled without Inductor's graphs; the whole step (forward, backward, AdamW) captured as one CUDA graph
model, opt = fresh()
for g in opt.param_groups: g["capturable"] = True
run = torch.compile(model)
def body():
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss, _, _ = run(x)
    loss.backward(); opt.step()
    return loss
s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
with torch.cuda.stream(s):
    for _ in range(4):
        opt.zero_grad(set_to_none=True); body()
torch.cuda.current_stream().wait_stream(s); torch.cuda.synchronize()
opt.zero_grad(set_to_none=True)
graph = torch.cuda.CUDAGraph()
with torch.cuda.graph(graph):
    static_loss = body()
torch.cuda.synchronize()
def step_b(): graph.replay()
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    for _ in range(2): step_b()
    torch.cuda.synchronize()
res["gaps_b"] = gaps(prof, "b")
res["b_ms"] = [cuda_time_ms(step_b, warmup=2, repeats=20) for _ in range(3)]
print("b", res["b_ms"], flush=True)
# the replayed step trains: loss falls over replays like the eager step's
losses = []
for _ in range(5):
    step_b(); losses.append(static_loss.item())
res["b_losses"] = losses
# alternate once more, same process, to see drift
del graph
res["peak_after"] = matmul_peak_tflops()
res["flops"] = step_flops(*[fresh()[0]], x)
print(json.dumps({k: v for k, v in res.items() if not k.startswith("gaps")}, indent=1))
json.dump(res, open(OUT + "/step_graph.json", "w"), indent=1)
