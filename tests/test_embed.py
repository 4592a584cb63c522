"""Embeddings through the HEAR API: chunking, token orders, timestamps, the log-mel baseline, task files."""

import numpy as np
import pytest
import torch

from msmbench.data.hear import load_task
from msmbench.data.synth import generate_task
from msmbench.embed.extract import embed_task, read_embeddings
from msmbench.embed.hear_api import HearModel, get_scene_embeddings, get_timestamp_embeddings, load_model
from msmbench.models.checkpoint import build_model, model_spec, save_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    spec = model_spec("transformer", "cpu")
    save_checkpoint(path, build_model(spec), spec)
    return path


def test_hear_attributes_and_shapes(checkpoint):
    model = load_model(str(checkpoint), device="cpu")
    assert model.sample_rate == 16000 and model.scene_embedding_size == 5 * 64 == model.timestamp_embedding_size
    audio = torch.randn(3, 16000 * 5) * 0.1  # 5 s -> 501 frames -> 3 chunks of 200, 126 time steps kept
    emb, ts = get_timestamp_embeddings(audio, model)
    assert emb.shape == (3, 126, 320) and ts.shape == (3, 126)
    assert torch.all(ts[:, 1:] > ts[:, :-1]) and ts[0, 1] - ts[0, 0] == pytest.approx(40.0)
    scene = get_scene_embeddings(audio, model)
    assert torch.allclose(scene, emb.mean(1))


def test_chunks_are_independent_and_padding_is_dropped(checkpoint):
    """A 2 s clip and the first 2 s of a 4 s clip share the first chunk, so their first 50 steps agree
    up to the per-clip standardisation; for an exactly repeated clip they agree exactly."""
    model = load_model(str(checkpoint), device="cpu")
    clip = torch.randn(1, 31840) * 0.1  # 200 frames exactly -> one chunk, no padding
    emb, _ = model.frames(clip)
    assert emb.shape[1] == 50
    twice, _ = model.frames(torch.cat([clip, clip], dim=1))
    assert twice.shape[1] == 100


def test_token_orders_differ_but_have_equal_size(checkpoint):
    a = load_model(str(checkpoint), token_order="frequency_major", device="cpu")
    b = load_model(str(checkpoint), token_order="official", device="cpu")
    audio = torch.randn(2, 32000) * 0.1
    ea, eb = get_scene_embeddings(audio, a), get_scene_embeddings(audio, b)
    assert ea.shape == eb.shape and not torch.allclose(ea, eb)


def test_logmel_baseline():
    model = load_model("logmel", device="cpu")
    assert model.scene_embedding_size == 80
    emb = get_scene_embeddings(torch.randn(2, 16000) * 0.1, model)
    assert emb.shape == (2, 80) and torch.allclose(emb.mean(1), torch.zeros(2), atol=1e-5)  # standardised


def test_embed_task_file(tmp_path, checkpoint):
    task_dir = generate_task("percussion", tmp_path, seed=1, scale=0.05)
    out = tmp_path / "emb.npz"
    info = embed_task(load_model(str(checkpoint), device="cpu"), task_dir, out, batch_size=4, progress=False)
    arrays = read_embeddings(out)
    task = load_task(task_dir)
    assert info["clips"] == len(arrays["files"]) == sum(len(task.split_files(s)) for s in task.splits)
    assert arrays["embeddings"].shape == (info["clips"], 320) and np.isfinite(arrays["embeddings"]).all()
    assert task.labels_read == []  # embedding never reads labels
    rows = arrays["splits"] == "fold00"
    assert arrays["files"][rows].tolist() == task.split_files("fold00")


def test_load_model_errors(tmp_path):
    with pytest.raises(ValueError, match="checkpoint directory"):
        load_model("")
    with pytest.raises(FileNotFoundError, match="not a msmbench checkpoint"):
        load_model(str(tmp_path))
    assert isinstance(load_model("logmel", device="cpu"), HearModel)
