"""The front end against torchaudio.transforms.MelSpectrogram (torchaudio imports only on the GPU image)."""

import pytest
import torch

from msmbench.audio.frontend import LOG_EPS, LogMel


@pytest.mark.gpu
def test_logmel_matches_torchaudio():
    torchaudio = pytest.importorskip("torchaudio")
    ref = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=400, win_length=400, hop_length=160,
                                               f_min=50.0, f_max=8000.0, n_mels=80, power=2.0)
    audio = torch.randn(3, 16000 * 3) * 0.1
    expected = torch.log(ref(audio) + LOG_EPS).transpose(-1, -2)
    for device in ("cpu", "cuda"):
        ours = LogMel().to(device)(audio.to(device)).cpu()
        assert ours.shape == expected.shape
        torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)
