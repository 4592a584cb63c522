"""No pretraining clip may also be a downstream clip: a content-hash check between the two.

Compares the sha256 of every pretraining source file (listed in the shards' files.tsv) with the sha256
of every task clip. It catches exact copies (the same file in both); re-encoded or resampled copies have
other bytes and are not caught (a perceptual hash would be needed for those).
"""

from __future__ import annotations

from pathlib import Path

from msmbench.io import sha256_file, write_json


class OverlapError(ValueError):
    pass


def pretraining_hashes(features_dir: str | Path) -> dict[str, str]:
    """sha256 -> source path, from `<features_dir>/files.tsv`."""
    lines = (Path(features_dir) / "files.tsv").read_text().splitlines()
    return {line.split("\t")[1]: line.split("\t")[0] for line in lines if line}


def task_hashes(task_dir: str | Path) -> dict[str, str]:
    """sha256 -> clip path for every audio file of a task."""
    return {sha256_file(f): str(f) for f in sorted(Path(task_dir).rglob("*.wav"))}


def check_disjoint(features_dir: str | Path, task_dirs: list[str | Path], out: str | Path) -> dict:
    pre = pretraining_hashes(features_dir)
    overlaps, clips = [], 0
    for task in task_dirs:
        hashes = task_hashes(task)
        clips += len(hashes)
        overlaps += [{"task_clip": path, "pretraining_clip": pre[h], "sha256": h} for h, path in hashes.items() if h in pre]
    result = {"pretraining_clips": len(pre), "task_clips": clips, "tasks": [str(t) for t in task_dirs],
              "overlaps": overlaps}
    if overlaps:
        first = overlaps[0]
        raise OverlapError(f"{len(overlaps)} task clip(s) are also pretraining clips, e.g. {first['task_clip']} = "
                           f"{first['pretraining_clip']}; remove them from the pretraining corpus "
                           f"({features_dir}) and rebuild its features")
    write_json(out, result)
    return result
