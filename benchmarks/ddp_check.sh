#!/bin/bash
# Run on a 2-GPU machine from the repository root; writes to $OUT (default benchmarks/out/ddp).
# Expects .gpu/ = a copy of the device helpers (../shared/device) plus .gpu/whl/ (soundfile, cffi,
# jsonschema and its dependencies as wheels) for an offline machine; with msmbench installed, drop the pip line.
: "${OUT:=benchmarks/out/ddp}"; mkdir -p "$OUT"
# 2 GPUs: DDP loss curve vs one GPU at equal global batch (fp32), throughput scaling (bf16), loader speed.
set -o pipefail
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
t0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/whl/*.whl .gpu/wheels/xlstm-*.whl .gpu/wheels/mlstm_kernels-*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src
nvidia-smi -L | tee $OUT/gpus.txt
M="python -m msmbench.cli"
$M synth-pretrain --out /tmp/corpus --seed 1 --clips 1024 2>/dev/null && $M features --sources /tmp/corpus/files.csv --out /tmp/feat --workers 16 --shard-clips 128 --quiet 2>&1 | tail -1
echo "data after $(( $(date +%s) - t0 )) s"
F='{"epochs": 100, "warmup_epochs": 0.5, "batch_size": 64, "precision": "fp32", "max_steps": 40, "log_every": 5, "checkpoint_every": 1000, "num_workers": 4}'
B='{"epochs": 100, "warmup_epochs": 0.5, "batch_size": 512, "precision": "bf16", "max_steps": 25, "log_every": 5, "checkpoint_every": 1000, "num_workers": 8}'
S='{"backbone": "transformer", "size": "small"}'
BASE='{"backbone": "transformer", "size": "base"}'
run1() { $M pretrain --features /tmp/feat --model "$1" --train "$2" --seed 0 --quiet --out $3 2>$3.log || tail -5 $3.log; }
run2() { torchrun --standalone --nproc-per-node=2 -m msmbench.cli pretrain --features /tmp/feat --model "$1" --train "$2" --seed 0 --quiet --out $3 2>$3.log || tail -5 $3.log; }
run1 "$S" "$F" /tmp/fp32_1gpu; run2 "$S" "$F" /tmp/fp32_2gpu
echo "fp32 pair after $(( $(date +%s) - t0 )) s"
run1 "$BASE" "$B" /tmp/bf16_1gpu; run2 "$BASE" "$B" /tmp/bf16_2gpu
echo "bf16 pair after $(( $(date +%s) - t0 )) s"
for d in fp32_1gpu fp32_2gpu bf16_1gpu bf16_2gpu; do cp /tmp/$d/metrics.csv $OUT/$d.csv 2>/dev/null; done
python - <<'PY'
import pandas as pd, os
out = os.environ["OUT"]
a, b = pd.read_csv(f"{out}/fp32_1gpu.csv"), pd.read_csv(f"{out}/fp32_2gpu.csv")
print("fp32 loss, 1 vs 2 GPUs (global batch 64):"); print(pd.DataFrame({"step": a.step, "1gpu": a.loss, "2gpu": b.loss, "rel": (a.loss - b.loss).abs() / a.loss}).to_string(index=False))
for name in ("bf16_1gpu", "bf16_2gpu"):
    m = pd.read_csv(f"{out}/{name}.csv"); print(name, "clips/s (last 3 logs):", m.clips_per_s.tail(3).round(0).tolist(), "loss", m.loss.iloc[-1].round(4))
PY
python benchmarks/loader.py --features /tmp/feat --batch 256 --workers 0 4 8 16 --out $OUT/loader.json 2>&1 | tail -6
echo "all done after $(( $(date +%s) - t0 )) s"
