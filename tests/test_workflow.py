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


ENV = {**os.environ, "DVC_NO_ANALYTICS": "1"}


def snakemake(workdir: Path, *args: str, config: str = "config/ci.yaml") -> subprocess.CompletedProcess:
    # --configfile takes several values, so it goes last (after any target)
    return subprocess.run(["snakemake", *args, "--configfile", config], cwd=workdir, env=ENV,
                          capture_output=True, text=True, timeout=900)


def sh(workdir: Path, *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=workdir, env=ENV, capture_output=True, text=True, timeout=600)


def planned_rules(work: Path, *args: str, config: str = "config/ci.yaml") -> set[str]:
    """The rules a dry run would run (from Snakemake's job-stats table)."""
    result = snakemake(work, *args, "-n", "--quiet", "rules", config=config)
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout + result.stderr
    if "Job stats:" not in text:
        return set()
    rows = text.split("Job stats:", 1)[1].splitlines()[3:]
    return {r.split()[0] for r in rows if len(r.split()) == 2 and r.split()[1].isdigit() and r.split()[0] != "total"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("workflow")
    for name in ("Snakefile", "workflow", "config", "envs", "paper"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / name)
    shutil.rmtree(work / "paper" / "tables", ignore_errors=True)  # start from a clean copy
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
    assert "\\newcommand" in (work / "paper" / "tables" / "numbers.tex").read_text()
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
    assert planned_rules(work, "figures/task_scores.pdf") == {"figure_task_scores"}
    assert snakemake(work, "--cores", "1", "figures/task_scores.pdf").returncode == 0
    assert (work / "figures" / "task_scores.pdf").exists()


def test_audit_verifies_everything_and_names_a_changed_checkpoint(run):
    work, _ = run
    ok = sh(work, "msmbench", "audit", "--all", "--prov-json", "lineage.json")
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-2000:]
    assert "every hash verified down to the raw data" in ok.stdout
    assert '"wasDerivedFrom"' in (work / "lineage.json").read_text()
    model = f"transformer-cpu-{CI['models']['objective']}"
    cell = sh(work, "msmbench", "audit", "paper/tables/results.csv", "--model", model, "--task", CI["data"]["tasks"][0])
    assert cell.returncode == 0 and "seeds: [0, 1]" in cell.stdout and "model.safetensors" in cell.stdout
    ckpt = work / "results" / "models" / model / "model.safetensors"
    original = ckpt.read_bytes()
    try:
        flipped = bytearray(original)
        flipped[len(flipped) // 2] ^= 0x01  # one bit of one weight
        ckpt.write_bytes(bytes(flipped))
        bad = sh(work, "msmbench", "audit", "--all")
        assert bad.returncode != 0
        assert f"results/models/{model}/model.safetensors" in bad.stdout + bad.stderr
    finally:
        ckpt.write_bytes(original)


def test_new_checkpoint_under_an_old_name_never_reuses_old_embeddings(run):
    """Content decides: same bytes with a new mtime rerun nothing; new bytes rerun its embeddings and scores."""
    work, _ = run
    model = f"mamba-cpu-{CI['models']['objective']}"
    ckpt = work / "results" / "models" / model / "model.safetensors"
    original = ckpt.read_bytes()
    try:
        os.utime(ckpt)  # touched: newer, same content
        assert sh(work, "msmbench", "sync-mtimes").returncode == 0
        assert planned_rules(work) == set()
        from safetensors.torch import load_file, save_file
        weights = load_file(str(ckpt))
        weights = {k: v + 0.01 if v.is_floating_point() else v for k, v in weights.items()}
        save_file(weights, str(ckpt))  # a different checkpoint under the old name
        assert sh(work, "msmbench", "sync-mtimes").returncode == 0
        assert {"embed", "probe"} <= planned_rules(work)
        dry = snakemake(work, "-n")
        text = dry.stdout + dry.stderr
        assert f"results/embeddings/{model}/" in text
        assert "results/embeddings/logmel/" not in text  # other models' caches are kept
    finally:
        ckpt.write_bytes(original)
        sh(work, "msmbench", "sync-mtimes")


def test_probe_setting_change_reruns_only_scores_tables_and_figures(run):
    work, _ = run
    cfg = (work / "config" / "ci.yaml").read_text().replace("seeds: 2", "seeds: 3")
    (work / "config" / "ci_seeds.yaml").write_text(cfg)
    rules = planned_rules(work, config="config/ci_seeds.yaml")
    assert "probe" in rules and {"aggregate", "table", "figure_task_scores"} <= rules
    assert not rules & {"pretrain", "embed", "init_model", "features", "synth_task", "reconstruct",
                        "figure_reconstruction", "figure_pretrain_loss"}


def test_dvc_round_trip_then_nothing_to_do(run, tmp_path):
    """Issue 5: version the run with DVC, clone, dvc pull, sync-mtimes: Snakemake has nothing to do."""
    work, _ = run
    remote = tmp_path / "remote"
    tracked = ["data", "results", "figures", "paper/tables"]
    steps = [["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "remote", "add", "-d", "local", str(remote)],
             ["dvc", "add", "-q", *tracked], ["dvc", "push", "-q"],
             ["git", "add", "Snakefile", "workflow", "config", "envs", "paper/main.tex", ".dvc", ".gitignore",
              *[f"{t}.dvc" for t in tracked], *[str(p.relative_to(work)) for p in work.glob("**/.gitignore")]],
             ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "run"]]
    for cmd in steps:
        r = sh(work, *cmd)
        assert r.returncode == 0, (cmd, r.stderr[-1500:])
    clone = tmp_path / "clone"
    assert sh(tmp_path, "git", "clone", "-q", str(work), str(clone)).returncode == 0
    pulled = sh(clone, "dvc", "pull", "-q")
    assert pulled.returncode == 0, pulled.stderr[-1500:]
    synced = sh(clone, "msmbench", "sync-mtimes")
    assert synced.returncode == 0 and " 0 do not" in synced.stdout, synced.stdout
    assert planned_rules(clone) == set()
