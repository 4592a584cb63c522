#!/bin/bash
# Session 3, call 8: the real training loop with paper.yaml's compile setting, Base, bf16, batch 256, one GPU.
set -o pipefail
export PYTHONUNBUFFERED=1
t0=$(date +%s)
mkdir -p /tmp/site && cat .gpu/cache/site.tgz.* | tar xzf - -C /tmp/site
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/whl/*.whl > /dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD/src
nvidia-smi -L
M="python -m msmbench.cli"
$M synth-pretrain --out /tmp/corpus --seed 1 --clips 1024 2>/dev/null && $M features --sources /tmp/corpus/files.csv --out /tmp/feat --workers 16 --shard-clips 128 --quiet 2>&1 | tail -1
echo "data after $(( $(date +%s) - t0 )) s"
T='{"epochs": 100, "warmup_epochs": 0.5, "batch_size": 256, "precision": "bf16", "max_steps": 30, "log_every": 5, "checkpoint_every": 1000, "num_workers": 8, "compile": true}'
for b in xlstm mamba transformer; do
  left=$(( 560 - ($(date +%s) - t0) )); [ $left -lt 30 ] && break
  timeout $left $M pretrain --features /tmp/feat --model "{\"backbone\": \"$b\", \"size\": \"base\"}" --train "$T" --seed 0 --quiet --out /tmp/$b > /tmp/$b.log 2>&1; echo "$b rc=$? after $(( $(date +%s) - t0 )) s"
  cp /tmp/$b/metrics.csv $OUT/compiled_loop_$b.csv 2>/dev/null && cat $OUT/compiled_loop_$b.csv || grep -v -i warn /tmp/$b.log | tail -5
done
