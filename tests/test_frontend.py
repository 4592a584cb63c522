"""The log-mel front end against an independent numpy computation (SPEC.md section 1)."""

import numpy as np
import pytest
import torch

from msmbench.audio.frontend import LOG_EPS, FrontendConfig, LogMel, log_mel, mel_filterbank, standardize


def reference_logmel(audio: np.ndarray, cfg: FrontendConfig = FrontendConfig()) -> np.ndarray:
    """Written from the definitions, loop by loop, in float64: reflect-padded centred frames, periodic
    Hann window, |rfft|^2, triangular filters between HTK mel points, log(x + eps)."""
    pad = cfg.n_fft // 2
    x = np.pad(audio.astype(np.float64), pad, mode="reflect")
    n = np.arange(cfg.win_length)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / cfg.win_length)  # periodic Hann
    frames = 1 + (len(x) - cfg.n_fft) // cfg.hop_length
    power = np.empty((frames, cfg.n_fft // 2 + 1))
    for t in range(frames):
        seg = x[t * cfg.hop_length:t * cfg.hop_length + cfg.n_fft] * window
        power[t] = np.abs(np.fft.rfft(seg)) ** 2
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    inv = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
    edges = inv(np.linspace(mel(cfg.f_min), mel(cfg.f_max), cfg.n_mels + 2))
    freqs = np.linspace(0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1)
    fb = np.zeros((len(freqs), cfg.n_mels))
    for m in range(cfg.n_mels):
        lo, centre, hi = edges[m], edges[m + 1], edges[m + 2]
        for k, f in enumerate(freqs):
            if lo < f <= centre:
                fb[k, m] = (f - lo) / (centre - lo)
            elif centre < f < hi:
                fb[k, m] = (hi - f) / (hi - centre)
    return np.log(power @ fb + LOG_EPS)


def test_logmel_matches_independent_reference():
    rng = np.random.default_rng(0)
    audio = (0.3 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000) + 0.05 * rng.standard_normal(16000))
    ours = log_mel(audio.astype(np.float32), standardized=False).numpy()
    ref = reference_logmel(audio.astype(np.float32))
    assert ours.shape == ref.shape == (101, 80)
    np.testing.assert_allclose(ours, ref, atol=2e-3, rtol=1e-4)


def test_filterbank_shape_and_peaks():
    fb = mel_filterbank(201, 50.0, 8000.0, 80, 16000)
    assert fb.shape == (201, 80)
    assert torch.all(fb >= 0) and torch.all(fb <= 1)
    assert torch.all(fb.sum(0) > 0)  # no empty filter at these settings
    peaks = fb.argmax(0)
    assert torch.all(peaks[1:] >= peaks[:-1])  # centres ascend


def test_frame_count_and_layout():
    x = torch.randn(3, 32000)
    y = LogMel()(x)
    assert y.shape == (3, 201, 80)  # 1 + samples // hop, time-major


def test_standardize_per_clip():
    x = torch.randn(2, 50, 80) * torch.tensor([3.0, 0.5]).view(2, 1, 1) + torch.tensor([5.0, -1.0]).view(2, 1, 1)
    z = standardize(x)
    assert torch.allclose(z.mean(dim=(1, 2)), torch.zeros(2), atol=1e-5)
    assert torch.allclose(z.std(dim=(1, 2)), torch.ones(2), atol=1e-5)


def test_tone_lands_in_the_right_band():
    t = np.arange(16000) / 16000
    y = log_mel(np.sin(2 * np.pi * 1000 * t).astype(np.float32), standardized=False).numpy().mean(0)
    centres = 700 * (10 ** (np.linspace(2595 * np.log10(1 + 50 / 700), 2595 * np.log10(1 + 8000 / 700), 82)[1:-1] / 2595) - 1)
    assert abs(centres[y.argmax()] - 1000) < 80


def test_bad_arguments():
    with pytest.raises(ValueError, match="win_length"):
        LogMel(FrontendConfig(win_length=800))
    with pytest.raises(ValueError, match="f_max"):
        LogMel(FrontendConfig(f_max=9000))
