"""Report stage: statistics, aggregation, overall score, tables, LaTeX macros and figures."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from unittest import mock

import matplotlib as mpl
import numpy as np
import pandas as pd
import pytest

from msmbench.report import aggregate as A
from msmbench.report import figures as F
from msmbench.report import render as R
from msmbench.report import tables as T
from msmbench.stats import mean_ci95

TASKS = {  # task -> (paper task, metric, chance)
    "percussion": ("Beijing Opera", "top1_acc", 0.25),
    "pitch": ("NSynth Pitch 5h", "pitch_acc", 1 / 88),
    "multilabel": ("FSD50K", "mAP", 0.05),
}
PARAMS = {"cpu": 212_608, "tiny": 5_400_000, "small": 21_500_000, "base": 85_800_000}


def record(model, task, scores, kind="pretrained", backbone=None, size=None, label=None, parameters="auto",
           paper_task=None, metric=None, chance=None):
    if backbone is None and kind != "baseline":
        backbone, size = model.split("-")[:2]
    if parameters == "auto":
        parameters = PARAMS.get(size) if kind != "baseline" else None
    pt, met, ch = TASKS.get(task, (task.title(), "top1_acc", 0.1))
    return {"model": model, "label": label or model, "kind": kind, "backbone": backbone, "size": size,
            "objective": "ssast-official" if kind == "pretrained" else None, "parameters": parameters,
            "task": task, "paper_task": paper_task or pt, "metric": metric or met,
            "chance": ch if chance is None else chance, "protocol": {"name": "paper"},
            "seeds": [{"seed": i, "score": s} for i, s in enumerate(scores)],
            "mean": float(np.mean(scores)), "ci95": None, "result": {}}


def write_records(root: Path, records) -> list[Path]:
    paths = []
    for rec in records:
        p = root / rec["model"] / f"{rec['task']}.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(rec))
        paths.append(p)
    return paths


def summary_of(tmp_path, records, task_order=None):
    return A.summarise(A.collect_scores(write_records(tmp_path / "scores", records)), task_order)


# ------------------------------------------------------------------------------------------------
# statistics
# ------------------------------------------------------------------------------------------------
def test_mean_ci95_matches_hand_computation():
    # s = 0.02 (ddof=1), n = 3, t(0.975, 2) = 4.302653 from a t table
    mean, hw = mean_ci95([0.70, 0.72, 0.74])
    assert mean == pytest.approx(0.72)
    assert hw == pytest.approx(4.302653 * 0.02 / math.sqrt(3), abs=1e-7)
    # n = 2: s = 0.1 * sqrt(2), t(0.975, 1) = 12.706205
    mean, hw = mean_ci95([0.5, 0.7])
    assert mean == pytest.approx(0.6)
    assert hw == pytest.approx(12.706205 * 0.1 * math.sqrt(2) / math.sqrt(2), abs=1e-6)


def test_mean_ci95_single_value_and_bad_input():
    mean, hw = mean_ci95([0.8])
    assert mean == 0.8 and math.isnan(hw)
    assert mean_ci95([0.5, 0.5, 0.5])[1] == 0.0
    with pytest.raises(ValueError):
        mean_ci95([])
    with pytest.raises(ValueError):
        mean_ci95([0.5, float("nan")])


# ------------------------------------------------------------------------------------------------
# aggregation and the overall score
# ------------------------------------------------------------------------------------------------
def test_overall_score_hand_example_with_tie(tmp_path):
    means = {  # t1: spread, t2: A best, B and C tie at the bottom, t3: everyone ties
        "a-cpu": {"t1": 0.5, "t2": 0.8, "t3": 0.4},
        "b-cpu": {"t1": 0.7, "t2": 0.6, "t3": 0.4},
        "c-cpu": {"t1": 0.9, "t2": 0.6, "t3": 0.4},
    }
    recs = [record(m, t, [v]) for m, tv in means.items() for t, v in tv.items()]
    summary = summary_of(tmp_path, recs)
    norm = A.normalised_scores(summary).set_index(["model", "task"])["normalised"]
    assert [norm[(m, "t1")] for m in means] == pytest.approx([0.0, 0.5, 1.0])
    assert [norm[(m, "t2")] for m in means] == pytest.approx([1.0, 0.0, 0.0])
    assert (norm.xs("t3", level="task") == 0.5).all()  # a tie contributes 50 after x100
    overall = A.overall_scores(summary).set_index("model")
    assert overall.at["a-cpu", "overall"] == pytest.approx(100 * (0 + 1 + 0.5) / 3)
    assert overall.at["b-cpu", "overall"] == pytest.approx(100 * (0.5 + 0 + 0.5) / 3)
    assert overall.at["c-cpu", "overall"] == pytest.approx(100 * (1 + 0 + 0.5) / 3)
    assert overall.at["a-cpu", "mean_score"] == pytest.approx(100 * (0.5 + 0.8 + 0.4) / 3)
    assert "min-max" in A.OVERALL_DEFINITION and "0.5" in A.OVERALL_DEFINITION


def test_overall_needs_every_model_on_every_task(tmp_path):
    recs = [record("a-cpu", "t1", [0.5]), record("a-cpu", "t2", [0.5]), record("b-cpu", "t1", [0.6])]
    with pytest.raises(ValueError, match="b-cpu/t2"):
        A.overall_scores(summary_of(tmp_path, recs))


def test_summary_ci_and_round_trip(tmp_path):
    recs = [record("mamba-cpu", "percussion", [0.70, 0.72, 0.74]), record("mamba-cpu", "pitch", [0.3]),
            record("logmel", "percussion", [0.5, 0.6], kind="baseline", label="Log-mel"),
            record("logmel", "pitch", [0.2, 0.2], kind="baseline", label="Log-mel")]
    paths = write_records(tmp_path / "scores", recs)
    summary = A.aggregate(paths, tmp_path / "out" / "scores.csv", tmp_path / "out" / "summary.csv",
                          task_order=["pitch", "percussion"])
    assert list(summary["task"][:2]) == ["pitch", "percussion"]
    row = summary[(summary["model"] == "mamba-cpu") & (summary["task"] == "percussion")].iloc[0]
    assert row["ci95"] == pytest.approx(4.302653 * 0.02 / math.sqrt(3), abs=1e-7) and row["n_seeds"] == 3
    assert math.isnan(summary[summary["task"] == "pitch"].iloc[0]["ci95"])
    long = pd.read_csv(tmp_path / "out" / "scores.csv")
    assert len(long) == 3 + 1 + 2 + 2 and {"seed", "score", "source", "protocol"} <= set(long.columns)
    back = A.read_summary(tmp_path / "out" / "summary.csv")
    pd.testing.assert_frame_equal(A.overall_scores(back), A.overall_scores(summary))
    assert pd.isna(back.loc[back["model"] == "logmel", "backbone"].iloc[0])


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.pop("metric"), "missing key"),
    (lambda r: r["seeds"][1].update(score=float("nan")), "non-finite"),
    (lambda r: r["seeds"][0].update(score="0.7"), "non-finite"),
    (lambda r: r["seeds"][0].update(score=71.0), "outside"),
    (lambda r: r.update(kind="finetuned"), "kind"),
    (lambda r: r.update(mean=0.1), "disagrees"),
    (lambda r: r.update(seeds=[]), "non-empty"),
])
def test_bad_score_file_names_the_file(tmp_path, mutate, message):
    rec = record("mamba-cpu", "percussion", [0.7, 0.72])
    mutate(rec)
    bad = tmp_path / "mamba-cpu" / "percussion.json"
    bad.parent.mkdir()
    bad.write_text(json.dumps(rec))  # json writes NaN as a bare NaN, which Python reads back
    with pytest.raises(ValueError, match=message) as err:
        A.collect_scores([bad])
    assert str(bad) in str(err.value)


def test_inconsistent_or_duplicate_files_name_the_file(tmp_path):
    a = write_records(tmp_path / "a", [record("mamba-cpu", "percussion", [0.7])])
    b = write_records(tmp_path / "b", [record("mamba-cpu", "percussion", [0.6])])
    with pytest.raises(ValueError, match="duplicate") as err:
        A.collect_scores(a + b)
    assert str(b[0]) in str(err.value)
    c = write_records(tmp_path / "c", [record("mamba-cpu", "pitch", [0.6], label="Another label")])
    with pytest.raises(ValueError, match="label") as err:
        A.collect_scores(a + c)
    assert str(c[0]) in str(err.value)
    bad_json = tmp_path / "broken.json"
    bad_json.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        A.collect_scores([bad_json])


# ------------------------------------------------------------------------------------------------
# tables
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Pretrained, random-init, an unknown backbone and a baseline, written in shuffled order."""
    tmp = tmp_path_factory.mktemp("mixed")
    spec = [  # model, kind, label, percussion, pitch
        ("xlstm-base-x", "pretrained", "xLSTM base", 0.60, 0.30),
        ("logmel", "baseline", "Log-mel & mean", 0.50, 0.10),
        ("mamba-tiny-random", "random_init", "Mamba tiny (random init)", 0.95, 0.05),
        ("transformer-small-x", "pretrained", "Transformer small", 0.70, 0.20),
        ("foo-tiny-x", "pretrained", "Foo_net tiny", 0.65, 0.40),
        ("mamba-cpu-x", "pretrained", "Mamba cpu", 0.80, 0.40),
        ("transformer-cpu-x", "pretrained", "Transformer cpu", 0.55, 0.25),
    ]
    recs = []
    for model, kind, label, perc, pitch in spec:
        for task, v in (("percussion", perc), ("pitch", pitch)):
            recs.append(record(model, task, [v - 0.01, v, v + 0.01], kind=kind, label=label))
    summary = summary_of(tmp, recs, ["pitch", "percussion"])
    overall = A.overall_scores(summary)
    return tmp, summary, overall, T.results_table(summary, overall)


def test_table_row_order_and_columns(mixed):
    _, _, _, table = mixed
    assert list(table["model"]) == ["transformer-cpu-x", "transformer-small-x", "mamba-cpu-x", "xlstm-base-x",
                                    "foo-tiny-x", "mamba-tiny-random", "logmel", ""]
    assert table["row"].iloc[-1] == T.CHANCE_LABEL
    assert table["pitch_mean"].iloc[-1] == pytest.approx(100 / 88)
    assert [t["task"] for t in table.attrs["tasks"]] == ["pitch", "percussion"]
    assert table.columns.get_loc("pitch_mean") < table.columns.get_loc("percussion_mean")
    assert "MW-MAE" not in " ".join(table["row"])  # synthetic tasks: no published reference row


def test_bold_marks_best_pretrained_only(mixed, tmp_path):
    _, _, _, table = mixed
    paths = T.write_tables(table, tmp_path, "Caption with 50% & an_underscore.")
    assert [p.name for p in paths] == ["results.csv", "results.md", "results.tex"]
    md = (tmp_path / "results.md").read_text()
    rows = {line.split(" | ")[0].lstrip("| "): line for line in md.splitlines() if line.startswith("| ")}
    # percussion: random-init Mamba tiny has 95.0 but is not eligible; Mamba cpu (80.0) is bold
    assert "**80.0** ± " in rows["Mamba cpu"] and "**95.0**" not in md
    # pitch: Mamba cpu and Foo tiny tie at 40.0 (at the printed precision) -> both bold
    assert "**40.0** ± " in rows["Mamba cpu"] and "**40.0** ± " in rows["Foo_net tiny"]
    tex = (tmp_path / "results.tex").read_text()
    assert r"\textbf{80.0}" in tex and r"\textbf{95.0}" not in tex and tex.count(r"\textbf{40.0}") == 2
    assert "among the pretrained models" in md and "among the pretrained models" in tex
    assert r"Log-mel \& mean" in tex and r"Foo\_net tiny" in tex
    assert r"50\% \& an\_underscore" in tex
    assert r"\toprule" in tex and r"\bottomrule" in tex
    assert not re.search(r"\\usepackage", tex)
    csv = pd.read_csv(tmp_path / "results.csv")
    assert {"pitch_mean_pct", "pitch_ci95_pct", "pitch_n_seeds", "overall_norm", "mean_score_pct"} <= set(csv.columns)
    assert csv.loc[csv["model"] == "mamba-cpu-x", "percussion_mean_pct"].iloc[0] == pytest.approx(80.0)
    assert csv["percussion_mean_pct"].dtype == float  # numbers, not "80.0 ± 1.2" strings


def test_single_seed_cells_say_n1(tmp_path):
    summary = summary_of(tmp_path, [record("mamba-cpu", "percussion", [0.7])])
    table = T.results_table(summary, A.overall_scores(summary))
    T.write_tables(table, tmp_path / "t", "")
    assert "(n=1)" in (tmp_path / "t" / "results.md").read_text()
    assert "(n=1)" in (tmp_path / "t" / "results.tex").read_text()


def test_published_reference_row_only_for_hear_tasks(tmp_path):
    task = "beijing_opera-v1.0-hear2021-full"
    summary = summary_of(tmp_path, [record("mamba-cpu", task, [0.9, 0.91], paper_task="Beijing Opera")])
    table = T.results_table(summary, A.overall_scores(summary))
    ref = table[table["kind"] == "reference"]
    assert len(ref) == 1 and ref[f"{task}_mean"].iloc[0] == 96.0
    assert not T.best_mask(table, f"{task}_mean")[ref.index[0]]


def test_latex_escape():
    assert T.latex_escape(r"a_b & 50% #1 $x$ {y} ~z ^ \ ±") == (
        r"a\_b \& 50\% \#1 \$x\$ \{y\} \textasciitilde{}z \textasciicircum{} \textbackslash{} $\pm$")


def test_numbers_macro_names_are_valid(mixed, tmp_path):
    _, summary, overall, _ = mixed
    path = T.write_numbers(summary, overall, tmp_path / "numbers.tex")
    text = path.read_text()
    names = re.findall(r"\\newcommand\{\\([^}]*)\}", text)
    assert names and all(re.fullmatch(r"[A-Za-z]+", n) for n in names)
    assert len(names) == len(set(names))
    assert len(names) == sum(line.startswith(r"\newcommand") for line in text.splitlines())
    macros = dict(re.findall(r"\\newcommand\{\\([A-Za-z]+)\}\{(.*)\}", text))
    assert macros["msmBestModel"] == "Mamba cpu" and macros["msmNumTasks"] == "2" and macros["msmNumSeeds"] == "3"
    assert macros["msmBestOverall"] == f"{overall.set_index('model').at['mamba-cpu-x', 'overall']:.1f}"
    assert "msmOverallMambaCpuX" in macros and "msmOverallLogmel" in macros
    assert T.macro_name("Overall", "mw-mae-b-4x16") == "msmOverallMwMaeBFourXOneSix"
    assert set(T.GENERIC_MACROS) <= set(names)


def test_paper_uses_only_macros_defined_for_every_run(tmp_path):
    # a run with nothing but a baseline still defines every macro main.tex uses
    summary = summary_of(tmp_path, [record("logmel", "percussion", [0.5], kind="baseline")])
    text = T.write_numbers(summary, A.overall_scores(summary), tmp_path / "numbers.tex").read_text()
    defined = set(re.findall(r"\\newcommand\{\\([^}]*)\}", text))
    main = (Path(__file__).resolve().parents[1] / "paper" / "main.tex").read_text()
    used = set(re.findall(r"\\(msm[A-Z][A-Za-z]*)", main))
    assert used and used <= set(T.GENERIC_MACROS) <= defined, used - set(T.GENERIC_MACROS)
    assert r"\input{tables/numbers.tex}" in main and r"\input{tables/results.tex}" in main
    assert r"\graphicspath{{../figures/}}" in main


# ------------------------------------------------------------------------------------------------
# figures
# ------------------------------------------------------------------------------------------------
def assert_outputs(paths):
    suffixes = sorted(p.suffix for p in paths)
    assert suffixes == [".pdf", ".png"]
    for p in paths:
        data = p.read_bytes()
        assert len(data) > 1000
        assert data.startswith(b"\x89PNG" if p.suffix == ".png" else b"%PDF")


@pytest.fixture(scope="module")
def small_and_large(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("figs")
    one = summary_of(tmp / "one", [record("mamba-cpu-x", "percussion", [0.7])])
    rng = np.random.default_rng(0)
    recs = []
    for model, kind in (("transformer-tiny-x", "pretrained"), ("mamba-tiny-x", "pretrained"),
                        ("xlstm-small-x", "pretrained"), ("logmel", "baseline")):
        for task in TASKS:
            recs.append(record(model, task, list(rng.uniform(0.3, 0.9, 3)), kind=kind))
    four = summary_of(tmp / "four", recs)
    return tmp, one, four


@pytest.mark.parametrize("which", ["one", "four"])
def test_score_figures(small_and_large, which):
    tmp, one, four = small_and_large
    summary = one if which == "one" else four
    overall = A.overall_scores(summary)
    assert_outputs(F.plot_task_scores(summary, tmp / which / "task_scores"))
    assert_outputs(F.plot_overall_vs_params(summary, overall, tmp / which / "overall_vs_params.png"))


def test_pretrain_loss_figure(tmp_path):
    steps = np.arange(0, 500, 10)
    metrics = {
        "mamba-cpu-x": pd.DataFrame({"step": steps, "epoch": steps / 100, "lr": 1e-4,
                                     "loss": np.exp(-steps / 200) + 0.2, "seconds": 0.1, "clips_per_s": 50}),
        "transformer-cpu-x": pd.DataFrame({"step": [0], "epoch": [0.0], "lr": [1e-4], "loss": [1.0],
                                           "seconds": [0.1], "clips_per_s": [50]}),
    }
    assert_outputs(F.plot_pretrain_loss(metrics, tmp_path / "loss"))
    with pytest.raises(ValueError, match="loss"):
        F.plot_pretrain_loss({"m": pd.DataFrame({"step": [0], "epoch": [0]})}, tmp_path / "bad")


def test_reconstruction_figure(tmp_path):
    rng = np.random.default_rng(0)
    spec = rng.standard_normal((2, 200, 80)).astype(np.float32)
    mask = np.zeros_like(spec)
    mask[:, 40:80, 16:48] = 1.0
    path = tmp_path / "reconstruction.npz"
    np.savez(path, spec=spec, mask=mask, recon=0.5 * spec, model=np.str_("mamba-cpu-x"))
    assert_outputs(F.plot_reconstruction(path, tmp_path / "reconstruction"))
    np.savez(tmp_path / "bad.npz", spec=spec, mask=mask[:1], recon=spec)
    with pytest.raises(ValueError, match="bad.npz"):
        F.plot_reconstruction(tmp_path / "bad.npz", tmp_path / "bad")


def scaling_records():
    recs = []
    for backbone, base, quad in (("transformer", 5.0, 2e-5), ("mamba", 8.0, 0.0), ("xlstm", 9.0, 0.0)):
        for tokens in (251, 1001, 4001, 16001):
            oom = backbone == "transformer" and tokens == 16001
            ms = base + quad * tokens ** 2 + 3e-3 * tokens
            recs.append({"backbone": backbone, "size": "base", "tokens": tokens, "seconds_audio": (tokens - 1) / 125,
                         "batch": 8, "train_step_ms": None if oom else ms,
                         "peak_mem_gib": None if oom else 1 + (1e-7 if quad else 0) * tokens ** 2 + 1e-4 * tokens,
                         "infer_clips_per_s": None if oom else 1e4 / ms, "status": "oom" if oom else "ok",
                         "device": "test GPU"})
    return recs


def test_scaling_figure_and_crossover(tmp_path):
    recs = scaling_records()
    cross = {c["backbone"]: c for c in F.find_crossovers(recs, "train_step_ms")}
    # transformer is faster at 251 tokens (5.75 < 8.75 ms) and slower at 1001: crossover in between
    assert set(cross) == {"mamba", "xlstm"} and 251 < cross["mamba"]["tokens"] < 1001
    assert cross["mamba"]["kind"] == "measured"
    path = tmp_path / "scaling.json"
    path.write_text(json.dumps(recs))
    assert_outputs(F.plot_scaling(path, tmp_path / "scaling"))
    only_oom_crossover = [r for r in recs if r["tokens"] in (4001, 16001) and r["backbone"] != "xlstm"]
    for r in only_oom_crossover:
        if r["backbone"] == "mamba":
            r["train_step_ms"] = 1e9 if r["tokens"] == 4001 else 5.0
    c = F.find_crossovers(only_oom_crossover)
    assert c == [{"backbone": "mamba", "size": "base", "tokens": 16001.0, "kind": "oom"}]
    with pytest.raises(ValueError, match="status"):
        F.plot_scaling([{**recs[0], "status": "crashed"}], tmp_path / "bad")


def test_scaling_under_a_token_budget(tmp_path):
    """batch = budget // length: linear-cost step times are flat, attention's grow; the crossover, the
    guides (drawn at the measured batches) and the title follow."""
    from msmbench.bench import batch_for

    assert [batch_for(n) for n in (251, 1001, 16001, 64001, 100001)] == [256, 64, 4, 1, 1]
    assert batch_for(16001, batch=8) == 8
    recs = []
    for backbone, per_token, per_pair in (("transformer", 1.0, 3e-4), ("mamba", 4.0, 0.0)):
        for tokens in (251, 4001, 16001, 64001):
            b = batch_for(tokens)
            ms = b * tokens * (per_token + per_pair * tokens) / 1e3
            recs.append({"backbone": backbone, "size": "base", "tokens": tokens, "batch": b, "tokens_per_step": 64256,
                         "seconds_audio": (tokens - 1) / 125, "train_step_ms": ms, "peak_mem_gib": 10.0,
                         "infer_clips_per_s": 1e6 / ms, "status": "ok", "device": "test GPU"})
    (cross,) = F.find_crossovers(recs)
    # per token: 1 + 3e-4 L vs 4  ->  attention is slower beyond L = 10,000
    assert cross["backbone"] == "mamba" and 4001 < cross["tokens"] < 16001
    lines = []
    real_plot = mpl.axes.Axes.plot
    with mock.patch.object(mpl.axes.Axes, "plot", lambda ax, *a, **k: lines.append(a) or real_plot(ax, *a, **k)):
        assert_outputs(F.plot_scaling(recs, tmp_path / "budget"))
    guides = [y / y[0] for x, y in lines if isinstance(x, np.ndarray)]  # the series are pandas objects
    # per panel: linear cost stays flat (batch x L is constant up to rounding), quadratic grows as L
    assert guides and all(abs(g[-1] - 1) < 0.01 or abs(g[-1] / (64001 / 251) - 1) < 0.01 for g in guides)
    assert any(abs(g[-1] - 1) < 0.01 for g in guides) and any(g[-1] > 200 for g in guides)


def test_render_entry_points(small_and_large, tmp_path):
    tmp, _, four = small_and_large
    summary_csv = tmp_path / "summary.csv"
    A.write_csv(four, summary_csv)
    outs = R.render_tables(summary_csv, tmp_path / "tables", tmp_path / "numbers.tex", tasks=["pitch"])
    assert [p.name for p in outs] == ["results.csv", "results.md", "results.tex", "numbers.tex"]
    header = (tmp_path / "tables" / "results.md").read_text().splitlines()[2]
    assert header.index("NSynth Pitch") < header.index("Beijing Opera")
    with pytest.raises(ValueError, match="unknown figure"):
        R.render_figure("nope", [summary_csv], tmp_path / "x")
