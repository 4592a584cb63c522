"""Log-mel shards for pretraining: computed once, then read by memory map.

Format "msmbench-logmel-v1" (a directory):
- `shard_XXXXX.npy`: float16 [frames, n_mels], the per-clip standardised log-mels of up to
  `shard_clips` clips, concatenated along time (numpy .npy, so `np.load(mmap_mode="r")` reads it).
- `shard_XXXXX.offsets.npy`: int64 [clips + 1], clip i is rows offsets[i]:offsets[i+1].
- `files.tsv`: one line per clip: source path, sha256 of its bytes, shard index.
- `meta.json` (written last; its presence means the directory is complete): format, front-end
  config, clip and frame counts, and the sha256 of every shard.

float16 keeps standardised values (|x| < ~10) to ~3 significant digits; 2M AudioSet clips of 10 s
take ~320 GB instead of 640 GB in float32.
"""

from __future__ import annotations

import csv
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from msmbench.audio.frontend import FrontendConfig, log_mel
from msmbench.io import atomic_path, read_json, sha256_file, write_json, write_text

FORMAT = "msmbench-logmel-v1"
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"}
log = logging.getLogger(__name__)


def list_audio(paths: list[str | Path]) -> list[Path]:
    """Audio files named by folders (searched recursively, sorted), .txt lists or .csv lists (column `path`)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES)
        elif p.suffix == ".csv":
            with open(p, newline="") as f:
                rows = list(csv.DictReader(f))
            if rows and "path" not in rows[0]:
                raise ValueError(f"{p}: a file list CSV needs a 'path' column")
            files += [(p.parent / r["path"]) for r in rows]
        elif p.suffix == ".txt":
            files += [(p.parent / line.strip()) for line in p.read_text().splitlines() if line.strip()]
        elif not p.exists():
            raise FileNotFoundError(f"{p}: no such folder or file list")
        else:
            raise ValueError(f"{p}: expected a folder, a .txt or a .csv file list")
    if not files:
        raise ValueError(f"no audio files found in {', '.join(map(str, paths))}")
    return files


def _build_shard(args: tuple[int, list[Path], Path, dict, bool]) -> dict:
    from msmbench.audio.io import AudioError, read_audio  # imported in the worker process

    index, files, out_dir, frontend, skip_bad = args
    cfg = FrontendConfig(**frontend)
    mels, hashes, kept, skipped = [], [], [], []
    for f in files:
        try:
            audio = read_audio(f, cfg.sample_rate)
        except AudioError as e:
            if not skip_bad:
                raise
            skipped.append({"path": str(f), "error": str(e)})
            continue
        mels.append(log_mel(audio, cfg).numpy().astype(np.float16))
        hashes.append(sha256_file(f))
        kept.append(f)
    if not mels:
        raise ValueError(f"shard {index}: every one of its {len(files)} files was unreadable")
    files = kept
    offsets = np.concatenate([[0], np.cumsum([m.shape[0] for m in mels])]).astype(np.int64)
    name = f"shard_{index:05d}"
    with atomic_path(out_dir / f"{name}.npy") as tmp:
        np.save(tmp, np.concatenate(mels, axis=0))
    with atomic_path(out_dir / f"{name}.offsets.npy") as tmp:
        np.save(tmp, offsets)
    return {"index": index, "file": f"{name}.npy", "offsets": f"{name}.offsets.npy", "clips": len(files),
            "frames": int(offsets[-1]), "sha256": sha256_file(out_dir / f"{name}.npy"),
            "sources": [(str(f), h) for f, h in zip(files, hashes)], "skipped": skipped}


def build_shards(sources: list[str | Path], out_dir: str | Path, shard_clips: int = 50000, workers: int = 1,
                 frontend: FrontendConfig = FrontendConfig(), progress: bool = True, skip_bad: bool = False) -> Path:
    """Compute log-mel shards of all audio in `sources` into `out_dir`; returns the meta.json path.

    A file that cannot be read (corrupt, empty, non-finite: msmbench.audio.io.AudioError) stops the
    build with an error naming it, unless `skip_bad`: then it is left out, logged, and listed under
    "skipped" in meta.json (a web-scraped corpus like AudioSet always has a few broken downloads).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "meta.json").unlink(missing_ok=True)  # incomplete until rewritten at the end
    files = list_audio(sources)
    chunks = [files[i:i + shard_clips] for i in range(0, len(files), shard_clips)]
    jobs = [(i, chunk, out_dir, frontend.to_dict(), skip_bad) for i, chunk in enumerate(chunks)]
    bar = tqdm(total=len(jobs), desc="log-mel shards", unit="shard", disable=not progress)
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as pool:
            shards = []
            for s in pool.map(_build_shard, jobs):
                shards.append(s)
                bar.update()
    else:
        shards = []
        for job in jobs:
            shards.append(_build_shard(job))
            bar.update()
    bar.close()
    lines = [f"{src}\t{h}\t{s['index']}" for s in shards for src, h in s.pop("sources")]
    skipped = [item for s in shards for item in s.pop("skipped")]
    for item in skipped:
        log.warning("skipped %s", item["error"])
    write_text(out_dir / "files.tsv", "\n".join(lines) + "\n")
    meta = {"format": FORMAT, "frontend": frontend.to_dict(), "standardized": True, "dtype": "float16",
            "clips": sum(s["clips"] for s in shards), "frames": sum(s["frames"] for s in shards),
            "files_sha256": sha256_file(out_dir / "files.tsv"), "skipped": skipped, "shards": shards}
    write_json(out_dir / "meta.json", meta)
    log.info("wrote %d clips (%d frames) in %d shard(s) to %s; skipped %d unreadable file(s)", meta["clips"],
             meta["frames"], len(shards), out_dir, len(skipped))
    return out_dir / "meta.json"


@dataclass
class LogMelShards:
    """Read access to a shard directory: `clip(i)` -> float32 [frames, n_mels]."""

    root: Path
    meta: dict
    arrays: list[np.ndarray]
    offsets: list[np.ndarray]
    starts: np.ndarray  # first global clip index of each shard

    @classmethod
    def open(cls, path: str | Path) -> "LogMelShards":
        root = Path(path)
        root = root.parent if root.name == "meta.json" else root
        meta = read_json(root / "meta.json")
        if meta.get("format") != FORMAT:
            raise ValueError(f"{root / 'meta.json'}: format {meta.get('format')!r}, expected {FORMAT!r}")
        arrays = [np.load(root / s["file"], mmap_mode="r") for s in meta["shards"]]
        offsets = [np.load(root / s["offsets"]) for s in meta["shards"]]
        starts = np.concatenate([[0], np.cumsum([s["clips"] for s in meta["shards"]])])
        return cls(root, meta, arrays, offsets, starts)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _locate(self, i: int) -> tuple[int, int, int]:
        s = int(np.searchsorted(self.starts, i, side="right") - 1)
        j = i - int(self.starts[s])
        return s, int(self.offsets[s][j]), int(self.offsets[s][j + 1])

    def clip_frames(self) -> np.ndarray:
        return np.concatenate([np.diff(o) for o in self.offsets])

    def clip(self, i: int) -> np.ndarray:
        s, a, b = self._locate(i)
        return np.asarray(self.arrays[s][a:b], dtype=np.float32)

    def crop(self, i: int, start: int, frames: int) -> np.ndarray:
        """frames x n_mels from `start`; clips shorter than `frames` are tiled (SPEC.md section 1)."""
        s, a, b = self._locate(i)
        n = b - a
        if n >= frames:
            return np.asarray(self.arrays[s][a + start:a + start + frames], dtype=np.float32)
        reps = -(-frames // n)
        return np.tile(np.asarray(self.arrays[s][a:b], dtype=np.float32), (reps, 1))[:frames]


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 1)))
