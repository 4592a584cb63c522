"""Reading and writing audio files: the one place where bytes on disk become float32 samples.

`read_audio` returns float32 mono in [-1, 1] at the requested rate, or raises `AudioError` with a message
that starts with the file's path, says what is wrong and what to do. `write_wav` writes PCM 16-bit mono
WAV atomically, with a header we build ourselves so the bytes do not depend on the libsndfile version.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

import numpy as np
import soundfile as sf

from msmbench.io import atomic_path

PCM16_SCALE = 32767  # float -> int16 multiplies by 2**15 - 1 so that +1.0 maps to 32767 without clipping
_RIFF_UNKNOWN_SIZES = (0, 0xFFFFFFFF)  # placeholders some streaming writers leave in the data chunk


class AudioError(ValueError):
    """An audio file that cannot be used; the message starts with the path."""

    def __init__(self, path: str | os.PathLike, problem: str, remedy: str):
        super().__init__(f"{path}: {problem}; {remedy}")
        self.path = Path(path)


def read_audio(path: str | os.PathLike, sample_rate: int = 16000) -> np.ndarray:
    """Read an audio file as float32 mono samples in [-1, 1] at `sample_rate`, shape (samples,).

    - Several channels are averaged (a mean downmix keeps the level of correlated channels and is what
      the HEAR preprocessing does before resampling).
    - Another file rate is converted with `scipy.signal.resample_poly(up, down)`, up/down = the rates
      divided by their gcd (polyphase FIR with a Kaiser window; exact rational ratio, no drift).
    - Values are clipped to [-1, 1]: float files and resampling ringing can overshoot slightly.
    - Silence is valid; very short clips are valid (the front end pads).
    Raises AudioError for a missing, empty, truncated, unreadable or non-finite file.
    """
    path = Path(path)
    _check_file(path)
    try:
        data, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # libsndfile reports every corrupt-file problem as some exception type
        raise AudioError(path, f"not a readable audio file ({type(e).__name__}: {e})",
                         "re-download or regenerate it") from None
    if data.shape[0] == 0:
        raise AudioError(path, "holds zero samples", "re-download or regenerate it")
    if not np.isfinite(data).all():
        raise AudioError(path, "contains NaN or infinite samples", "regenerate it from clean audio")
    audio = data.mean(axis=1, dtype=np.float64) if data.shape[1] > 1 else data[:, 0].astype(np.float64)
    if file_rate != sample_rate:
        audio = _resample(audio, int(file_rate), int(sample_rate))
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def _check_file(path: Path) -> None:
    """Fail early with a clear message where libsndfile's would be cryptic (or where it would not fail)."""
    if not path.exists():
        raise AudioError(path, "file not found", "check the path, or download/regenerate the task")
    if path.is_dir():
        raise AudioError(path, "is a directory, not an audio file", "check the path")
    size = path.stat().st_size
    if size == 0:
        raise AudioError(path, "empty file (0 bytes)", "re-download or regenerate it")
    with open(path, "rb") as f:
        head = f.read(12)
        if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
            _check_riff_complete(path, f, size)


def _check_riff_complete(path: Path, f, size: int) -> None:
    """libsndfile silently reads a truncated WAV (it just returns fewer frames): compare the data
    chunk's declared size with the bytes actually present."""
    pos = 12
    while pos + 8 <= size:
        f.seek(pos)
        chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
        if chunk_id == b"data":
            present = size - (pos + 8)
            if chunk_size not in _RIFF_UNKNOWN_SIZES and chunk_size > present:
                raise AudioError(path, f"truncated WAV: the header declares {chunk_size} bytes of audio "
                                 f"but the file holds {present}", "re-download or regenerate it")
            return
        pos += 8 + chunk_size + (chunk_size & 1)  # chunks are padded to an even length
    # No data chunk found: leave the verdict to libsndfile, which names the problem.


def _resample(audio: np.ndarray, file_rate: int, sample_rate: int) -> np.ndarray:
    g = math.gcd(file_rate, sample_rate)
    from scipy.signal import resample_poly  # imported here: scipy.signal costs ~0.6 s at start-up

    return resample_poly(audio, sample_rate // g, file_rate // g)


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int, atomic: bool = True) -> None:
    """Write mono `audio` (samples,) as a PCM 16-bit WAV.

    Samples are clipped to [-1, 1] and rounded to int16 (x * 32767). NaN or infinite samples are an
    error, not something to clip. The 44-byte header is written by hand: the same samples always give
    the same bytes.

    atomic=True (default): temp file + fsync + rename (msmbench.io.atomic_path). atomic=False writes
    in place, for callers that fill a private staging directory and publish it whole (TaskWriter):
    an fsync per file costs ~4 ms, more than synthesising the clip.
    """
    path = Path(path)
    pcm = to_pcm16(path, audio)
    if not (isinstance(sample_rate, (int, np.integer)) and 0 < sample_rate < 2**31):
        raise AudioError(path, f"sample_rate must be a positive integer, got {sample_rate!r}", "fix the caller")
    data = pcm.astype("<i2").tobytes()
    header = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(data), b"WAVE", b"fmt ", 16,
                         1, 1, int(sample_rate), int(sample_rate) * 2, 2, 16, b"data", len(data))
    if atomic:
        with atomic_path(path) as tmp:
            tmp.write_bytes(header + data)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(header + data)


def to_pcm16(path: str | os.PathLike, audio: np.ndarray) -> np.ndarray:
    """float samples -> int16 as written by write_wav; `path` only names the file in errors."""
    audio = np.asarray(audio)
    if audio.ndim == 2 and 1 in audio.shape:
        audio = audio.reshape(-1)
    if audio.ndim != 1:
        raise AudioError(path, f"write_wav takes mono audio of shape (samples,), got {audio.shape}",
                         "downmix before writing")
    if audio.size == 0:
        raise AudioError(path, "refusing to write zero samples", "check the generator")
    if not np.isfinite(audio).all():
        raise AudioError(path, "audio contains NaN or infinite samples", "check the generator")
    return np.rint(np.clip(audio.astype(np.float64), -1.0, 1.0) * PCM16_SCALE).astype(np.int16)
