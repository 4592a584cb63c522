"""The log-mel front end shared by pretraining and embedding (SPEC.md section 1).

Numerically the same as torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=400,
win_length=400, hop_length=160, f_min=50, f_max=8000, n_mels=80, power=2.0) (periodic Hann window,
centred STFT with reflect padding, HTK mel scale, no filterbank normalisation), followed by
log(x + eps) with eps = float32 machine epsilon, as in the authors' LogMelSpec. torchaudio is not
needed: its CPU wheels do not install beside CPU torch here (DEPS.md); a GPU test compares the two.

Layout: we keep spectrograms time-major, (..., frames, n_mels), because patches and tokens are
ordered time-major too (see models/patching.py).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

LOG_EPS = float(torch.finfo(torch.float32).eps)  # the authors add torch.finfo().eps before the log
STD_EPS = 1e-8  # (x - mean) / (std + 1e-8), as in the authors' LogMelSpec


@dataclass(frozen=True)
class FrontendConfig:
    sample_rate: int = 16000
    n_fft: int = 400
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 80
    f_min: float = 50.0
    f_max: float = 8000.0

    def to_dict(self) -> dict:
        return asdict(self)


def hz_to_mel_htk(f: Tensor | float) -> Tensor:
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)


def mel_to_hz_htk(m: Tensor) -> Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int) -> Tensor:
    """Triangular HTK mel filters, (n_freqs, n_mels), unnormalised (torchaudio's norm=None).

    Filter i rises from mel point i to i+1 and falls to i+2; points are equally spaced in mel
    between f_min and f_max. Computed in float64 and returned in float32.
    """
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs, dtype=torch.float64)
    m_pts = torch.linspace(float(hz_to_mel_htk(f_min)), float(hz_to_mel_htk(f_max)), n_mels + 2,
                           dtype=torch.float64)
    f_pts = mel_to_hz_htk(m_pts)
    f_diff = f_pts[1:] - f_pts[:-1]  # (n_mels + 1,)
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)  # (n_freqs, n_mels + 2)
    rising = -slopes[:, :-2] / f_diff[:-1]
    falling = slopes[:, 2:] / f_diff[1:]
    return torch.clamp(torch.minimum(rising, falling), min=0.0).to(torch.float32)


def power_spectrogram(audio: Tensor, n_fft: int, win_length: int, hop_length: int, window: Tensor) -> Tensor:
    """|STFT|^2 of audio (..., samples) -> (..., frames, n_fft // 2 + 1); centred, reflect-padded."""
    shape = audio.shape
    spec = torch.stft(audio.reshape(-1, shape[-1]), n_fft=n_fft, hop_length=hop_length,
                      win_length=win_length, window=window, center=True, pad_mode="reflect",
                      normalized=False, onesided=True, return_complex=True)
    power = spec.real.square() + spec.imag.square()  # (batch, freqs, frames)
    return power.transpose(-1, -2).reshape(*shape[:-1], power.shape[-1], power.shape[-2])


def standardize(x: Tensor) -> Tensor:
    """Standardise each clip by its own mean and (unbiased) std over all frames and bins.

    x: (..., frames, n_mels). Used identically by pretraining (before cropping) and embedding
    (before chunking): the statistics are those of the whole clip.
    """
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = x.std(dim=(-2, -1), keepdim=True)
    return (x - mean) / (std + STD_EPS)


class LogMel(nn.Module):
    """audio (..., samples) at `sample_rate` -> log-mel (..., frames, n_mels), frames = 1 + samples // hop.

    The window and the filterbank are buffers: they follow `.to(device)`. Set `standardized=True`
    to apply the per-clip standardisation (the whole clip's statistics, so the output of a clip
    depends on all of it).
    """

    def __init__(self, cfg: FrontendConfig = FrontendConfig(), standardized: bool = False):
        super().__init__()
        if cfg.win_length > cfg.n_fft:
            raise ValueError(f"win_length ({cfg.win_length}) must not exceed n_fft ({cfg.n_fft})")
        if not 0 <= cfg.f_min < cfg.f_max <= cfg.sample_rate / 2:
            raise ValueError(f"need 0 <= f_min < f_max <= sample_rate/2, got {cfg.f_min}, {cfg.f_max}")
        self.cfg = cfg
        self.standardized = standardized
        self.register_buffer("window", torch.hann_window(cfg.win_length), persistent=False)
        fb = mel_filterbank(cfg.n_fft // 2 + 1, cfg.f_min, cfg.f_max, cfg.n_mels, cfg.sample_rate)
        self.register_buffer("filterbank", fb, persistent=False)

    def num_frames(self, num_samples: int) -> int:
        return 1 + num_samples // self.cfg.hop_length

    def forward(self, audio: Tensor) -> Tensor:
        c = self.cfg
        audio = audio.float()
        if audio.shape[-1] <= c.n_fft // 2:  # reflect padding needs more samples than half a window:
            audio = torch.nn.functional.pad(audio, (0, c.n_fft // 2 + 1 - audio.shape[-1]))  # zeros at the end
        power = power_spectrogram(audio, c.n_fft, c.win_length, c.hop_length, self.window)
        x = torch.log(power @ self.filterbank + LOG_EPS)
        return standardize(x) if self.standardized else x


def log_mel(audio, cfg: FrontendConfig = FrontendConfig(), standardized: bool = True) -> Tensor:
    """Functional form: numpy or tensor audio (..., samples) -> (..., frames, n_mels) float32."""
    x = torch.as_tensor(audio, dtype=torch.float32)
    return LogMel(cfg, standardized=standardized)(x)


def frames_for_seconds(seconds: float, cfg: FrontendConfig = FrontendConfig()) -> int:
    return 1 + int(math.floor(seconds * cfg.sample_rate)) // cfg.hop_length
