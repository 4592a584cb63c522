"""msmbench.data.fetch and msmbench.data.resample against a loopback HTTP server (no network)."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tarfile
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from httpserver import FileServer
from msmbench.data import fetch as F
from msmbench.data.fetch import (ChecksumError, CorruptArchiveError, FetchError, UnsafeArchiveError,
                                  archive_url, download, fetch_task, load_manifest, read_lock, safe_extract)
from msmbench.data.resample import MARKER, resample_array, resample_task_dir, resampled_length

TASK = "esc50-v2.0.0-full"
NAME48 = f"hear2021-{TASK}-48000.tar.gz"
SPLITS = ("fold00", "fold01")
LENGTHS = (4800, 4801)  # 0.1 s and one sample more: 1600 and round(1600.33) = 1600 at 16 kHz


# ----------------------------------------------------------------------------- fixtures

def sine(n: int, rate: int, hz: float = 440.0) -> np.ndarray:
    return 0.5 * np.sin(2 * np.pi * hz * np.arange(n) / rate)


def make_task_dir(root: Path, task: str = TASK, rate: int = 48000) -> Path:
    """A tiny HEAR task directory: two folds, two clips each, audio at `rate`."""
    td = root / task
    (td / str(rate)).mkdir(parents=True)
    meta = {"task_name": task.split("-")[0], "version": "v2.0.0", "embedding_type": "scene",
            "prediction_type": "multiclass", "split_mode": "presplit_kfold", "nfolds": 2,
            "sample_duration": None, "evaluation": ["top1_acc"], "mode": "full", "splits": list(SPLITS)}
    (td / "task_metadata.json").write_text(json.dumps(meta, indent=True))
    (td / "labelvocabulary.csv").write_text("idx,label\n0,dog\n1,rain\n")
    for split in SPLITS:
        (td / str(rate) / split).mkdir()
        labels = {}
        for i, (n, label) in enumerate(zip(LENGTHS, ("dog", "rain"))):
            fname = f"{split}-{i}.wav"
            sf.write(td / str(rate) / split / fname, sine(n * rate // 48000, rate), rate, subtype="PCM_16")
            labels[fname] = [label]
        (td / f"{split}.json").write_text(json.dumps(labels, indent=True))
    return td


def tar_gz(task_dir: Path, prefix: str = "hear-2021.0.6/tasks") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(task_dir, arcname=f"{prefix}/{task_dir.name}")
    return buf.getvalue()


def evil_tar(members: list[tarfile.TarInfo]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for m in members:
            data = b"pwned\n" if m.isreg() else None
            if data is not None:
                m.size = len(data)
            tf.addfile(m, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def info(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type, m.linkname, m.mode = kind, linkname, 0o755 if kind == tarfile.DIRTYPE else 0o644
    return m


@pytest.fixture(scope="module")
def archive48(tmp_path_factory) -> bytes:
    return tar_gz(make_task_dir(tmp_path_factory.mktemp("src")))


@pytest.fixture
def manifest(tmp_path) -> Path:
    path = tmp_path / "hear_manifest.yaml"
    path.write_text(yaml.safe_dump({"zenodo_record": 5887964, "tasks": {TASK: {"archives": {
        48000: {"name": NAME48, "sha256": None},
        16000: {"name": f"hear2021-{TASK}-16000.tar.gz", "sha256": None}}}}}))
    return path


def pin(manifest: Path, sha: str) -> None:
    data = yaml.safe_load(manifest.read_text())
    data["tasks"][TASK]["archives"][48000]["sha256"] = sha
    manifest.write_text(yaml.safe_dump(data))


def url_source(server: FileServer, **kw) -> dict:
    return {"kind": "url", "base_url": server.base_url, "sample_rate": 48000, "progress": False,
            "backoff": 0.0, "retries": 3, "timeout": 10, **kw}


def assert_installed_16k(task_dir: Path) -> None:
    assert (task_dir / "task_metadata.json").is_file() and (task_dir / "labelvocabulary.csv").is_file()
    assert not (task_dir / "48000").exists()
    for split in SPLITS:
        labels = json.loads((task_dir / f"{split}.json").read_text())
        assert sorted(labels) == [f"{split}-0.wav", f"{split}-1.wav"]
        for fname in labels:
            x, sr = sf.read(task_dir / "16000" / split / fname, dtype="float64")
            meta = sf.info(task_dir / "16000" / split / fname)
            assert (sr, meta.channels, meta.subtype) == (16000, 1, "PCM_16")
            assert len(x) == 1600
            ref = sine(1600, 16000)
            # a 440 Hz tone survives resampling (edges excluded: the filter's start-up transient)
            assert np.max(np.abs(x[100:-100] - ref[100:-100])) < 2e-3


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


# ----------------------------------------------------------------------------- (a) normal download

def test_url_source_downloads_extracts_resamples_and_records_sha(tmp_path, manifest, archive48, caplog):
    lock = tmp_path / "hear.lock.yaml"
    with FileServer({NAME48: archive48}) as srv:
        with caplog.at_level(logging.WARNING, logger="msmbench.data.fetch"):
            out = fetch_task(TASK, tmp_path / "tasks", source=url_source(srv), manifest_path=manifest,
                             lock_path=lock)
        assert out == (tmp_path / "tasks" / TASK).resolve()
        assert_installed_16k(out)
        sha = hashlib.sha256(archive48).hexdigest()
        assert read_lock(lock) == {NAME48: sha}
        assert any("recorded" in r.getMessage() and "enforced" in r.getMessage() for r in caplog.records)
        stamp = json.loads((out / F.STAMP).read_text())
        assert stamp["sha256"] == sha and stamp["resampled_from"] == 48000
        assert (tmp_path / "archives" / NAME48).read_bytes() == archive48
        assert leftovers(tmp_path / "tasks") == [TASK]  # no staging or temp dirs left
        assert len(srv.requests) == 1 and srv.requests[0]["range"] is None
        # a second call finds the task complete and does not touch the network
        fetch_task(TASK, tmp_path / "tasks", source=url_source(srv), manifest_path=manifest, lock_path=lock)
        assert len(srv.requests) == 1


def test_interrupted_resampling_resumes_without_downloading_again(tmp_path, manifest, archive48, monkeypatch):
    import msmbench.data.resample as R

    calls = []
    real = R.resample_file

    def flaky(src, dst, src_rate, dst_rate):
        calls.append(src.name)
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed in the middle of fold01
        real(src, dst, src_rate, dst_rate)

    lock = tmp_path / "lock.yaml"
    with FileServer({NAME48: archive48}) as srv:
        monkeypatch.setattr(R, "resample_file", flaky)
        with pytest.raises(KeyboardInterrupt):
            fetch_task(TASK, tmp_path / "tasks", source=url_source(srv), manifest_path=manifest, lock_path=lock)
        assert leftovers(tmp_path / "tasks") == [f".{TASK}.staging"]  # nothing that looks finished
        monkeypatch.setattr(R, "resample_file", real)
        calls.clear()
        out = fetch_task(TASK, tmp_path / "tasks", source=url_source(srv), manifest_path=manifest, lock_path=lock)
        assert len(srv.requests) == 1  # the verified archive was reused
    assert_installed_16k(out)
    assert leftovers(tmp_path / "tasks") == [TASK]


def test_url_source_with_16k_archive_needs_no_resampling(tmp_path, manifest):
    archive16 = tar_gz(make_task_dir(tmp_path / "src", rate=16000), prefix="tasks")
    with FileServer({f"mirror-{TASK}-16000.tar.gz": archive16}) as srv:
        src = url_source(srv, sample_rate=16000, name_pattern="mirror-{task}-{sample_rate}.tar.gz")
        out = fetch_task(TASK, tmp_path / "tasks", source=src, manifest_path=manifest, lock_path=None)
    assert json.loads((out / F.STAMP).read_text())["resampled_from"] is None
    assert not (out / "16000" / "fold00" / MARKER).exists()  # the archive's own files
    assert sf.info(out / "16000" / "fold00" / "fold00-0.wav").frames == 1600


# ----------------------------------------------------------------------------- (b) resume

def test_connection_dropped_mid_body_resumes_with_range(tmp_path, archive48):
    half = len(archive48) // 2
    with FileServer({NAME48: archive48}) as srv:
        srv.drop_after, srv.drops = half, 1
        dest = tmp_path / "dl" / NAME48
        sha = download(srv.url(NAME48), dest, sha256=hashlib.sha256(archive48).hexdigest(), lock_file=None,
                       backoff=0.0, progress=False)
    assert dest.read_bytes() == archive48 and sha == hashlib.sha256(archive48).hexdigest()
    assert [r["range"] for r in srv.requests] == [None, f"bytes={half}-"]
    assert not dest.with_name(NAME48 + ".part").exists()


def test_read_timeout_is_retried_with_range(tmp_path, archive48):
    with FileServer({NAME48: archive48}) as srv:
        srv.stall_after, srv.stalls, srv.stall_s = 2000, 1, 1.0
        download(srv.url(NAME48), tmp_path / NAME48, sha256=hashlib.sha256(archive48).hexdigest(),
                 lock_file=None, backoff=0.0, timeout=0.3, progress=False)
    assert [r["range"] for r in srv.requests] == [None, "bytes=2000-"]
    assert (tmp_path / NAME48).read_bytes() == archive48


def test_5xx_is_retried_then_succeeds(tmp_path, archive48):
    with FileServer({NAME48: archive48}) as srv:
        srv.status, srv.status_times = 503, 2
        download(srv.url(NAME48), tmp_path / NAME48, sha256=None, lock_file=tmp_path / "lock.yaml",
                 backoff=0.0, progress=False)
    assert len(srv.requests) == 3 and (tmp_path / NAME48).read_bytes() == archive48


def test_5xx_gives_up_after_retries_and_keeps_partial(tmp_path, archive48):
    with FileServer({NAME48: archive48}) as srv:
        srv.status, srv.status_times = 500, -1
        with pytest.raises(FetchError, match="after 2 retries") as e:
            download(srv.url(NAME48), tmp_path / NAME48, sha256=None, lock_file=None, retries=2,
                     backoff=0.0, progress=False)
    assert srv.url(NAME48) in str(e.value) and len(srv.requests) == 3


def test_complete_partial_file_gets_416_and_is_verified(tmp_path, archive48):
    (tmp_path / (NAME48 + ".part")).write_bytes(archive48)
    with FileServer({NAME48: archive48}) as srv:
        download(srv.url(NAME48), tmp_path / NAME48, sha256=hashlib.sha256(archive48).hexdigest(),
                 lock_file=None, backoff=0.0, progress=False)
    assert [r["range"] for r in srv.requests] == [f"bytes={len(archive48)}-"]
    assert (tmp_path / NAME48).read_bytes() == archive48


# ----------------------------------------------------------------------------- (h) Range ignored

def test_server_ignoring_range_restarts_from_zero_and_verifies(tmp_path, manifest, archive48):
    pin(manifest, hashlib.sha256(archive48).hexdigest())
    with FileServer({NAME48: archive48}) as srv:
        srv.drop_after, srv.drops, srv.ignore_range = 1000, 1, True
        out = fetch_task(TASK, tmp_path / "tasks", source=url_source(srv), manifest_path=manifest,
                         lock_path=tmp_path / "lock.yaml")
    assert [r["range"] for r in srv.requests] == [None, "bytes=1000-"]
    assert (tmp_path / "archives" / NAME48).read_bytes() == archive48
    assert_installed_16k(out)
    assert not (tmp_path / "lock.yaml").exists()  # pinned in the manifest: nothing to record


# ----------------------------------------------------------------------------- (c) checksum

def test_wrong_manifest_checksum_raises_and_leaves_nothing(tmp_path, manifest, archive48):
    pin(manifest, "0" * 64)
    with FileServer({NAME48: archive48}) as srv:
        with pytest.raises(ChecksumError) as e:
            fetch_task(TASK, tmp_path / "tasks", source=url_source(srv), manifest_path=manifest,
                       lock_path=tmp_path / "lock.yaml")
    msg = str(e.value)
    assert srv.url(NAME48) in msg and "0" * 64 in msg and hashlib.sha256(archive48).hexdigest() in msg
    assert "hear_manifest.yaml" in msg and "rerun" in msg
    assert leftovers(tmp_path / "archives") == [] and leftovers(tmp_path / "tasks") == []


def test_lock_file_checksum_is_enforced(tmp_path, manifest, archive48):
    lock = tmp_path / "lock.yaml"
    lock.write_text(yaml.safe_dump({NAME48: "a" * 64}))
    with FileServer({NAME48: archive48}) as srv:
        with pytest.raises(ChecksumError) as e:
            fetch_task(TASK, tmp_path / "tasks", source=url_source(srv), manifest_path=manifest, lock_path=lock)
    assert srv.url(NAME48) in str(e.value) and str(lock) in str(e.value) and NAME48 in str(e.value)
    assert read_lock(lock) == {NAME48: "a" * 64}
    assert leftovers(tmp_path / "archives") == [] and leftovers(tmp_path / "tasks") == []


# ----------------------------------------------------------------------------- (d) corrupt archive

@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_corrupt_archive_raises_naming_it_and_forgets_recorded_sha(tmp_path, manifest, archive48, kind):
    bad = os.urandom(5000) if kind == "garbage" else archive48[: len(archive48) * 2 // 3]
    lock = tmp_path / "lock.yaml"
    with FileServer({NAME48: bad}) as srv:
        with pytest.raises(FetchError) as e:
            fetch_task(TASK, tmp_path / "tasks", source=url_source(srv), manifest_path=manifest, lock_path=lock)
    assert isinstance(e.value, CorruptArchiveError)
    assert NAME48 in str(e.value) and "delete it and rerun" in str(e.value)
    assert read_lock(lock) == {}  # the bad archive's checksum is not enforced later
    assert leftovers(tmp_path / "tasks") == []


def test_archive_of_another_task_is_rejected(tmp_path, manifest):
    other = tar_gz(make_task_dir(tmp_path / "src", task="mridangam_tonic-v1.5-full"))
    with FileServer({NAME48: other}) as srv:
        with pytest.raises(FetchError, match="another task") as e:
            fetch_task(TASK, tmp_path / "tasks", source=url_source(srv), manifest_path=manifest,
                       lock_path=tmp_path / "lock.yaml")
    assert NAME48 in str(e.value) and leftovers(tmp_path / "tasks") == []


# ----------------------------------------------------------------------------- (e) unsafe archives

ABS_TARGET = f"/tmp/msmbench-evil-{uuid.uuid4().hex}"
UNSAFE = {
    "dotdot": [info("task/a.txt"), info("task/../../evil")],
    "absolute": [info("task/a.txt"), info(ABS_TARGET)],
    "symlink_abs": [info("task/etc", tarfile.SYMTYPE, "/etc")],
    "symlink_up": [info("task/up", tarfile.SYMTYPE, "../../..")],
    "hardlink_abs": [info("task/passwd", tarfile.LNKTYPE, "/etc/passwd")],
    "hardlink_up": [info("task/x", tarfile.LNKTYPE, "../outside")],
    "chardev": [info("task/null", tarfile.CHRTYPE)],
    "fifo": [info("task/pipe", tarfile.FIFOTYPE)],
    # a link checked while harmless, then redirected by a later one: l -> p/.. is the extraction
    # dir until p -> . turns it into its parent; writing l/evil must then be refused
    "symlink_chain": [info("l", tarfile.SYMTYPE, "p/.."), info("p", tarfile.SYMTYPE, "."), info("l/evil")],
    # same trick without a write through it: caught by the final sweep over all links
    "symlink_redirected": [info("task", tarfile.DIRTYPE), info("task/l", tarfile.SYMTYPE, "p/.."),
                           info("task/p", tarfile.SYMTYPE, ".")],
}
OFFENDER = {"dotdot": "task/../../evil", "absolute": ABS_TARGET, "symlink_abs": "task/etc",
            "symlink_up": "task/up", "hardlink_abs": "task/passwd", "hardlink_up": "task/x",
            "chardev": "task/null", "fifo": "task/pipe", "symlink_chain": "l/evil", "symlink_redirected": "task/l"}


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_safe_extract_rejects_unsafe_members(tmp_path, case):
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(evil_tar(UNSAFE[case]))
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(UnsafeArchiveError) as e:
        safe_extract(archive, sandbox / "out", member_prefix="task")
    assert str(archive) in str(e.value) and repr(OFFENDER[case]) in str(e.value)
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert after == before  # nothing inside the sandbox (no temp dir either) and nothing outside it
    assert not os.path.lexists(ABS_TARGET) and not (tmp_path / "evil").exists()


def test_fetch_task_rejects_traversal_archive(tmp_path, manifest):
    evil = evil_tar([info(f"hear/tasks/{TASK}", tarfile.DIRTYPE), info(f"hear/tasks/{TASK}/../../../evil")])
    with FileServer({NAME48: evil}) as srv:
        with pytest.raises(UnsafeArchiveError) as e:
            fetch_task(TASK, tmp_path / "tasks", source=url_source(srv), manifest_path=manifest,
                       lock_path=tmp_path / "lock.yaml")
    assert NAME48 in str(e.value) and "'..'" in str(e.value)
    assert leftovers(tmp_path / "tasks") == [] and not (tmp_path / "evil").exists()


def test_safe_extract_keeps_inside_links_and_selects_prefix(tmp_path):
    archive = tmp_path / "ok.tar.gz"
    members = [info("top/tasks/t", tarfile.DIRTYPE), info("top/tasks/t/a.txt"),
               info("top/tasks/t/link", tarfile.SYMTYPE, "a.txt"),
               info("top/tasks/t/hard", tarfile.LNKTYPE, "top/tasks/t/a.txt"), info("top/other.txt")]
    archive.write_bytes(evil_tar(members))
    for prefix, name in [("top/tasks/t", "exact"), ("t", "bare")]:
        out = safe_extract(archive, tmp_path / name, member_prefix=prefix)
        assert sorted(p.name for p in out.iterdir()) == ["a.txt", "hard", "link"]
        assert (out / "link").read_text() == "pwned\n" and (out / "hard").read_text() == "pwned\n"
    with pytest.raises(FileExistsError):
        safe_extract(archive, tmp_path / "exact")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare", "exact", "ok.tar.gz"]


# ----------------------------------------------------------------------------- (f) 404

def test_404_is_not_retried_and_says_what_to_do(tmp_path, manifest):
    with FileServer({}) as srv:
        with pytest.raises(FetchError) as e:
            fetch_task(TASK, tmp_path / "tasks", source=url_source(srv), manifest_path=manifest,
                       lock_path=tmp_path / "lock.yaml")
    msg = str(e.value)
    assert srv.url(NAME48) in msg and "404" in msg and "local" in msg and "task name/version" in msg
    assert len(srv.requests) == 1
    assert leftovers(tmp_path / "tasks") == [] and leftovers(tmp_path / "archives") == []


# ----------------------------------------------------------------------------- (g) local sources

@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a local source must not use the network")
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_local_extracted_48k_dir_is_resampled_without_http(tmp_path, manifest, no_network):
    make_task_dir(tmp_path / "local" / "hear-2021.0.6" / "tasks")
    out = fetch_task(TASK, tmp_path / "tasks", source={"kind": "local", "dir": str(tmp_path / "local"),
                                                       "progress": False},
                     manifest_path=manifest, lock_path=tmp_path / "lock.yaml")
    assert_installed_16k(out)
    assert leftovers(tmp_path / "tasks") == [TASK] and not (tmp_path / "lock.yaml").exists()
    assert (tmp_path / "local" / "hear-2021.0.6" / "tasks" / TASK / "48000").is_dir()  # source untouched
    assert not (tmp_path / "local" / "hear-2021.0.6" / "tasks" / TASK / "16000").exists()


def test_local_extracted_16k_dir_is_used_as_is(tmp_path, manifest, no_network):
    src = make_task_dir(tmp_path / "local", rate=16000)
    out = fetch_task(TASK, tmp_path / "tasks", source={"kind": "local", "dir": str(tmp_path / "local")},
                     manifest_path=manifest, lock_path=None)
    for split in SPLITS:
        for f in (src / "16000" / split).iterdir():
            assert (out / "16000" / split / f.name).read_bytes() == f.read_bytes()
    assert json.loads((out / F.STAMP).read_text())["resampled_from"] is None


def test_local_dir_that_is_out_root_gets_16k_in_place(tmp_path, manifest, no_network):
    make_task_dir(tmp_path / "tasks")
    out = fetch_task(TASK, tmp_path / "tasks", source={"kind": "local", "dir": str(tmp_path / "tasks"),
                                                       "progress": False},
                     manifest_path=manifest, lock_path=None)
    assert (out / "16000" / "fold00" / MARKER).is_file() and (out / "48000").is_dir()


def test_local_archive_is_verified_and_extracted_without_http(tmp_path, manifest, archive48, no_network):
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / NAME48).write_bytes(archive48)
    lock = tmp_path / "lock.yaml"
    out = fetch_task(TASK, tmp_path / "tasks", source={"kind": "local", "dir": str(tmp_path / "local"),
                                                       "progress": False},
                     manifest_path=manifest, lock_path=lock)
    assert_installed_16k(out)
    assert read_lock(lock) == {NAME48: hashlib.sha256(archive48).hexdigest()}


def test_local_dir_without_the_task_says_so(tmp_path, manifest, no_network):
    (tmp_path / "local").mkdir()
    with pytest.raises(FetchError) as e:
        fetch_task(TASK, tmp_path / "tasks", source={"kind": "local", "dir": str(tmp_path / "local")},
                   manifest_path=manifest, lock_path=None)
    assert str(tmp_path / "local") in str(e.value) and NAME48 in str(e.value)


# ----------------------------------------------------------------------------- resampling, manifest

@pytest.mark.parametrize("n", [0, 1, 2, 3, 4800, 4801, 4802])
def test_resampled_length_is_rounded_exactly(n):
    assert len(resample_array(np.ones(n), 48000, 16000)) == resampled_length(n, 48000, 16000) == round(n / 3)
    assert len(resample_array(np.ones(n), 44100, 16000)) == round(n * 16000 / 44100)


def test_resample_task_dir_skips_finished_splits(tmp_path):
    td = make_task_dir(tmp_path)
    resample_task_dir(td, 48000, 16000, progress=False)
    first = (td / "16000" / "fold00" / "fold00-0.wav").stat().st_mtime_ns
    (td / "16000" / "fold01" / MARKER).unlink()  # as if a crash had hit before the marker...
    with pytest.raises(FileExistsError, match="marker"):  # ...which rename makes impossible; refuse to guess
        resample_task_dir(td, 48000, 16000, progress=False)
    assert (td / "16000" / "fold00" / "fold00-0.wav").stat().st_mtime_ns == first


def test_zenodo_url_and_manifest(tmp_path):
    m = load_manifest(Path(__file__).parents[1] / "config" / "hear_manifest.yaml")
    assert len(m["tasks"]) == 10 and all(a["sha256"] is None for t in m["tasks"].values()
                                         for a in t["archives"].values())
    url, name, sha = archive_url("fsd50k-v1.0-full", {"kind": "zenodo"}, m)
    assert url == "https://zenodo.org/records/5887964/files/hear2021-fsd50k-v1.0-full-48000.tar.gz?download=1"
    assert (name, sha) == ("hear2021-fsd50k-v1.0-full-48000.tar.gz", None)
    with pytest.raises(ValueError, match="48000"):
        archive_url("fsd50k-v1.0-full", {"kind": "zenodo", "sample_rate": 16000}, m)
    dup = tmp_path / "dup.yaml"
    dup.write_text("tasks:\n  a: {archives: {48000: {name: x, sha256: null}}}\n  a: {}\n")
    with pytest.raises(ValueError, match="duplicate key"):
        load_manifest(dup)
