"""Resample a HEAR task directory's audio from one sample rate to another (48 kHz -> 16 kHz).

The HEAR 2021 archives on Zenodo hold only 48 kHz audio; the models here read 16 kHz. HEAR itself
resampled with soxr (through ffmpeg). We use `scipy.signal.resample_poly` instead: a polyphase
windowed-sinc FIR filter (Kaiser window, beta 5.0, scipy's default), exact for rational ratios such
as 48000/16000 = 3, deterministic across platforms, and already a dependency, so no new native
library is needed. The two resamplers differ only by small amounts near the new Nyquist frequency;
results at 16 kHz therefore match HEAR's own 16 kHz archives closely but not bit for bit. If that
matters, use those archives (requester-pays buckets, see `msmbench.data.fetch`).

Layout (HEAR_FORMAT.md): `<task>/<rate>/<split>/<stem>.wav`, WAV PCM 16-bit mono.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import scipy
import soundfile as sf
from scipy.signal import resample_poly

log = logging.getLogger(__name__)

MARKER = ".resample.json"  # written last inside each finished <dst_rate>/<split>/ directory
KAISER_BETA = 5.0  # scipy's default for resample_poly; named here so the marker records it


def resampled_length(n: int, src_rate: int, dst_rate: int) -> int:
    """round(n * dst_rate / src_rate), halves rounded up, in exact integer arithmetic."""
    return (2 * n * dst_rate + src_rate) // (2 * src_rate)


def resample_array(x: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Resample `x: [n]` (float) to `[resampled_length(n)]` with a polyphase Kaiser-window filter.

    resample_poly returns ceil(n * up / down) samples; the last sample is dropped or a zero appended
    so the length is exactly round(n * dst / src), like a clip trimmed/padded at its end.
    """
    g = math.gcd(src_rate, dst_rate)
    up, down = dst_rate // g, src_rate // g
    n_out = resampled_length(len(x), src_rate, dst_rate)
    if up == down:
        y = np.asarray(x, dtype=np.float64)
    else:
        y = resample_poly(np.asarray(x, dtype=np.float64), up, down, window=("kaiser", KAISER_BETA))
    if len(y) >= n_out:
        return y[:n_out]
    return np.concatenate([y, np.zeros(n_out - len(y))])


def to_pcm16(y: np.ndarray) -> np.ndarray:
    """Float in [-1, 1) -> int16 with the scale soundfile reads back (x / 32768), clipped.

    Clipping is explicit because libsndfile's float -> int conversion wraps around instead.
    """
    return np.clip(np.round(y * 32768.0), -32768, 32767).astype(np.int16)


def resample_file(src: Path, dst: Path, src_rate: int, dst_rate: int) -> None:
    x, sr = sf.read(src, dtype="float64", always_2d=True)
    if sr != src_rate:
        raise ValueError(f"{src}: sample rate {sr}, expected {src_rate} (its directory's name)")
    if x.shape[1] > 1:  # HEAR audio is mono; mix down rather than fail on a stray stereo file
        log.warning("%s: %d channels, mixing down to mono", src, x.shape[1])
    y = resample_array(x.mean(axis=1), src_rate, dst_rate)
    sf.write(dst, to_pcm16(y), dst_rate, subtype="PCM_16", format="WAV")


def _splits(src_task_dir: Path, src_rate: int) -> list[str]:
    meta = src_task_dir / "task_metadata.json"
    if meta.exists():
        splits = json.loads(meta.read_text()).get("splits")
        if splits:
            return list(splits)
    audio = src_task_dir / str(src_rate)
    if not audio.is_dir():
        raise FileNotFoundError(f"{src_task_dir}: neither task_metadata.json 'splits' nor {audio}")
    return sorted(p.name for p in audio.iterdir() if p.is_dir() and not p.name.startswith("."))


def split_is_complete(split_dir: Path) -> bool:
    return (split_dir / MARKER).is_file()


def resample_task_dir(
    src_task_dir: str | os.PathLike,
    src_rate: int,
    dst_rate: int = 16000,
    *,
    dst_task_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> Path:
    """Write `<dst_task_dir>/<dst_rate>/<split>/*.wav` from `<src_task_dir>/<src_rate>/<split>/*.wav`.

    Output is WAV PCM 16-bit mono at `dst_rate`, each file exactly round(n * dst_rate / src_rate)
    samples long. Splits come from task_metadata.json's `splits` (else the subdirectories). Each split
    is written into a temporary sibling directory, a marker file (`.resample.json`, recording the
    method) is written last, and the directory is renamed into place: a split directory with the
    marker is complete and is skipped on a rerun; one without it is never produced by this function.
    Metadata files (task_metadata.json, labels) are not copied: that is the caller's business.
    `dst_task_dir` defaults to `src_task_dir`. Returns `<dst_task_dir>/<dst_rate>`.
    """
    from tqdm import tqdm

    src_task_dir = Path(src_task_dir)
    dst_task_dir = Path(dst_task_dir) if dst_task_dir is not None else src_task_dir
    if src_rate <= 0 or dst_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {src_rate} -> {dst_rate}")
    src_audio = src_task_dir / str(src_rate)
    dst_audio = dst_task_dir / str(dst_rate)
    splits = _splits(src_task_dir, src_rate)
    todo = [s for s in splits if not split_is_complete(dst_audio / s)]
    if todo and not src_audio.is_dir():
        raise FileNotFoundError(f"{src_audio}: no audio at {src_rate} Hz to resample")
    dst_audio.mkdir(parents=True, exist_ok=True)

    for split in todo:
        src_split, dst_split = src_audio / split, dst_audio / split
        if dst_split.exists():
            raise FileExistsError(
                f"{dst_split} exists but has no {MARKER} marker, so it was not written by this "
                "resampler (or is from an older run); delete it and rerun"
            )
        if not src_split.is_dir():
            raise FileNotFoundError(f"{src_split}: split '{split}' listed in task_metadata.json is missing")
        files = sorted(p for p in src_split.iterdir() if p.suffix.lower() == ".wav")
        tmp = Path(tempfile.mkdtemp(prefix=f".{split}.resample-", dir=dst_audio))
        try:
            for src in tqdm(files, desc=f"{src_task_dir.name}/{split} {src_rate}->{dst_rate}",
                            unit="file", disable=not progress):
                resample_file(src, tmp / src.name, src_rate, dst_rate)
            marker = {"src_rate": src_rate, "dst_rate": dst_rate, "n_files": len(files),
                      "method": f"scipy.signal.resample_poly, kaiser beta={KAISER_BETA}",
                      "scipy": scipy.__version__, "format": "WAV PCM_16 mono"}
            (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
            os.rename(tmp, dst_split)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
    return dst_audio
