"""Fetch the HEAR 2021 task archives: resumable checksummed download, safe extraction, 16 kHz audio.

Sources (SPEC section 6):

- Zenodo record 5887964 (concept DOI 10.5281/zenodo.5885750) holds every task at 48 kHz as
  `hear2021-<task dir>-48000.tar.gz`, e.g. `hear2021-esc50-v2.0.0-full-48000.tar.gz`; the file URL is
  `https://zenodo.org/records/<record>/files/<name>?download=1`. `fetch_task` downloads it, extracts
  it and resamples the audio to 16 kHz (`msmbench.data.resample`).
- 16 kHz copies live in requester-pays buckets, gs://hear2021-archive/tasks/ and
  s3://hear2021-archive/tasks/. They need credentials and a billing account, so this module does not
  talk to them. Download them yourself and point a `local` source at the folder:

      gsutil -u <your-gcp-project> ls gs://hear2021-archive/tasks/          # see the layout first
      gsutil -u <your-gcp-project> -m cp gs://hear2021-archive/tasks/<archive> /data/hear_archives/
      aws s3 cp --request-payer requester s3://hear2021-archive/tasks/<archive> /data/hear_archives/

  then `{"kind": "local", "dir": "/data/hear_archives"}` (extracted task directories work too).
- Any HTTP mirror: `{"kind": "url", "base_url": "https://mirror/hear", "sample_rate": 48000}` fetches
  `<base_url>/<archive name>`; `name_pattern` (e.g. "hear2021-{task}-{sample_rate}.tar.gz") overrides the
  manifest's name and `urls` ({task dir: full URL}) gives per-file URLs such as pre-signed ones.

Checksums: HEAR publishes none. config/hear_manifest.yaml pins a sha256 per archive where one is
known (null otherwise). With null, the sha256 is looked up in a lock file (YAML, archive name ->
sha256); the first download records it there and every later download or local copy must match.

Every output appears atomically: downloads stream into `<dest>.part` and are renamed only once
verified; archives are extracted into a temporary sibling directory; the task directory is renamed
into place only when its 16 kHz audio is complete and matches its label files.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import logging
import os
import re
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path
from typing import Any, Iterator

import yaml

from msmbench.io import atomic_path, sha256_file, write_json
from msmbench.data.resample import resample_task_dir

try:  # serialises read-modify-write of the lock file between parallel fetch jobs (POSIX only)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

log = logging.getLogger(__name__)

TARGET_RATE = 16000
ZENODO_RECORD = 5887964
ZENODO_URL = "https://zenodo.org/records/{record}/files/{name}?download=1"
DEFAULT_NAME_PATTERN = "hear2021-{task}-{sample_rate}.tar.gz"  # Zenodo's naming (SPEC section 6)
STAMP = ".msmbench_fetch.json"  # provenance of a fetched task dir: archive, sha256, resampling
USER_AGENT = "msmbench-fetch (+https://github.com/hearbenchmark)"
_CHUNK = 1 << 20
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
_HINT_4XX = (
    "check the task name/version in the config (data.tasks) and the archive name in "
    "config/hear_manifest.yaml; or set data.hear.source to {kind: local, dir: <folder>} with a "
    "folder that already holds the archives or extracted task directories"
)


class FetchError(RuntimeError):
    """A task archive could not be obtained or installed; the message says what to do."""


class ChecksumError(FetchError):
    """A file's sha256 differs from the manifest or the lock file."""


class UnsafeArchiveError(FetchError):
    """An archive member would be written, or would point, outside the extraction directory."""


class CorruptArchiveError(FetchError):
    """The archive cannot be read to its end (truncated, not gzip/tar)."""


# ---------------------------------------------------------------------------------------------
# YAML: the manifest and the lock file
# ---------------------------------------------------------------------------------------------

class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (YAML silently keeps the last one; STYLE.md)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: invalid YAML ({e})") from None


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def load_manifest(path: str | os.PathLike) -> dict:
    """Read config/hear_manifest.yaml and check its shape.

    Returns `{"zenodo_record": int, "tasks": {task dir: {"archives": {rate: {"name", "sha256"}}}}}`
    with integer rates and sha256 either None or 64 lower-case hex digits.
    """
    path = Path(path)
    data = _load_yaml(path) or {}
    tasks = data.get("tasks")
    if not isinstance(tasks, dict):
        raise ValueError(f"{path}: expected a 'tasks' mapping")
    out = {}
    for task, entry in tasks.items():
        archives = (entry or {}).get("archives")
        if not isinstance(archives, dict) or not archives:
            raise ValueError(f"{path}: task {task}: expected an 'archives' mapping rate -> {{name, sha256}}")
        out[task] = {"archives": {}}
        for rate, a in archives.items():
            sha = a.get("sha256") if isinstance(a, dict) else None
            if not isinstance(a, dict) or not a.get("name") or (sha is not None and not _SHA256.match(str(sha))):
                raise ValueError(f"{path}: task {task}, rate {rate}: need 'name' and 'sha256' "
                                 "(64 lower-case hex digits, or null while unknown)")
            out[task]["archives"][int(rate)] = {"name": str(a["name"]), "sha256": sha}
    return {"zenodo_record": int(data.get("zenodo_record", ZENODO_RECORD)), "tasks": out}


@contextlib.contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    """Exclusive advisory lock for a read-modify-write of `lock_file`.

    Taken on the lock file's directory: the file itself is replaced atomically (a lock on it would
    be on a stale inode), and a sidecar lock file would litter a tracked config/ directory.
    """
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover - no advisory locks on this platform
        yield
        return
    fd = os.open(lock_file.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def read_lock(lock_file: str | os.PathLike) -> dict[str, str]:
    """The lock file as {archive name: sha256}; {} if it does not exist."""
    lock_file = Path(lock_file)
    if not lock_file.exists():
        return {}
    data = _load_yaml(lock_file) or {}
    if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and _SHA256.match(v) for k, v in data.items()):
        raise ValueError(f"{lock_file}: expected a mapping 'archive name: sha256 (64 hex digits)'")
    return data


def _write_lock(lock_file: Path, entries: dict[str, str]) -> None:
    header = ("# sha256 of HEAR task archives, recorded by msmbench.data.fetch on first download and\n"
              "# enforced on every later download or local copy. Key: archive file name.\n"
              "# To pin one for everybody, copy it into config/hear_manifest.yaml.\n")
    body = yaml.safe_dump(dict(sorted(entries.items())), default_flow_style=False) if entries else ""
    with atomic_path(lock_file) as tmp:
        tmp.write_text(header + body)


def _forget_lock_entry(lock_file: Path, name: str, sha: str) -> None:
    with _locked(lock_file):
        entries = read_lock(lock_file)
        if entries.get(name) == sha:
            del entries[name]
            _write_lock(lock_file, entries)


def _verify(got: str, *, name: str, origin: str, sha256: str | None, lock_file: Path | None,
            on_mismatch: str) -> bool:
    """Check `got` against the manifest's sha256, else the lock file (recording it if absent).

    Returns True if the checksum was recorded in the lock file just now. Raises ChecksumError.
    """
    if sha256:
        if got != sha256.lower():
            raise ChecksumError(
                f"{origin}: sha256 {got}, but config/hear_manifest.yaml pins {sha256} for {name}. "
                f"{on_mismatch} If the upstream archive was deliberately replaced, check it and "
                "update sha256 in config/hear_manifest.yaml.")
        return False
    if lock_file is None:
        log.warning("%s: no checksum known for %s and no lock file given; sha256 %s is not verified",
                    origin, name, got)
        return False
    lock_file = Path(lock_file)
    with _locked(lock_file):
        entries = read_lock(lock_file)
        want = entries.get(name)
        if want is None:
            entries[name] = got
            _write_lock(lock_file, entries)
            log.warning("%s: sha256 %s of %s recorded in %s on first download; it will be enforced from "
                        "now on (copy it to config/hear_manifest.yaml to pin it for everybody)",
                        origin, got, name, lock_file)
            return True
    if want != got:
        raise ChecksumError(
            f"{origin}: sha256 {got}, but {lock_file} recorded {want} for {name} when it was first "
            f"downloaded. {on_mismatch} If the upstream archive legitimately changed, delete the entry "
            f"'{name}' from {lock_file} and rerun.")
    return False


# ---------------------------------------------------------------------------------------------
# Download
# ---------------------------------------------------------------------------------------------

class _Retry(Exception):
    def __init__(self, reason: str, *, progressed: bool = False, wait: float | None = None):
        super().__init__(reason)
        self.progressed, self.wait = progressed, wait


def _parse_content_range(value: str | None) -> tuple[int | None, int | None, int | None]:
    """'bytes 100-199/1000' -> (100, 199, 1000); 'bytes */1000' -> (None, None, 1000); '*' -> None."""
    m = re.match(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*$", value or "")
    if not m:
        return None, None, None
    start, end, total = (int(g) if g and g != "*" else None for g in m.groups())
    return start, end, total


def _retry_after(headers: Any) -> float | None:
    try:
        return min(float(headers.get("Retry-After")), 300.0)
    except (TypeError, ValueError):
        return None


def _attempt(url: str, part: Path, *, timeout: float, progress: bool) -> None:
    """One GET into `part`, resuming from its size. Returns when the body is complete."""
    from tqdm import tqdm

    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and have:  # nothing left after byte `have`: complete, or longer than the file
            total = _parse_content_range(e.headers.get("Content-Range"))[2]
            if total is None or total == have:
                return
            part.unlink()
            raise _Retry(f"partial file has {have} bytes but the file has {total}; restarting",
                         progressed=True, wait=0.0) from None
        if e.code in _RETRY_STATUS or e.code >= 500:
            raise _Retry(f"HTTP {e.code} {e.reason}", wait=_retry_after(e.headers)) from None
        raise FetchError(f"{url}: HTTP {e.code} {e.reason}; not retrying. Hint: {_HINT_4XX}.") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        raise _Retry(f"{type(e).__name__}: {e}") from None

    with resp:
        if resp.status == 206:
            start, end, total = _parse_content_range(resp.headers.get("Content-Range"))
            if start != have:
                part.unlink(missing_ok=True)
                raise _Retry(f"server resumed at byte {start}, not {have}; restarting from zero",
                             progressed=True, wait=0.0)
            total = total if total is not None else end + 1
            mode = "ab"
        elif resp.status == 200:
            if have:
                log.warning("%s: server ignored the Range request (answered 200); restarting from zero", url)
                have = 0
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            mode = "wb"
        else:
            raise FetchError(f"{url}: unexpected HTTP {resp.status}; {_HINT_4XX}.")

        received = 0
        with open(part, mode) as f, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                         unit_divisor=1024, desc=part.name[:-5], disable=not progress) as bar:
            while True:
                try:
                    chunk = resp.read1(_CHUNK)  # what has arrived: a timeout then loses nothing
                except (OSError, http.client.HTTPException) as e:
                    raise _Retry(f"connection lost after {have + received} bytes ({type(e).__name__}: {e})",
                                 progressed=received > 0) from None
                if not chunk:
                    break
                f.write(chunk)  # disk errors here are not retried
                received += len(chunk)
                bar.update(len(chunk))
    size = have + received
    if total is not None and size < total:
        raise _Retry(f"incomplete body: {size} of {total} bytes", progressed=received > 0)
    if total is not None and size > total:
        part.unlink()
        raise _Retry(f"got {size} bytes, more than the announced {total}; restarting", progressed=True)
    if total is None:
        log.warning("%s: server sent no length; completeness rests on the checksum alone", url)


def _download(url: str, dest: Path, *, sha256: str | None, lock_file: Path | None, retries: int,
              backoff: float, timeout: float, progress: bool) -> tuple[str, bool]:
    dest = Path(dest)
    name = dest.name
    if dest.exists():  # a finished download: verify and reuse it
        got = sha256_file(dest)
        recorded = _verify(got, name=name, origin=str(dest), sha256=sha256, lock_file=lock_file,
                           on_mismatch=f"Delete {dest} and rerun to download it again.")
        return got, recorded

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    failures = 0  # consecutive failed attempts; one that received bytes resets the count
    while True:
        try:
            _attempt(url, part, timeout=timeout, progress=progress)
            break
        except _Retry as e:
            failures = 1 if e.progressed else failures + 1
            if failures > retries:
                raise FetchError(
                    f"{url}: download failed after {retries} retries ({e}). The partial file {part} is "
                    "kept; rerun to resume from it.") from None
            wait = e.wait if e.wait is not None else backoff * 2 ** (failures - 1)
            have = part.stat().st_size if part.exists() else 0
            log.warning("%s: %s; retry %d/%d in %.1f s (from byte %d)", url, e, failures, retries, wait, have)
            time.sleep(wait)

    got = sha256_file(part)
    try:
        recorded = _verify(got, name=name, origin=f"{url} (downloaded to {part})", sha256=sha256,
                           lock_file=lock_file, on_mismatch="The download was deleted; rerun to download again.")
    except ChecksumError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    return got, recorded


def download(url: str, dest: str | os.PathLike, *, sha256: str | None, lock_file: str | os.PathLike | None,
             retries: int = 5, backoff: float = 1.0, timeout: float = 60, progress: bool = True) -> str:
    """Download `url` to `dest` (resuming, retrying, verifying) and return its sha256.

    Streams into `<dest>.part`. Connection errors, timeouts, 5xx/408/429 answers and short bodies are
    retried up to `retries` times in a row with exponential backoff (`backoff * 2**k` seconds;
    an attempt that received data resets the count) and resume with `Range: bytes=<have>-`: a 206
    answer is appended, a 200 answer (server ignores Range) restarts from zero, a 416 answer means the
    partial file is already complete. Other 4xx answers raise FetchError at once.

    The finished file must match `sha256` if given (the committed manifest), else the entry for
    `dest.name` in `lock_file` (YAML, archive name -> sha256); without an entry its sha256 is recorded
    there (a warning is logged) and enforced from then on. On a mismatch the download is deleted and
    ChecksumError is raised. Only a verified file is renamed onto `dest`. An existing `dest` is
    verified the same way and not downloaded again.
    """
    return _download(url, Path(dest), sha256=sha256, lock_file=Path(lock_file) if lock_file else None,
                     retries=retries, backoff=backoff, timeout=timeout, progress=progress)[0]


# ---------------------------------------------------------------------------------------------
# Safe extraction
# ---------------------------------------------------------------------------------------------

def _member_parts(archive: Path, name: str) -> list[str]:
    """Archive member name -> path components; rejects absolute paths and '..'."""
    if "\x00" in name:
        raise UnsafeArchiveError(f"{archive}: member {name!r} has a NUL byte in its name")
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} has a '..' component")
    return parts


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def _makedirs_inside(archive: Path, member: str, root: str, parts: list[str]) -> str:
    """Create root/parts one level at a time, never following a link out of `root`; return its real path."""
    cur = root
    for part in parts:
        nxt = os.path.join(cur, part)
        if os.path.lexists(nxt):
            real = os.path.realpath(nxt)
            if not _inside(real, root):
                raise UnsafeArchiveError(f"{archive}: member {member!r} goes through a link leading out of "
                                         "the extraction directory")
            if not os.path.isdir(real):
                raise UnsafeArchiveError(f"{archive}: member {member!r} needs {part!r} to be a directory")
            cur = real
        else:
            os.mkdir(nxt, 0o755)
            cur = nxt
    return cur


def _extract_all(archive: Path, root: str) -> None:
    """Stream every member of `archive` into the real directory `root`, checking each one first."""
    with tarfile.open(archive, "r|*") as tf:  # stream mode: one sequential pass, no seeks back in gzip
        for m in tf:
            parts = _member_parts(archive, m.name)
            if not parts:
                continue  # the archive's own "." entry
            if m.isdir():
                _makedirs_inside(archive, m.name, root, parts)
                continue
            if not (m.isreg() or m.issym() or m.islnk()):
                kind = ("device file" if m.ischr() or m.isblk() else "FIFO" if m.isfifo() else "special file")
                raise UnsafeArchiveError(f"{archive}: member {m.name!r} is a {kind}; HEAR archives hold only "
                                         "files and directories")
            parent = _makedirs_inside(archive, m.name, root, parts[:-1])
            dest = os.path.join(parent, parts[-1])
            if m.issym():
                if m.linkname.startswith(("/", "\\")):
                    raise UnsafeArchiveError(f"{archive}: member {m.name!r} is a symlink to the absolute path "
                                             f"{m.linkname!r}")
                if not _inside(os.path.realpath(os.path.join(parent, m.linkname)), root):
                    raise UnsafeArchiveError(f"{archive}: member {m.name!r} is a symlink to {m.linkname!r}, "
                                             "outside the extraction directory")
            elif m.islnk():  # linkname is a path inside the archive
                try:
                    src = os.path.realpath(os.path.join(root, *_member_parts(archive, m.linkname)))
                except UnsafeArchiveError:
                    src = ""
                if not _inside(src, root) or not os.path.isfile(src):
                    raise UnsafeArchiveError(f"{archive}: member {m.name!r} is a hard link to {m.linkname!r}, "
                                             "which is not a file extracted before it")
            if os.path.lexists(dest):  # a later member of the same name replaces the earlier one, as tar does
                if os.path.isdir(dest) and not os.path.islink(dest):
                    raise UnsafeArchiveError(f"{archive}: member {m.name!r} would replace a directory")
                os.unlink(dest)
            if m.issym():
                os.symlink(m.linkname, dest)
            elif m.islnk():
                os.link(src, dest)
            else:
                with tf.extractfile(m) as fsrc, open(dest, "xb") as fdst:
                    shutil.copyfileobj(fsrc, fdst, _CHUNK)
                os.chmod(dest, 0o755 if m.mode & 0o100 else 0o644)  # no setuid/setgid/world-write bits
                os.utime(dest, (m.mtime, m.mtime))


def _find_root(archive: Path, tmp: Path, member_prefix: str | None) -> Path:
    if member_prefix is None:
        return tmp
    parts = _member_parts(archive, member_prefix)
    cand = tmp.joinpath(*parts)
    if cand.is_dir() and not cand.is_symlink():
        return cand
    matches = []
    if len(parts) == 1:  # a bare name: the unique directory of that name, at most 4 levels down
        for dirpath, dirnames, _ in os.walk(tmp):
            depth = len(Path(dirpath).relative_to(tmp).parts)
            matches += [Path(dirpath, d) for d in dirnames
                        if d == parts[0] and not os.path.islink(os.path.join(dirpath, d))]
            if depth >= 3:
                dirnames[:] = []
    if len(matches) == 1:
        return matches[0]
    top = sorted(p.name for p in tmp.iterdir())[:10]
    what = "several directories" if matches else "no directory"
    raise FetchError(f"{archive}: has {what} named {member_prefix!r} (top level: {top}); is it the "
                     "archive of another task? Delete it and rerun, or fix the archive name in the config.")


def _check_links(archive: Path, root: Path, base: Path) -> None:
    """Every symlink under `root` must resolve inside `root` (links are checked again as a whole,
    since a link made early can be redirected by one made later). `base`: the extraction directory,
    so that messages give member names as in the archive."""
    real_root = os.path.realpath(root)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path) and not _inside(os.path.realpath(path), real_root):
                rel = Path(path).relative_to(base).as_posix()
                raise UnsafeArchiveError(f"{archive}: member {rel!r} is a symlink to {os.readlink(path)!r}, "
                                         f"which leads outside {root.name}")


def safe_extract(archive: str | os.PathLike, target_dir: str | os.PathLike, *,
                 member_prefix: str | None = None) -> Path:
    """Extract a (gzipped) tar archive into the new directory `target_dir`, safely and atomically.

    Every member is checked before anything is written: absolute names, `..` components, device
    files and FIFOs raise UnsafeArchiveError; a symlink or hard link is allowed only if it resolves
    inside the extraction directory, and no member is written through a link leading outside it.
    Files get mode 644 (755 if executable). Python's tarfile filters are not relied on; the members
    are written here.

    `member_prefix` selects the directory to install as `target_dir`: an exact path inside the
    archive (e.g. "hear-2021.0.6/tasks/esc50-v2.0.0-full"), or a bare directory name matched anywhere
    in the top four levels (must be unique). None installs the whole archive.

    The archive is extracted into a temporary sibling of `target_dir`, which is renamed into place
    only at the end; on any error the temporary directory is removed and `target_dir` does not exist.
    A truncated or unreadable archive raises CorruptArchiveError (a FetchError) naming it.
    """
    archive, target = Path(archive), Path(target_dir)
    if target.exists() or target.is_symlink():
        raise FileExistsError(f"{target}: already exists; safe_extract installs a new directory, never merges")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.extract-", dir=target.parent))
    try:
        try:
            _extract_all(archive, os.path.realpath(tmp))
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise CorruptArchiveError(
                f"{archive}: corrupt or truncated archive ({type(e).__name__}: {e}); delete it and rerun "
                "to download it again") from None
        root = _find_root(archive, tmp, member_prefix)
        _check_links(archive, root, tmp)
        os.chmod(root, 0o755)  # mkdtemp made it 700
        os.rename(root, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # rmtree removes links, never follows them
    return target


# ---------------------------------------------------------------------------------------------
# Task directories
# ---------------------------------------------------------------------------------------------

def _problem(task_dir: Path, rate: int) -> str | None:
    """Why `task_dir` is not a complete HEAR task directory at `rate` Hz (None if it is)."""
    try:
        meta = json.loads((task_dir / "task_metadata.json").read_text())
    except FileNotFoundError:
        return "no task_metadata.json"
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return f"task_metadata.json is not valid JSON ({e})"
    splits = meta.get("splits") if isinstance(meta, dict) else None
    if not splits:
        return "task_metadata.json has no 'splits'"
    if not (task_dir / "labelvocabulary.csv").is_file():
        return "no labelvocabulary.csv"
    for split in splits:
        try:
            labels = json.loads((task_dir / f"{split}.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError) as e:
            return f"{split}.json missing or unreadable ({type(e).__name__})"
        audio = task_dir / str(rate) / split
        if not audio.is_dir():
            return f"no {rate}/{split}/ directory"
        have = set(os.listdir(audio))
        missing = [k for k in labels if k not in have]
        if missing:
            return f"{len(missing)} files listed in {split}.json are missing from {rate}/{split}/ (e.g. {missing[0]})"
    return None


def _audio_rates(task_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in task_dir.iterdir() if p.is_dir() and p.name.isdigit())


def _source_rate(task_dir: Path) -> int | None:
    """None if 16 kHz audio is there; else the rate to resample from (48 kHz, else the highest)."""
    rates = _audio_rates(task_dir)
    if TARGET_RATE in rates:
        return None
    if not rates:
        raise FetchError(f"{task_dir}: no <sample_rate>/ audio directory")
    return 48000 if 48000 in rates else max(rates)


def _finish(staging: Path, final: Path, *, origin: str, stamp: dict, resample_from: int | None,
            progress: bool) -> None:
    """Resample `staging` to 16 kHz if asked, check it, drop other rates, write the stamp, rename
    `staging` onto `final` (the only step that makes `final` exist)."""
    if resample_from is not None:
        resample_task_dir(staging, resample_from, TARGET_RATE, progress=progress)
    audio = staging / str(TARGET_RATE)
    for p in audio.glob(".*.resample-*"):  # left by a killed run
        shutil.rmtree(p, ignore_errors=True)
    problem = _problem(staging, TARGET_RATE)
    if problem:
        raise FetchError(f"{origin}: {final.name} is not a complete HEAR task directory: {problem}. "
                         "Is the archive complete and of this task? Delete it and rerun.")
    for rate in _audio_rates(staging):
        if rate != TARGET_RATE:
            shutil.rmtree(staging / str(rate))
    write_json(staging / STAMP, stamp)
    os.rename(staging, final)


def _read_stamp(task_dir: Path) -> dict:
    try:
        return json.loads((task_dir / STAMP).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _install_archive(archive: Path, sha: str, recorded: bool, final: Path, *, origin: str,
                     lock_file: Path | None, progress: bool) -> None:
    staging = final.with_name(f".{final.name}.staging")
    stamp = _read_stamp(staging) if staging.exists() else {}
    if stamp.get("sha256") != sha:  # absent, or extracted from another archive: start over
        if staging.exists():
            shutil.rmtree(staging)
        try:
            safe_extract(archive, staging, member_prefix=final.name)
        except FetchError as e:
            if recorded and lock_file is not None:  # don't enforce the checksum of a bad archive
                _forget_lock_entry(lock_file, archive.name, sha)
                raise type(e)(f"{e} (its sha256, recorded in {lock_file} just now, was removed again)") from None
            raise
        stamp = {"task": final.name, "archive": archive.name, "sha256": sha, "origin": origin,
                 "resampled_from": _source_rate(staging)}
        write_json(staging / STAMP, stamp)
    _finish(staging, final, origin=f"{origin} ({archive})", stamp=stamp,
            resample_from=stamp["resampled_from"], progress=progress)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)  # same filesystem: no extra space, no copy time
    except OSError:
        shutil.copy2(src, dst)


def _install_dir(src: Path, final: Path, *, progress: bool) -> None:
    """Install an extracted task directory `src` (any audio rate) as `final` at 16 kHz."""
    src_rate = _source_rate(src)
    if src.resolve() == final.resolve():  # already where it belongs: add 16 kHz audio in place
        if src_rate is not None:
            resample_task_dir(final, src_rate, TARGET_RATE, progress=progress)
        problem = _problem(final, TARGET_RATE)
        if problem:
            raise FetchError(f"{final}: not a complete HEAR task directory: {problem}")
        return
    meta_files = [p for p in src.iterdir() if p.is_file() and p.name != STAMP]
    if src_rate is None:  # 16 kHz already there: link or copy it into a temporary sibling, then rename
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.copy-", dir=final.parent))
        try:
            for p in meta_files:
                shutil.copy2(p, tmp / p.name)
            shutil.copytree(src / str(TARGET_RATE), tmp / str(TARGET_RATE), copy_function=_link_or_copy)
            stamp = {"task": final.name, "origin": str(src.resolve()), "resampled_from": None}
            _finish(tmp, final, origin=str(src), stamp=stamp, resample_from=None, progress=progress)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    # resampling is slow: a staging dir that a rerun resumes (the resampler skips finished splits)
    staging = final.with_name(f".{final.name}.staging")
    stamp = {"task": final.name, "origin": str(src.resolve()), "resampled_from": src_rate}
    if staging.exists() and _read_stamp(staging).get("origin") != stamp["origin"]:
        shutil.rmtree(staging)
    if not staging.exists():
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.staging-", dir=final.parent))
        for p in meta_files:
            shutil.copy2(p, tmp / p.name)
        write_json(tmp / STAMP, stamp)
        os.rename(tmp, staging)
    resample_task_dir(src, src_rate, TARGET_RATE, dst_task_dir=staging, progress=progress)
    _finish(staging, final, origin=str(src), stamp=stamp, resample_from=None, progress=progress)


def _archive_name(task: str, rate: int, source: dict, manifest: dict) -> tuple[str, str | None]:
    """(archive file name, manifest sha256 or None) for `task` at `rate`."""
    archives = manifest.get("tasks", {}).get(task, {}).get("archives", {})
    if source.get("name_pattern"):
        name = source["name_pattern"].format(task=task, sample_rate=rate)
    elif rate in archives:
        name = archives[rate]["name"]
    else:
        name = DEFAULT_NAME_PATTERN.format(task=task, sample_rate=rate)
    sha = next((a["sha256"] for a in archives.values() if a["name"] == name), None)
    return name, sha


def archive_url(task_dir_name: str, source: dict, manifest: dict) -> tuple[str, str, str | None]:
    """(URL, archive file name, manifest sha256 or None) for a `zenodo` or `url` source."""
    kind = source.get("kind")
    rate = int(source.get("sample_rate", 48000))
    name, sha = _archive_name(task_dir_name, rate, source, manifest)
    if kind == "zenodo":
        if rate != 48000:
            raise ValueError(f"Zenodo holds the HEAR tasks only at 48000 Hz, not {rate}; for 16 kHz archives "
                             "see msmbench.data.fetch's docstring (requester-pays buckets, 'local' source)")
        record = source.get("record", manifest.get("zenodo_record", ZENODO_RECORD))
        return ZENODO_URL.format(record=record, name=urllib.parse.quote(name)), name, sha
    if kind == "url":
        urls = source.get("urls") or {}
        if task_dir_name in urls:
            return urls[task_dir_name], name, sha
        if not source.get("base_url"):
            raise ValueError(f"source kind 'url' needs 'base_url' (or 'urls' with an entry for {task_dir_name})")
        return f"{source['base_url'].rstrip('/')}/{urllib.parse.quote(name)}", name, sha
    raise ValueError(f"archive_url: source kind {kind!r} downloads nothing; expected 'zenodo' or 'url'")


def _find_local(task: str, root: Path, manifest: dict) -> tuple[str, Path, str | None] | None:
    """In a local folder: an extracted task dir ('dir', path, None) or an archive ('archive', path, sha)."""
    dirs = [p for pattern in (task, f"*/{task}", f"*/*/{task}", f"*/*/*/{task}") for p in root.glob(pattern)
            if (p / "task_metadata.json").is_file()]
    if root.name == task and (root / "task_metadata.json").is_file():
        dirs.insert(0, root)
    if dirs:  # prefer one that already has 16 kHz audio
        return "dir", min(dirs, key=lambda p: (TARGET_RATE not in _audio_rates(p), len(p.parts))), None
    candidates = []
    for rate in (TARGET_RATE, 48000):
        name, sha = _archive_name(task, rate, {}, manifest)
        candidates += [(p, sha) for pattern in (name, f"*/{name}", f"*/*/{name}") for p in root.glob(pattern)]
    if not candidates:  # any archive that names the task, 16 kHz first
        found = sorted(root.glob(f"*{task}*.tar.gz")) + sorted(root.glob(f"*/*{task}*.tar.gz"))
        candidates = sorted(((p, None) for p in found), key=lambda c: f"-{TARGET_RATE}." not in c[0].name)
    return ("archive", candidates[0][0], candidates[0][1]) if candidates else None


def fetch_task(task_dir_name: str, out_root: str | os.PathLike, *, source: dict,
               manifest_path: str | os.PathLike | None, lock_path: str | os.PathLike | None,
               archive_dir: str | os.PathLike | None = None) -> Path:
    """Make `<out_root>/<task_dir_name>/` a HEAR task directory with 16 kHz audio; return its path.

    The result holds task_metadata.json, labelvocabulary.csv, `<split>.json` and
    `16000/<split>/*.wav` (PCM 16-bit mono), plus `.msmbench_fetch.json` recording the archive, its
    sha256 and whether the audio was resampled. It appears atomically; if it is already complete,
    nothing is done (and nothing is downloaded).

    `source` is one of
      {"kind": "zenodo", "record": 5887964, "sample_rate": 48000}: the 48 kHz archive from Zenodo,
          resampled to 16 kHz (record defaults to the manifest's `zenodo_record`);
      {"kind": "url", "base_url": "...", "sample_rate": 48000 | 16000, "name_pattern": "...",
          "urls": {task: url}}: any HTTP mirror (only `base_url` or `urls` is required);
      {"kind": "local", "dir": "..."}: a folder holding either the archives (any depth up to 2, named
          as in the manifest or containing the task name) or extracted task directories (up to 3
          levels down, e.g. `<dir>/hear-2021.0.6/tasks/<task>/`). Nothing is downloaded. The
          requester-pays 16 kHz buckets are used this way, see the module docstring. Extracted
          directories are copied (hard-linked where possible) or resampled into `out_root`; one that
          already is `<out_root>/<task>` gets its `16000/` audio added in place.
    `zenodo` and `url` sources may also set `retries`, `backoff`, `timeout`, `progress` (see download).

    Archive names and pinned checksums come from `manifest_path` (config/hear_manifest.yaml);
    unknown checksums are recorded in / enforced from `lock_path` (see download). Archives are kept
    in `archive_dir` (default `<out_root>/../archives`). Extraction resumes from a hidden
    `<out_root>/.<task>.staging/` left by an interrupted run of the same archive.

    Raises FetchError (or its subclasses ChecksumError, UnsafeArchiveError, CorruptArchiveError),
    each naming the URL or file and saying what to do.
    """
    out_root = Path(out_root).resolve()
    final = out_root / task_dir_name
    if final.is_dir() and _problem(final, TARGET_RATE) is None:
        log.info("%s: already complete", final)
        return final
    manifest = load_manifest(manifest_path) if manifest_path is not None else {}
    lock_file = Path(lock_path) if lock_path is not None else None
    kind = source.get("kind")
    progress = bool(source.get("progress", True))

    local = None
    if kind == "local":
        if not source.get("dir"):
            raise ValueError("source kind 'local' needs 'dir'")
        local_dir = Path(source["dir"])
        local = _find_local(task_dir_name, local_dir, manifest)
        if local is None:
            names = [_archive_name(task_dir_name, r, {}, manifest)[0] for r in (TARGET_RATE, 48000)]
            raise FetchError(f"{local_dir}: holds neither an extracted {task_dir_name}/ (with task_metadata.json) "
                             f"nor an archive ({' or '.join(names)}); put one there, or use a 'zenodo' source.")
        if local[0] == "dir" and local[1].resolve() == final.resolve():
            _install_dir(local[1], final, progress=progress)
            return final
    elif kind not in ("zenodo", "url"):
        raise ValueError(f"unknown source kind {kind!r}; expected 'zenodo', 'url' or 'local'")

    if final.exists() or final.is_symlink():
        raise FetchError(f"{final}: exists but is not a complete HEAR task directory at {TARGET_RATE} Hz "
                         f"({_problem(final, TARGET_RATE) if final.is_dir() else 'not a directory'}); "
                         "delete it and rerun.")
    out_root.mkdir(parents=True, exist_ok=True)

    if local is not None and local[0] == "dir":
        _install_dir(local[1], final, progress=progress)
    elif local is not None:
        archive, sha_pinned = local[1], local[2]
        got = sha256_file(archive)
        recorded = _verify(got, name=archive.name, origin=str(archive), sha256=sha_pinned, lock_file=lock_file,
                           on_mismatch=f"The file in {archive.parent} is not the archive msmbench expects: "
                                       "replace it, or remove it and use a 'zenodo' source.")
        _install_archive(archive, got, recorded, final, origin=str(archive), lock_file=lock_file,
                         progress=progress)
    else:
        url, name, sha_pinned = archive_url(task_dir_name, source, manifest)
        adir = Path(archive_dir) if archive_dir is not None else out_root.parent / "archives"
        got, recorded = _download(
            url, adir / name, sha256=sha_pinned, lock_file=lock_file, retries=int(source.get("retries", 5)),
            backoff=float(source.get("backoff", 1.0)), timeout=float(source.get("timeout", 60)),
            progress=progress)
        _install_archive(adir / name, got, recorded, final, origin=url, lock_file=lock_file, progress=progress)
    return final
