"""Walk, verify and export the provenance graph that `<output>.prov.json` records form.

- `audit(output)`: re-hash the output and, recursively, every input down to the raw data (task
  audio, the pretraining corpus listed with its sha256s); every mismatch is reported with the file.
- `cell_lineage(table, model, task)`: what one table cell came from: task, model, seeds, checkpoint,
  pretraining data and code version.
- `to_prov_json(outputs)`: the lineage as a W3C PROV-JSON document (entities, activities, agents,
  used / wasGeneratedBy / wasDerivedFrom / wasAssociatedWith).
- `sync_mtimes(root)`: after `dvc pull` (which gives every file a new modification time) set each
  output's mtime after its inputs' if, and only if, its content and its inputs' contents match its
  record; a mismatch makes the output look older than its inputs, so Snakemake reruns it. Content
  decides, not mtime.
"""

from __future__ import annotations

import csv
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

from msmbench.io import read_json
from msmbench.provenance.record import SUFFIX, content_hash, record_path

STALE_MTIME = 1.0  # seconds after the epoch: older than any input, so Snakemake reruns the job


@dataclass
class Finding:
    path: str
    problem: str


@dataclass
class AuditReport:
    root: str
    records: dict[str, dict] = field(default_factory=dict)  # output path -> record
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


class _Hasher:
    """content_hash with a cache: a task directory feeds many records but is hashed once per audit."""

    def __init__(self):
        self.hash = functools.lru_cache(maxsize=None)(content_hash)

    def __call__(self, path: str | os.PathLike) -> str:
        return self.hash(str(Path(path)))


def _check_listing(path: Path, report: AuditReport, hasher: _Hasher) -> None:
    """Raw data listed with sha256s: the synthetic corpus' files.csv and the shards' files.tsv."""
    if path.name == "files.csv":
        with open(path, newline="") as f:
            rows = [(path.parent / r["path"], r["sha256"]) for r in csv.DictReader(f) if r.get("sha256")]
    elif path.name == "meta.json" and (path.parent / "files.tsv").exists():
        rows = [(Path(line.split("\t")[0]), line.split("\t")[1])
                for line in (path.parent / "files.tsv").read_text().splitlines() if line]
    else:
        return
    for audio, expected in rows:
        if not audio.exists():
            report.findings.append(Finding(str(audio), f"listed in {path} but missing"))
        elif hasher(audio) != expected:
            report.findings.append(Finding(str(audio), f"sha256 differs from the one listed in {path}"))


def audit(output: str | os.PathLike, hasher: _Hasher | None = None, report: AuditReport | None = None) -> AuditReport:
    """Verify `output` and everything it was made from; returns the report (report.ok is False on any mismatch)."""
    hasher = hasher or _Hasher()
    output = Path(output)
    report = report or AuditReport(str(output))
    if str(output) in report.records:
        return report
    rec_path = record_path(output)
    if not output.exists():
        report.findings.append(Finding(str(output), "missing"))
        return report
    if not rec_path.exists():
        report.findings.append(Finding(str(output), f"no provenance record ({rec_path.name})"))
        return report
    record = read_json(rec_path)
    report.records[str(output)] = record
    if hasher(output) != record["sha256"]:
        report.findings.append(Finding(str(output), "content differs from its provenance record (sha256)"))
    _check_listing(output, report, hasher)
    for entry in record["inputs"]:
        path = Path(entry["path"])
        if not path.exists():
            report.findings.append(Finding(str(path), f"input of {output} is missing"))
            continue
        if hasher(path) != entry["sha256"]:
            report.findings.append(Finding(str(path), f"content differs from what {output} was made from"))
        if record_path(path).exists():  # raw data (or data pulled without its records) ends the walk
            audit(path, hasher, report)
        else:
            _check_listing(path, report, hasher)
    return report


def audit_all(outputs: list[str | os.PathLike]) -> AuditReport:
    hasher, report = _Hasher(), AuditReport(", ".join(map(str, outputs)))
    for out in outputs:
        audit(out, hasher, report)
    return report


def final_outputs(root: str | os.PathLike = ".") -> list[Path]:
    """The paper's tables, macros and figures under `root` (what `audit --all` checks)."""
    root = Path(root)
    outs = [root / "paper" / "tables" / f"results.{ext}" for ext in ("csv", "md", "tex")]
    outs += [root / "paper" / "tables" / "numbers.tex"]
    outs += sorted(p for p in (root / "figures").glob("*.pdf"))
    return [p for p in outs if p.exists() or record_path(p).exists()]


# --- lineage of one table cell -------------------------------------------------------------------
def cell_lineage(report: AuditReport, model: str, task: str) -> dict:
    """From an audited table: the score file of (model, task) and what it came from."""
    score = next((p for p, r in report.records.items() if r["stage"] == "probe"
                  and Path(p).parent.name == model and Path(p).stem == task), None)
    if score is None:
        raise KeyError(f"no score for model {model!r} and task {task!r} in the lineage of {report.root}")
    rec = report.records[score]
    out = {"task": task, "model": model, "score_file": score, "code": rec["code"],
           "probe_settings": rec["settings"].get("probe"), "seeds": None, "checkpoint": None, "pretraining_data": None}
    try:
        scores = read_json(score)
        out["seeds"] = [s["seed"] for s in scores["seeds"]]
        out["mean"], out["ci95"], out["metric"] = scores["mean"], scores["ci95"], scores["metric"]
    except (OSError, ValueError, KeyError):
        pass
    for entry in rec["inputs"]:
        emb = report.records.get(entry["path"])
        if emb and emb["stage"] == "embed":
            for e in emb["inputs"]:
                if e["path"].endswith("model.safetensors"):
                    out["checkpoint"] = {"path": e["path"], "sha256": e["sha256"]}
                    ck = report.records.get(e["path"], {})
                    out["pretraining_data"] = ck.get("inputs") or None
                    out["checkpoint_code"] = ck.get("code")
        elif entry["path"].rstrip("/").endswith(task):
            out["task_data"] = {"path": entry["path"], "sha256": entry["sha256"]}
    return out


def format_lineage(report: AuditReport, output: str | None = None, depth: int = 0, seen=None) -> list[str]:
    """An indented tree: output, stage, sha256 prefix, code version; inputs below."""
    seen = set() if seen is None else seen
    output = output or report.root.split(", ")[0]
    rec = report.records.get(output)
    pad = "  " * depth
    if rec is None:
        return [f"{pad}{output}  (raw data)"]
    code = rec["code"]
    commit = (code.get("git_commit") or "unknown")[:10] + ("+dirty" if code.get("dirty") else "")
    lines = [f"{pad}{output}  [{rec['stage']}] sha256 {rec['sha256'][:12]}  code {commit}  ended {rec['ended']}"]
    if output in seen:
        return [lines[0] + "  (shown above)"]
    seen.add(output)
    inputs = rec["inputs"]
    shown = inputs if len(inputs) <= 8 else inputs[:3]
    for entry in shown:
        lines += format_lineage(report, entry["path"], depth + 1, seen)
    if len(inputs) > len(shown):
        lines.append(f"{pad}  ... and {len(inputs) - len(shown)} more inputs (all verified)")
    return lines


# --- W3C PROV-JSON -------------------------------------------------------------------------------
def to_prov_json(report: AuditReport) -> dict:
    """The audited lineage as PROV-JSON (https://www.w3.org/submissions/prov-json/)."""
    doc = {"prefix": {"msm": "https://github.com/msmbench/msmbench#", "file": "file:"},
           "entity": {}, "activity": {}, "agent": {}, "used": {}, "wasGeneratedBy": {},
           "wasDerivedFrom": {}, "wasAssociatedWith": {}}
    eid = lambda p: f"file:{p}"  # noqa: E731
    n = 0
    for out, rec in report.records.items():
        code = rec["code"]
        agent = f"msm:msmbench-{(code.get('git_commit') or code.get('msmbench'))}"
        doc["agent"][agent] = {"prov:type": "prov:SoftwareAgent", "msm:version": code.get("msmbench"),
                               "msm:git_commit": code.get("git_commit"), "msm:dirty": code.get("dirty")}
        act = f"msm:{rec['stage']}-{rec['sha256'][:16]}"
        doc["activity"][act] = {"prov:startTime": rec["started"], "prov:endTime": rec["ended"],
                                "msm:stage": rec["stage"], "msm:seed": rec.get("seed"),
                                "msm:settings": _json_string(rec.get("settings")),
                                "msm:device": _json_string(rec.get("device"))}
        doc["entity"][eid(out)] = {"msm:sha256": rec["sha256"]}
        n += 1
        doc["wasGeneratedBy"][f"_:g{n}"] = {"prov:entity": eid(out), "prov:activity": act}
        doc["wasAssociatedWith"][f"_:a{n}"] = {"prov:activity": act, "prov:agent": agent}
        for i, entry in enumerate(rec["inputs"]):
            doc["entity"].setdefault(eid(entry["path"]), {"msm:sha256": entry["sha256"]})
            doc["used"][f"_:u{n}_{i}"] = {"prov:activity": act, "prov:entity": eid(entry["path"])}
            doc["wasDerivedFrom"][f"_:d{n}_{i}"] = {"prov:generatedEntity": eid(out), "prov:usedEntity": eid(entry["path"])}
    return doc


def _json_string(value) -> str:
    import json

    return json.dumps(value, sort_keys=True, default=str)


# --- modification times after dvc pull -----------------------------------------------------------
def sync_mtimes(root: str | os.PathLike = ".") -> dict[str, int]:
    """Order outputs' mtimes by their records (see module doc). Returns counts {"fresh", "stale"}.

    Records hold paths relative to the workflow directory, so this runs with `root` as the working
    directory.
    """
    cwd = os.getcwd()
    os.chdir(root)
    try:
        records = {}
        for rec_file in Path(".").rglob(f"*{SUFFIX}"):
            if {".snakemake", ".dvc", ".git"} & set(rec_file.parts):
                continue
            output = rec_file.with_name(rec_file.name[: -len(SUFFIX)])
            if output.exists():
                records[str(output)] = read_json(rec_file)
        hasher, done, counts = _Hasher(), {}, {"fresh": 0, "stale": 0}

        def settle(out: str) -> float:
            if out not in done:
                rec = records[out]
                newest, ok = 0.0, hasher(out) == rec["sha256"]
                for entry in rec["inputs"]:
                    path = str(Path(entry["path"]))
                    if not Path(path).exists():
                        ok = False
                        continue
                    newest = max(newest, settle(path) if path in records else _tree_mtime(Path(path)))
                    ok = ok and hasher(path) == entry["sha256"]
                done[out] = max(newest + 1.0, _tree_mtime(Path(out))) if ok else STALE_MTIME
                _set_mtime(Path(out), done[out])
                counts["fresh" if ok else "stale"] += 1
            return done[out]

        for out in sorted(records):
            settle(out)
    finally:
        os.chdir(cwd)
    return counts


def _tree_mtime(path: Path) -> float:
    if path.is_dir():
        return max([path.stat().st_mtime] + [p.stat().st_mtime for p in path.rglob("*")])
    return path.stat().st_mtime


def _set_mtime(path: Path, mtime: float) -> None:
    if path.is_dir():  # a directory output: Snakemake compares the newest file inside
        for p in path.rglob("*"):
            os.utime(p, (mtime, mtime))
    os.utime(path, (mtime, mtime))
