"""msmbench.audio.io: reading any audio file into float32 mono 16 kHz, or a clear AudioError."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msmbench.audio.io import AudioError, read_audio, write_wav

SR = 16000


def tone(freq: float, seconds: float, sr: int) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return 0.5 * np.sin(2 * np.pi * freq * t)


def peak_hz(x: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * sr / len(x))


def test_round_trip(tmp_path):
    x = tone(440.0, 0.5, SR)
    path = tmp_path / "a.wav"
    write_wav(path, x, SR)
    y = read_audio(path)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.abs(y - x).max() < 1.0 / 16000  # 16-bit quantisation
    assert sf.info(str(path)).subtype == "PCM_16" and sf.info(str(path)).channels == 1


def test_write_is_deterministic_and_clips(tmp_path):
    x = np.array([0.0, 0.5, 1.5, -2.0, -1.0])
    write_wav(tmp_path / "a.wav", x, SR)
    write_wav(tmp_path / "b.wav", x, SR, atomic=False)
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()
    y = read_audio(tmp_path / "a.wav")
    assert y.max() <= 1.0 and y.min() >= -1.0 and np.isclose(y[2], 32767 / 32768)


def test_write_rejects_nan_and_bad_shapes(tmp_path):
    with pytest.raises(AudioError, match="NaN"):
        write_wav(tmp_path / "a.wav", np.array([0.0, np.nan]), SR)
    with pytest.raises(AudioError, match="mono"):
        write_wav(tmp_path / "a.wav", np.zeros((2, 10)), SR)
    with pytest.raises(AudioError, match="zero samples"):
        write_wav(tmp_path / "a.wav", np.zeros(0), SR)
    assert not (tmp_path / "a.wav").exists()


def test_stereo_is_mean_downmixed(tmp_path):
    left, right = tone(440.0, 0.25, SR), np.zeros(int(0.25 * SR))
    path = tmp_path / "s.wav"
    sf.write(str(path), np.stack([left, right], axis=1), SR, subtype="PCM_16")
    y = read_audio(path)
    assert y.ndim == 1 and np.allclose(y, left / 2, atol=1e-4)


def test_resampling_keeps_frequency(tmp_path):
    path = tmp_path / "hi.wav"
    sf.write(str(path), tone(1000.0, 1.0, 48000), 48000, subtype="PCM_16")
    y = read_audio(path, sample_rate=SR)
    assert len(y) == SR
    assert abs(peak_hz(y, SR) - 1000.0) <= 2.0


def test_silence_is_valid(tmp_path):
    path = tmp_path / "quiet.wav"
    write_wav(path, np.zeros(100), SR)
    assert np.array_equal(read_audio(path), np.zeros(100, dtype=np.float32))


@pytest.mark.parametrize("make, problem", [
    (lambda p: None, "not found"),
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_bytes(np.random.default_rng(0).bytes(3000)), "not a readable audio file"),
])
def test_bad_files_name_the_path(tmp_path, make, problem):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioError, match=problem) as err:
        read_audio(path)
    assert str(err.value).startswith(str(path))


def test_truncated_wav(tmp_path):
    path = tmp_path / "cut.wav"
    write_wav(path, tone(440.0, 0.5, SR), SR)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(AudioError, match="truncated") as err:
        read_audio(path)
    assert str(err.value).startswith(str(path))
    path.write_bytes(path.read_bytes()[:30])  # cut inside the header
    with pytest.raises(AudioError, match=str(path)):
        read_audio(path)


def test_nan_samples_rejected(tmp_path):
    path = tmp_path / "nan.wav"
    sf.write(str(path), np.array([0.0, np.nan, 0.1], dtype=np.float32), SR, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN") as err:
        read_audio(path)
    assert str(err.value).startswith(str(path))


def test_header_only_wav_has_zero_samples(tmp_path):
    path = tmp_path / "none.wav"
    sf.write(str(path), np.zeros(0, dtype=np.float32), SR, subtype="PCM_16")
    with pytest.raises(AudioError, match="zero samples|not a readable"):
        read_audio(path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=0, max_size=400), riff=st.booleans())
def test_random_bytes_give_audio_or_audio_error(tmp_path, data, riff):
    """Whatever the bytes, the reader returns finite float32 samples or raises AudioError."""
    path = tmp_path / "fuzz.wav"
    if riff:  # a plausible header so that libsndfile gets past its first checks
        data = b"RIFF" + len(data).to_bytes(4, "little") + b"WAVEfmt " + data
    path.write_bytes(data)
    try:
        y = read_audio(path)
    except AudioError as e:
        assert str(e).startswith(str(path))
    else:
        assert y.dtype == np.float32 and y.ndim == 1 and len(y) > 0 and np.isfinite(y).all()
