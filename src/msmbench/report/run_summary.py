"""The run summary printed when the workflow finishes: what ran, how long, where the results are.

Reads the per-job timing files that Snakemake's `benchmark:` directive writes under
logs/benchmarks/<stage>/... (columns s, max_rss, cpu_time, ...).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path


def _read_benchmark(path: Path) -> dict:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return rows[-1] if rows else {}


def stage_times(bench_dir: str | Path) -> dict[str, dict]:
    """stage -> {"jobs", "seconds" (sum of job wall times), "max_rss_mb"}."""
    bench_dir = Path(bench_dir)
    stages: dict[str, dict] = defaultdict(lambda: {"jobs": 0, "seconds": 0.0, "max_rss_mb": 0.0})
    for path in sorted(bench_dir.rglob("*.tsv")):
        rel = path.relative_to(bench_dir)
        stage = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        row = _read_benchmark(path)
        s = stages[stage]
        s["jobs"] += 1
        s["seconds"] += float(row.get("s", 0) or 0)
        rss = row.get("max_rss", "-")
        if rss not in ("-", "NA", ""):
            s["max_rss_mb"] = max(s["max_rss_mb"], float(rss))
    return dict(stages)


def run_summary(bench_dir="logs/benchmarks", results="results", figures="figures", paper="paper") -> str:
    stages = stage_times(bench_dir)
    lines = ["", "msmbench run summary", "", f"{'stage':<16}{'jobs':>6}{'job time (s)':>14}{'peak RSS (MB)':>15}"]
    for name, s in sorted(stages.items(), key=lambda kv: -kv[1]["seconds"]):
        lines.append(f"{name:<16}{s['jobs']:>6}{s['seconds']:>14.1f}{s['max_rss_mb']:>15.0f}")
    total = sum(s["seconds"] for s in stages.values())
    lines += [f"{'all timed jobs':<16}{sum(s['jobs'] for s in stages.values()):>6}{total:>14.1f}", ""]
    outputs = [("results table", Path(paper) / "tables" / "results.md"),
               ("per-task scores", Path(results) / "summary" / "summary.csv"),
               ("paper macros", Path(paper) / "tables" / "numbers.tex"),
               ("paper PDF", Path(paper) / "main.pdf")]
    for label, path in outputs:
        if path.exists():
            lines.append(f"{label:<16}{path}")
    figs = sorted(Path(figures).glob("*.pdf"))
    if figs:
        lines.append(f"{'figures':<16}{figures}/ ({len(figs)} PDF + PNG): " + ", ".join(f.stem for f in figs))
    lines.append(f"{'provenance':<16}every output has <output>.prov.json beside it")
    table = Path(paper) / "tables" / "results.md"
    if table.exists():
        lines += ["", table.read_text().rstrip()]
    return "\n".join(lines) + "\n"
