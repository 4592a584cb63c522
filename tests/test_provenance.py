"""Provenance records, audit, PROV-JSON export and content-ordered modification times."""

import os

from msmbench.provenance.audit import STALE_MTIME, audit, sync_mtimes, to_prov_json
from msmbench.provenance.record import content_hash, read_record, write_record


def chain(tmp_path, monkeypatch):
    """raw.txt -> mid.txt -> out.txt, each step recorded (paths relative to tmp_path, as the workflow's)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "a.wav").write_bytes(b"audio")
    (tmp_path / "mid.txt").write_text("mid")
    write_record("mid.txt", "stage1", inputs=["raw"], settings={"k": 1}, seed=3)
    (tmp_path / "out.txt").write_text("out")
    write_record("out.txt", "stage2", inputs=["mid.txt"])


def test_record_contents(tmp_path, monkeypatch):
    chain(tmp_path, monkeypatch)
    rec = read_record("mid.txt")
    assert rec["sha256"] == content_hash("mid.txt") and rec["stage"] == "stage1" and rec["seed"] == 3
    assert rec["inputs"][0]["sha256"] == content_hash("raw") and "torch" in rec["packages"]
    assert set(rec["code"]) == {"msmbench", "git_commit", "dirty"} and rec["started"] <= rec["ended"]
    assert read_record("out.txt")["inputs"][0]["record"] == "mid.txt.prov.json"  # lineage is a graph


def test_audit_walks_to_raw_data_and_names_the_changed_file(tmp_path, monkeypatch):
    chain(tmp_path, monkeypatch)
    report = audit("out.txt")
    assert report.ok and set(report.records) == {"out.txt", "mid.txt"}
    (tmp_path / "raw" / "a.wav").write_bytes(b"audio!")  # raw data changed under the pipeline
    report = audit("out.txt")
    assert not report.ok and report.findings[0].path == "raw" and "mid.txt" in report.findings[0].problem


def test_prov_json_export(tmp_path, monkeypatch):
    chain(tmp_path, monkeypatch)
    doc = to_prov_json(audit("out.txt"))
    assert "file:out.txt" in doc["entity"] and "file:raw" in doc["entity"]
    derived = {(d["prov:generatedEntity"], d["prov:usedEntity"]) for d in doc["wasDerivedFrom"].values()}
    assert ("file:out.txt", "file:mid.txt") in derived and ("file:mid.txt", "file:raw") in derived
    assert all(a["prov:startTime"] for a in doc["activity"].values()) and doc["agent"]


def test_sync_mtimes_orders_outputs_after_inputs_and_marks_mismatches_stale(tmp_path, monkeypatch):
    chain(tmp_path, monkeypatch)
    for p in ("mid.txt", "out.txt"):
        os.utime(p, (100.0, 100.0))  # as after a pull: outputs not newer than inputs
    assert sync_mtimes(tmp_path) == {"fresh": 2, "stale": 0}
    assert os.path.getmtime("raw/a.wav") < os.path.getmtime("mid.txt") < os.path.getmtime("out.txt")
    (tmp_path / "mid.txt").write_text("different")  # content no longer matches its record
    assert sync_mtimes(tmp_path) == {"fresh": 0, "stale": 2}  # mid itself, and out (made from the old mid)
    assert os.path.getmtime("mid.txt") == STALE_MTIME
