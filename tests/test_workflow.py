"""The whole DAG on config/ci.yaml in a temporary copy of the workflow: every output exists and is sane."""

import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from msmbench.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CI = load_config(ROOT / "config" / "ci.yaml")
pytestmark = pytest.mark.slow


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    # --configfile takes several values, so it goes last (after any target)
    return subprocess.run(["snakemake", *args, "--configfile", "config/ci.yaml"], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("workflow")
    for name in ("Snakefile", "workflow", "config", "envs", "paper"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / name)
    for generated in ("paper/tables", "paper/numbers.tex"):  # start from a clean copy
        shutil.rmtree(work / generated, ignore_errors=True) if (work / generated).is_dir() else (work / generated).unlink(missing_ok=True)
    result = snakemake(work, "--cores", "2")
    assert result.returncode == 0, result.stderr[-4000:]
    return work, result


def test_every_output_exists(run):
    work, result = run
    models = [f"{b}-cpu-{CI['models']['objective']}" for b in CI["models"]["backbones"]]
    for m in models:
        for f in ("model.safetensors", "model.json", "metrics.csv", "reconstruction.npz"):
            assert (work / "results" / "models" / m / f).stat().st_size > 0
        for ext in ("png", "pdf"):
            assert (work / "figures" / f"reconstruction_{m}.{ext}").stat().st_size > 0
    for name in ("task_scores", "overall_vs_params", "pretrain_loss"):
        for ext in ("png", "pdf"):
            assert (work / "figures" / f"{name}.{ext}").stat().st_size > 1000
    for ext in ("md", "csv", "tex"):
        assert (work / "paper" / "tables" / f"results.{ext}").exists()
    assert "\\newcommand" in (work / "paper" / "numbers.tex").read_text()
    assert "msmbench run summary" in result.stdout + result.stderr  # printed at the end
    assert list((work / "logs" / "pretrain").glob("*.log"))


def test_table_has_a_row_per_model_and_baseline_and_a_column_per_task(run):
    work, _ = run
    summary = pd.read_csv(work / "results" / "summary" / "summary.csv")
    expected_models = {f"{b}-cpu-{CI['models']['objective']}" for b in CI["models"]["backbones"]}
    expected_models |= {f"{b}-cpu-init" for b in CI["models"]["backbones"]} | {"logmel"}
    assert set(summary["model"]) == expected_models
    assert set(summary["task"]) == set(CI["data"]["tasks"])
    assert summary.groupby("model").size().eq(len(CI["data"]["tasks"])).all()
    assert summary["mean"].between(0, 1).all()
    table = (work / "paper" / "tables" / "results.md").read_text()
    for label in ("Transformer-CPU", "Mamba-CPU", "random init", "Log-mel", "Chance"):
        assert label in table


def test_every_output_has_a_provenance_record(run):
    work, _ = run
    for out in [*work.glob("results/scores/*/*.json"), *work.glob("results/embeddings/*/*.npz"),
                *work.glob("results/models/*/model.safetensors"), *work.glob("figures/*.pdf")]:
        if out.name.endswith(".prov.json"):
            continue
        assert Path(f"{out}.prov.json").exists(), out


def test_rerun_plans_nothing_and_report_builds(run):
    work, _ = run
    dry = snakemake(work, "-n")
    assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr
    report = snakemake(work, "--report", "report.html")
    assert report.returncode == 0, report.stderr[-2000:]
    assert (work / "report.html").stat().st_size > 10_000


def test_one_figure_regenerates_alone(run):
    work, _ = run
    (work / "figures" / "task_scores.pdf").unlink()
    dry = snakemake(work, "figures/task_scores.pdf", "-n", "--quiet", "rules")
    out = dry.stdout + dry.stderr
    assert "figure_task_scores" in out and "pretrain" not in out and "probe" not in out
