"""Provenance records: one JSON file beside every output, `<output>.prov.json`.

A record holds the sha256 of the output and of each input (a directory input is hashed as the
sorted list of its files' hashes), the code version (git commit, dirty or not), the settings the
command used, the seed, package versions, the device, and start/end times. Each input entry points
to the input's own record where one exists, so lineage is a graph that `msmbench audit` walks.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from msmbench import __version__
from msmbench.io import read_json, sha256_file, write_json

SUFFIX = ".prov.json"
PACKAGES = ("torch", "numpy", "scipy", "pandas", "soundfile", "safetensors", "xlstm", "mlstm_kernels",
            "mamba_ssm", "snakemake", "dvc", "matplotlib", "seaborn")
_REPO = Path(__file__).resolve().parents[3]


def record_path(output: str | os.PathLike) -> Path:
    output = Path(output)
    return output.parent / (output.name + SUFFIX)


# Not content: provenance records, and the timestamp Snakemake drops into directory outputs.
_NOT_CONTENT = (SUFFIX, ".snakemake_timestamp")


def sha256_tree(path: str | os.PathLike) -> str:
    """Content hash of a directory: sha256 over sorted 'relative/path sha256' lines (records excluded)."""
    root = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(_NOT_CONTENT)):
        h.update(f"{f.relative_to(root).as_posix()} {sha256_file(f)}\n".encode())
    return h.hexdigest()


def content_hash(path: str | os.PathLike) -> str:
    path = Path(path)
    if path.is_dir():
        return sha256_tree(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: input not found")
    return sha256_file(path)


def code_version() -> dict:
    info: dict[str, Any] = {"msmbench": __version__, "git_commit": None, "dirty": None}
    try:
        run = lambda *a: subprocess.run(["git", "-C", str(_REPO), *a], capture_output=True, text=True, timeout=10)  # noqa: E731
        head = run("rev-parse", "HEAD")
        if head.returncode == 0:
            info["git_commit"] = head.stdout.strip()
            status = run("status", "--porcelain", "--untracked-files=no")
            info["dirty"] = bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def device_info() -> dict:
    info = {"host": socket.gethostname(), "platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        import torch

        if torch.cuda.is_available():
            info["cuda"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def input_entry(path: str | os.PathLike) -> dict:
    path = Path(path)
    entry = {"path": str(path), "sha256": content_hash(path)}
    rec = record_path(path)
    if rec.exists():
        entry["record"] = str(rec)
    return entry


def write_records(outputs: list[str | os.PathLike], stage: str, inputs: list[str | os.PathLike] = (),
                  settings: dict | None = None, seed: int | None = None, started: str | None = None,
                  extra: dict | None = None) -> list[Path]:
    """Write `<output>.prov.json` for each finished output of one command; returns the records' paths.

    The outputs of one command share everything but their own sha256, so inputs are hashed once.
    """
    shared = {
        "stage": stage,
        "inputs": [input_entry(p) for p in inputs],
        "settings": settings or {},
        "seed": seed,
        "code": code_version(),
        "packages": package_versions(),
        "device": device_info(),
        "command": sys.argv,
        "started": started or now(),
        "ended": now(),
    }
    if extra:
        shared["extra"] = extra
    paths = []
    for output in map(Path, outputs):
        paths.append(record_path(output))
        write_json(paths[-1], {"output": str(output), "sha256": content_hash(output), **shared})
    return paths


def write_record(output: str | os.PathLike, stage: str, **kwargs) -> Path:
    """Write `<output>.prov.json` for a finished output (see write_records); returns the record's path."""
    return write_records([output], stage, **kwargs)[0]


def read_record(output: str | os.PathLike) -> dict:
    return read_json(record_path(output))
