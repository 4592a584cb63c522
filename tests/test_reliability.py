"""Bad input and interruptions: clear errors naming the file, nothing half-written, skips reported."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from msmbench.data.disjoint import OverlapError, check_disjoint
from msmbench.data.features import build_shards
from msmbench.embed.hear_api import get_scene_embeddings, load_model
from msmbench.io import atomic_path, write_json


def wav(path, seconds=1.0, freq=440.0):
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000, subtype="PCM_16")
    return path


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.npz"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            np.savez(tmp, x=np.zeros(3))
            raise RuntimeError("killed mid-way")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    write_json(target.with_suffix(".json"), {"a": 1})
    assert json.loads(target.with_suffix(".json").read_text()) == {"a": 1}
    assert oct(target.with_suffix(".json").stat().st_mode & 0o777) != "0o600"  # normal permissions


def test_features_stop_on_a_bad_file_naming_it(tmp_path):
    (tmp_path / "a").mkdir()
    wav(tmp_path / "a" / "good.wav")
    (tmp_path / "a" / "broken.wav").write_bytes(b"RIFF\x00\x00garbage")
    with pytest.raises(ValueError, match="broken.wav"):
        build_shards([tmp_path / "a"], tmp_path / "feat", progress=False)
    assert not (tmp_path / "feat" / "meta.json").exists()  # nothing that looks finished


def test_features_skip_bad_files_and_report_them(tmp_path, caplog):
    (tmp_path / "a").mkdir()
    wav(tmp_path / "a" / "good.wav")
    (tmp_path / "a" / "empty.wav").write_bytes(b"")
    with caplog.at_level("WARNING"):
        meta = json.loads(build_shards([tmp_path / "a"], tmp_path / "feat", progress=False, skip_bad=True).read_text())
    assert meta["clips"] == 1 and [s["path"].endswith("empty.wav") for s in meta["skipped"]] == [True]
    assert "empty.wav" in caplog.text


def test_disjointness_check(tmp_path):
    (tmp_path / "pre").mkdir()
    task = tmp_path / "task" / "16000" / "fold00"
    task.mkdir(parents=True)
    wav(tmp_path / "pre" / "x.wav", freq=300)
    wav(task / "y.wav", freq=500)
    build_shards([tmp_path / "pre"], tmp_path / "feat", progress=False)
    result = check_disjoint(tmp_path / "feat", [tmp_path / "task"], tmp_path / "ok.json")
    assert result["overlaps"] == [] and (tmp_path / "ok.json").exists()
    wav(task / "copy.wav", freq=300)  # a task clip that is also a pretraining clip
    with pytest.raises(OverlapError, match="copy.wav"):
        check_disjoint(tmp_path / "feat", [tmp_path / "task"], tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()


@pytest.mark.parametrize("samples", [1, 100, 159, 161, 640])
def test_clips_shorter_than_a_patch_embed(samples):
    model = load_model("logmel", device="cpu")
    assert torch.isfinite(get_scene_embeddings(torch.randn(1, samples) * 0.1, model)).all()


def test_silence_embeds_to_finite_values():
    model = load_model("logmel", device="cpu")
    assert torch.isfinite(get_scene_embeddings(torch.zeros(2, 16000), model)).all()


def test_cli_errors_name_the_problem_and_exit_2(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("data: {source: synthetic, tasks: [pitch]}\nmodels: {backbones: [transformer], sizes: [huge]}\n")
    r = subprocess.run([sys.executable, "-m", "msmbench.cli", "validate-config", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2 and "models.sizes.0: 'huge' is not allowed" in r.stderr
    r = subprocess.run([sys.executable, "-m", "msmbench.cli", "embed", "--model", str(tmp_path), "--task-dir",
                        str(tmp_path), "--out", str(tmp_path / "x.npz")], capture_output=True, text=True)
    assert r.returncode == 2 and "not a msmbench checkpoint" in r.stderr and not (tmp_path / "x.npz").exists()
