timeout 330 python3 -u - <<'PY' 2>&1 | grep --line-buffered -v "Warning\|warn\|Extern Choice" | tee $OUT/default_step.log
import json, os, torch
from msmbench.bench import matmul_peak_tflops, train_step, machine_info
peak = matmul_peak_tflops(); print("peak", peak, flush=True)
rec = train_step("transformer", "base", 256, 251, {"residual": "autocast"}, compile="reduce-overhead", repeats=20, peak_tflops=peak)
rec["peak_before"], rec["peak_after"] = peak, matmul_peak_tflops()
rec["mfu_vs_higher_peak"] = rec["flops_per_step"] / (rec["train_step_ms"] / 1e3) / (max(peak, rec["peak_after"]) * 1e12)
rec["machine"] = machine_info()
print(json.dumps(rec), flush=True)
json.dump(rec, open(os.environ["OUT"] + "/default_step.json", "w"), indent=1)
PY
