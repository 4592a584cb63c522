"""Pretraining: schedule, parameter groups, resume after kill -9 (bit-identical on CPU), non-finite loss."""

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import torch

from msmbench.data.features import LogMelShards, build_shards
from msmbench.models.checkpoint import build_model, model_spec
from msmbench.train.data import CropSchedule
from msmbench.train.optim import lr_at, no_weight_decay, param_groups, scaled_lr
from msmbench.train.pretrain import NonFiniteLossError, pretrain

TRAIN = dict(epochs=2, warmup_epochs=0.5, batch_size=8, base_lr=1e-3, weight_decay=0.05, betas=[0.9, 0.95],
             precision="fp32", crop_frames=200, checkpoint_every=4, log_every=2, num_workers=0, compile=False,
             max_steps=None)


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    for i in range(24):
        n = int(16000 * rng.uniform(0.5, 3.0))  # some clips shorter than the 2 s crop: tiled
        t = np.arange(n) / 16000
        x = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 3000) * t) + 0.05 * rng.standard_normal(n)
        sf.write(root / f"clip{i:02d}.wav", x.astype(np.float32), 16000, subtype="PCM_16")
    build_shards([root], root / "features", shard_clips=10, progress=False)
    return root / "features"


def test_shards_round_trip(features):
    shards = LogMelShards.open(features)
    assert len(shards) == 24 and len(shards.meta["shards"]) == 3
    clip = shards.clip(13)
    assert clip.shape[1] == 80 and abs(clip.mean()) < 1e-2  # standardised per clip
    short = int(np.argmin(shards.clip_frames()))
    assert shards.crop(short, 0, 200).shape == (200, 80)


def test_lr_schedule():
    peak = scaled_lr(1.5e-4, 1024)
    assert peak == pytest.approx(6e-4)
    assert lr_at(0, peak, 10, 100) == 0.0
    assert lr_at(5, peak, 10, 100) == pytest.approx(peak / 2)
    assert lr_at(10, peak, 10, 100) == pytest.approx(peak)
    assert lr_at(55, peak, 10, 100) == pytest.approx(peak / 2)
    assert lr_at(100, peak, 10, 100) == pytest.approx(0.0, abs=1e-12)


def test_no_weight_decay_on_biases_norms_and_tokens():
    model = build_model(model_spec("transformer", "cpu"))
    decay, no_decay = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in no_decay["params"]} >= {"cls_token", "mask_token", "patch_embed.bias",
                                                           "encoder.norm.weight"}
    assert all(p.ndim >= 2 for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.05
    assert no_weight_decay("x.bias", torch.zeros(3))


def test_crop_schedule_is_a_function_of_the_step():
    frames = np.array([300, 150, 500, 210, 1000])
    a, b = CropSchedule(frames, 2, 200, seed=1), CropSchedule(frames, 2, 200, seed=1)
    for step in (0, 3, 7):
        ca, sa = a.batch(step)
        cb, sb = b.batch(step)
        assert np.array_equal(ca, cb) and np.array_equal(sa, sb)
        assert np.all(sa + 200 <= np.maximum(frames[ca], 200))
    epoch0 = np.concatenate([a.batch(s)[0] for s in range(a.steps_per_epoch)])
    assert len(set(epoch0.tolist())) == len(epoch0)  # no clip twice within an epoch


def test_pretrain_writes_outputs(features, tmp_path):
    spec = model_spec("transformer", "cpu")
    summary = pretrain(features, tmp_path, spec, TRAIN, seed=3, progress=False)
    assert summary["steps"] == 6 and summary["steps_per_epoch"] == 3
    assert (tmp_path / "model.json").exists() and (tmp_path / "model.safetensors").exists()
    metrics = (tmp_path / "metrics.csv").read_text().splitlines()
    assert metrics[0] == "step,epoch,lr,loss,seconds,clips_per_s" and len(metrics) == 4
    assert [int(r.split(",")[0]) for r in metrics[1:]] == [2, 4, 6]


def _run(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "msmbench.cli", *args], stderr=subprocess.PIPE, **kw)


def test_kill_9_then_rerun_is_bit_identical(features, tmp_path):
    """Issue 6: kill -9 during pretraining, rerun: the final checkpoint equals an uninterrupted run's."""
    import json

    train = json.dumps({**TRAIN, "epochs": 12, "checkpoint_every": 3})
    model = json.dumps({"backbone": "transformer", "size": "cpu"})
    common = ["pretrain", "--features", str(features), "--model", model, "--train", train, "--seed", "5",
              "--threads", "1", "--quiet"]
    ref = _run(common + ["--out", str(tmp_path / "ref")])
    assert ref.wait(timeout=300) == 0, ref.stderr.read().decode()

    victim = _run(common + ["--out", str(tmp_path / "cut")])
    state = tmp_path / "cut" / "train_state.pt"
    deadline = time.time() + 120
    while not state.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (tmp_path / "cut" / "model.safetensors").exists()
    assert torch.load(state, weights_only=False)["step"] < 36

    rerun = _run(common + ["--out", str(tmp_path / "cut")])
    assert rerun.wait(timeout=300) == 0
    assert b"resuming from" in rerun.stderr.read()
    assert (tmp_path / "ref" / "model.safetensors").read_bytes() == (tmp_path / "cut" / "model.safetensors").read_bytes()
    assert (tmp_path / "ref" / "metrics.csv").read_text().split("\n")[0] == (tmp_path / "cut" / "metrics.csv").read_text().split("\n")[0]


def test_settings_change_ignores_old_state(features, tmp_path, caplog):
    spec = model_spec("transformer", "cpu")
    pretrain(features, tmp_path, spec, {**TRAIN, "max_steps": 4}, seed=0, progress=False)
    with caplog.at_level("WARNING"):
        pretrain(features, tmp_path, spec, {**TRAIN, "max_steps": 4, "base_lr": 2e-3}, seed=0, progress=False)
    assert "other settings" in caplog.text


def test_non_finite_loss_stops_with_the_step(features, tmp_path):
    spec = model_spec("transformer", "cpu")
    with pytest.raises(NonFiniteLossError, match="at step 1"):
        pretrain(features, tmp_path, spec, {**TRAIN, "base_lr": float("inf")}, seed=0, progress=False)


def run_cli_pretrain(features, out, train: dict, processes: int) -> None:
    """`msmbench pretrain` of the cpu Transformer (seed 1, one thread a process) in one process, or several
    through torchrun (gloo)."""
    import json

    args = ["pretrain", "--features", str(features), "--model", json.dumps({"backbone": "transformer", "size": "cpu"}),
            "--train", json.dumps(train), "--seed", "1", "--threads", "1", "--quiet", "--device", "cpu", "--out", str(out)]
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"] if processes > 1 else []
    proc = subprocess.run([sys.executable, *launcher, "-m", "msmbench.cli", *args], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_two_processes_match_one(features, tmp_path):
    """DistributedDataParallel (torchrun, gloo on CPU): same global batch, same crops and masks, so the
    loss curve and the final weights equal the single-process run's up to float32 reduction order."""
    import json

    import pandas as pd

    run_cli_pretrain(features, tmp_path / "one", {**TRAIN, "epochs": 2}, processes=1)
    run_cli_pretrain(features, tmp_path / "two", {**TRAIN, "epochs": 2}, processes=2)
    assert json.loads((tmp_path / "two" / "model.json").read_text())["training"]["world_size"] == 2
    a, b = (pd.read_csv(tmp_path / d / "metrics.csv") for d in ("one", "two"))
    assert list(a["step"]) == list(b["step"])
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-4)
    from safetensors.torch import load_file
    wa, wb = load_file(str(tmp_path / "one" / "model.safetensors")), load_file(str(tmp_path / "two" / "model.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-3, atol=1e-5)


def test_compiled_two_processes_match_one_eager(features, tmp_path):
    """config/paper.yaml's setting on several devices: torch.compile around DistributedDataParallel (torchrun,
    gloo on CPU) follows the single-process eager run's losses up to float32 rounding."""
    if not (shutil.which("c++") or shutil.which("g++")):
        pytest.skip("torch.compile on CPU needs a C++ compiler")
    import pandas as pd

    pretrain(features, tmp_path / "eager", model_spec("transformer", "cpu"), TRAIN, seed=1, progress=False)
    run_cli_pretrain(features, tmp_path / "compiled_two", {**TRAIN, "compile": True}, processes=2)
    a, b = (pd.read_csv(tmp_path / d / "metrics.csv") for d in ("eager", "compiled_two"))
    assert list(a["step"]) == list(b["step"])
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-4)


def test_compiled_pretraining_matches_eager(features, tmp_path):
    """`pretrain.compile: true` (config/paper.yaml) trains the same model: checkpoints hold the plain module's
    weights (no compiled-wrapper prefix) and follow the eager run up to float32 rounding of fused kernels."""
    if not (shutil.which("c++") or shutil.which("g++")):
        pytest.skip("torch.compile on CPU needs a C++ compiler")
    spec = model_spec("transformer", "cpu")
    eager = pretrain(features, tmp_path / "eager", spec, TRAIN, seed=3, progress=False)
    compiled = pretrain(features, tmp_path / "compiled", spec, {**TRAIN, "compile": True}, seed=3, progress=False)
    assert compiled["steps"] == eager["steps"]
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "eager" / "model.safetensors"), load_file(tmp_path / "compiled" / "model.safetensors")
    assert a.keys() == b.keys()
    # absolute: Adam turns rounding noise in near-zero gradients (the key bias, which softmax ignores) into
    # lr-sized steps, so relative errors of those tiny tensors say nothing (measured: 1.6e-6 absolute)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    losses = [[float(row.split(",")[3]) for row in (tmp_path / run / "metrics.csv").read_text().splitlines()[1:]]
              for run in ("eager", "compiled")]
    assert np.allclose(*losses, rtol=1e-5, atol=0)
