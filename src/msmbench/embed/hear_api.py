"""The HEAR 2021 API for msmbench models (SPEC.md section 5), so other HEAR tools can use them.

    model = load_model("results/models/mamba-tiny-ssast-official")   # a checkpoint directory
    scene = get_scene_embeddings(audio, model)            # audio: [n_sounds, n_samples] at 16 kHz
    emb, ts = get_timestamp_embeddings(audio, model)      # ts in milliseconds

Embedding recipe: per-clip standardised log-mel; the spectrogram is cut into 200-frame chunks (the
last one zero-padded); each chunk goes through the frozen encoder; the last layer's patch tokens
(after the final norm, cls dropped) become one 5*D vector per 4-frame time step (token order:
"frequency_major", or "official" for the released code's reshape); chunks are concatenated, padded
steps dropped, and the scene embedding is the mean over time steps. `load_model("logmel")` gives the
log-mel baseline: the standardised 80-bin frames themselves.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from msmbench.audio.frontend import FrontendConfig, LogMel
from msmbench.models.patching import PATCH_TIME

LOGMEL = "logmel"


class HearModel(nn.Module):
    """A frozen encoder behind the HEAR attributes: sample_rate, scene/timestamp_embedding_size."""

    sample_rate = 16000

    def __init__(self, msm: nn.Module | None, token_order: str = "frequency_major", chunk_frames: int = 200):
        super().__init__()
        self.frontend = LogMel(FrontendConfig(), standardized=True)
        self.msm = msm
        self.token_order = token_order
        self.chunk_frames = chunk_frames
        if msm is None:  # the log-mel baseline: one 80-dim vector per 10 ms frame
            self.step_frames = 1
            self.scene_embedding_size = self.frontend.cfg.n_mels
        else:
            self.step_frames = PATCH_TIME
            self.scene_embedding_size = msm.grid[1] * msm.encoder.dim
        self.timestamp_embedding_size = self.scene_embedding_size

    @torch.no_grad()
    def frames(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        """audio [B, samples] -> (embeddings [B, steps, size], timestamps [B, steps] in ms)."""
        spec = self.frontend(audio)  # [B, T, 80], each clip standardised over its whole length
        B, T, Fb = spec.shape
        steps = math.ceil(T / self.step_frames)
        if self.msm is None:
            emb = spec
        else:
            chunks = math.ceil(T / self.chunk_frames)
            spec = F.pad(spec, (0, 0, 0, chunks * self.chunk_frames - T))  # zero = the clip's mean
            emb = self.msm.frame_embeddings(spec.reshape(B * chunks, self.chunk_frames, Fb), self.token_order)
            emb = emb.reshape(B, -1, emb.shape[-1])[:, :steps]
        hop_ms = 1000.0 * self.frontend.cfg.hop_length / self.sample_rate
        centre = (torch.arange(steps, device=emb.device) * self.step_frames + (self.step_frames - 1) / 2) * hop_ms
        return emb.float(), centre.expand(B, -1)


def load_model(model_file_path: str = "", token_order: str = "frequency_major", device: str | None = None) -> HearModel:
    """A checkpoint directory (or its model.json), or "logmel" for the baseline."""
    from msmbench.models.checkpoint import load_checkpoint

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if model_file_path == LOGMEL:
        return HearModel(None).to(dev).eval()
    if not model_file_path:
        raise ValueError("load_model needs a checkpoint directory (results/models/<model>) or 'logmel'")
    msm, _ = load_checkpoint(model_file_path, dev)
    return HearModel(msm, token_order).to(dev).eval()


def get_timestamp_embeddings(audio: Tensor, model: HearModel) -> tuple[Tensor, Tensor]:
    device = next(model.buffers()).device
    return model.frames(audio.to(device))


def get_scene_embeddings(audio: Tensor, model: HearModel) -> Tensor:
    emb, _ = get_timestamp_embeddings(audio, model)
    return emb.mean(dim=1)
