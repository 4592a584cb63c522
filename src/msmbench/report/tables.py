"""The results table (CSV, Markdown, LaTeX) and the headline-number macros for the paper.

`results_table` builds one numeric frame (scores in percent) in table order; `write_tables` renders it
three ways: `results.csv` keeps numbers only (separate mean / ci95 / n columns, machine-readable),
`results.md` and `results.tex` show "mean +/- ci" cells with one decimal and the best pretrained model
per task in bold. `write_numbers` writes `paper/tables/numbers.tex`, so the paper's text quotes no number
by hand.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Sequence

import pandas as pd

from msmbench.io import atomic_path, write_text
from msmbench.report.aggregate import (
    MEAN_SCORE_DEFINITION, OVERALL_DEFINITION, backbone_rank, order_models, task_order_of,
)

# Published MW-MAE-B (4x16 patches, 4-layer decoder, 10 seeds) scores, SPEC.md section 8, keyed by the
# HEAR 2021 task directory, in percent. They are shown only for tasks run on the real HEAR data (a
# synthetic task that mirrors Beijing Opera is not comparable) and take no part in bold or overall.
PUBLISHED_REFERENCE_LABEL = "MW-MAE-B (published)"
PUBLISHED_REFERENCE = {
    "beijing_opera-v1.0-hear2021-full": 96.0,
    "tfds_crema_d-1.0.0-full": 73.1,
    "esc50-v2.0.0-full": 81.2,
    "libricount-v1.0.0-hear2021-full": 68.8,
    "mridangam_stroke-v1.5-full": 97.4,
    "mridangam_tonic-v1.5-full": 97.9,
    "nsynth_pitch-v2.2.3-5h": 69.3,
    "speech_commands-v0.0.2-5h": 90.9,
    "fsd50k-v1.0-full": 51.2,
    "vox_lingua_top10-hear2021-full": 44.2,
}

METRIC_SHORT = {"top1_acc": "acc.", "pitch_acc": "pitch acc.", "mAP": "mAP"}
BACKBONE_NAMES = {"transformer": "Transformer", "mamba": "Mamba", "xlstm": "xLSTM"}
CHANCE_LABEL = "Chance level"
GROUP_KINDS = ("pretrained", "random_init", "baseline", "chance", "reference")  # table blocks, in order

CI_DEFINITION = ("mean over probe seeds and half-width of the 95% Student-t confidence interval "
                 "(t(0.975, n-1) s / sqrt(n), s the standard deviation over seeds)")
BOLD_RULE = ("Bold: the best mean per task (and overall) among the pretrained models, compared at the "
             "printed precision; random-init encoders and the log-mel baseline are not eligible.")


def backbone_name(backbone) -> str:
    if backbone is None or (not isinstance(backbone, str) and pd.isna(backbone)):
        return "none"
    return BACKBONE_NAMES.get(str(backbone).lower(), str(backbone))


def format_params(parameters) -> str:
    """Parameter count in millions: two decimals below 10M (CPU-sized models), one above."""
    if parameters is None or pd.isna(parameters):
        return ""
    m = float(parameters) / 1e6
    return f"{m:.2f}" if m < 10 else f"{m:.1f}"


# ------------------------------------------------------------------------------------------------
# The numeric table
# ------------------------------------------------------------------------------------------------
def results_table(summary: pd.DataFrame, overall: pd.DataFrame, task_order: Sequence[str] | None = None,
                  reference: bool = True) -> pd.DataFrame:
    """The results table as numbers, one row per table row, in table order.

    Rows: pretrained models (backbone transformer, mamba, xlstm, then others alphabetically; size cpu,
    tiny, small, base), random-init encoders, baselines, a chance-level row, and (if `reference` and
    any task is a HEAR task of SPEC.md section 8) the published MW-MAE-B row.
    Columns: row (display label), model, kind, backbone, size, objective, parameters, params_m, then per
    task `<task>_mean`, `<task>_ci95` (percent; ci95 NaN for one seed) and `<task>_n` (seeds), then
    `overall` (normalised, 0-100) and `mean_score` (percent). `table.attrs["tasks"]` lists the task
    columns as dicts (task, paper_task, metric) for the renderers.
    """
    tasks = task_order_of(summary, task_order)
    task_meta = summary.drop_duplicates("task").set_index("task")
    by_model = overall.set_index("model")
    rows = []
    for model in order_models(summary):
        s = summary[summary["model"] == model].set_index("task")
        first = s.iloc[0]
        row = {"row": first["label"], "model": model, "kind": first["kind"], "backbone": first["backbone"],
               "size": first["size"], "objective": first["objective"], "parameters": first["parameters"]}
        for t in tasks:
            present = t in s.index
            row[f"{t}_mean"] = 100.0 * s.at[t, "mean"] if present else math.nan
            row[f"{t}_ci95"] = 100.0 * s.at[t, "ci95"] if present else math.nan
            row[f"{t}_n"] = int(s.at[t, "n_seeds"]) if present else pd.NA
        row["overall"] = float(by_model.at[model, "overall"]) if model in by_model.index else math.nan
        row["mean_score"] = float(by_model.at[model, "mean_score"]) if model in by_model.index else math.nan
        rows.append(row)
    chance = {"row": CHANCE_LABEL, "model": "", "kind": "chance"}
    for t in tasks:
        chance.update({f"{t}_mean": 100.0 * float(task_meta.at[t, "chance"]), f"{t}_ci95": math.nan,
                       f"{t}_n": pd.NA})
    rows.append(chance)
    if reference and any(t in PUBLISHED_REFERENCE for t in tasks):
        ref = {"row": PUBLISHED_REFERENCE_LABEL, "model": "", "kind": "reference"}
        for t in tasks:
            ref.update({f"{t}_mean": PUBLISHED_REFERENCE.get(t, math.nan), f"{t}_ci95": math.nan,
                        f"{t}_n": 10 if t in PUBLISHED_REFERENCE else pd.NA})
        rows.append(ref)

    columns = (["row", "model", "kind", "backbone", "size", "objective", "parameters", "params_m"]
               + [f"{t}_{f}" for t in tasks for f in ("mean", "ci95", "n")] + ["overall", "mean_score"])
    table = pd.DataFrame(rows).reindex(columns=columns)
    table["parameters"] = table["parameters"].astype("Int64")
    table["params_m"] = table["parameters"].astype("Float64").astype(float) / 1e6
    for t in tasks:
        table[f"{t}_n"] = table[f"{t}_n"].astype("Int64")
    table.attrs["tasks"] = [{"task": t, "paper_task": str(task_meta.at[t, "paper_task"]),
                             "metric": str(task_meta.at[t, "metric"])} for t in tasks]
    return table


def _tasks_of(table: pd.DataFrame) -> list[dict]:
    """Task column metadata; falls back to the column names if attrs were lost on the way."""
    if table.attrs.get("tasks"):
        return list(table.attrs["tasks"])
    tasks = [c[: -len("_mean")] for c in table.columns if c.endswith("_mean") and c != "mean_score"]
    return [{"task": t, "paper_task": t, "metric": "top1_acc"} for t in tasks]


def best_mask(table: pd.DataFrame, column: str) -> pd.Series:
    """Rows holding the best value of `column` among pretrained rows, at the printed one decimal."""
    eligible = (table["kind"] == "pretrained") & table[column].notna()
    if not eligible.any():
        return pd.Series(False, index=table.index)
    shown = table[column].round(1)
    return eligible & (shown == shown[eligible].max())


# ------------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------------
_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                   "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                   "±": r"$\pm$", "×": r"$\times$", "–": "--", "—": "---", "≥": r"$\geq$", "≤": r"$\leq$"}
_LATEX_RE = re.compile("|".join(re.escape(k) for k in _LATEX_SPECIALS))


def latex_escape(text) -> str:
    """Escape LaTeX special characters (and a few non-ASCII symbols) in plain text."""
    return _LATEX_RE.sub(lambda m: _LATEX_SPECIALS[m.group(0)], str(text))


def _md_escape(text) -> str:
    return str(text).replace("|", r"\|")


def _cell(mean, ci, n, bold: bool, fmt: str) -> str:
    if mean is None or pd.isna(mean):
        return "--" if fmt == "tex" else "–"
    m = f"{mean:.1f}"
    if fmt == "tex":
        m = rf"\textbf{{{m}}}" if bold else m
        if not pd.isna(ci):
            return rf"{m}\,{{\tiny$\pm${ci:.1f}}}"
        return rf"{m}\,{{\tiny(n=1)}}" if not pd.isna(n) and n == 1 else m
    m = f"**{m}**" if bold else m
    if not pd.isna(ci):
        return f"{m} ± {ci:.1f}"
    return f"{m} (n=1)" if not pd.isna(n) and n == 1 else m


def table_notes(table: pd.DataFrame) -> str:
    """Plain-text notes printed under every rendering of the table (metric, CI, bold, overall)."""
    tasks = _tasks_of(table)
    metrics = {t["metric"] for t in tasks}
    metric_text = "Scores in percent: accuracy" + (
        "" if metrics == {"top1_acc"} else
        " unless the column says otherwise (pitch acc.: NSynth pitch accuracy; mAP: mean average precision)")
    n_pre = pd.concat([table.loc[table["kind"] != "reference", f"{t['task']}_n"] for t in tasks]).dropna()
    seeds = (f"{int(n_pre.min())}" if len(n_pre) and n_pre.min() == n_pre.max()
             else f"{int(n_pre.min())}-{int(n_pre.max())}" if len(n_pre) else "0")
    notes = [f"{metric_text}; each cell is the {CI_DEFINITION}, over {seeds} seed(s); "
             "n=1 marks a single seed (no interval).", BOLD_RULE, OVERALL_DEFINITION,
             "Params (M): encoder parameters in millions as reported by the score files."]
    if (table["kind"] == "reference").any():
        notes.append(f"{PUBLISHED_REFERENCE_LABEL}: the published scores of SPEC section 8 (not trained "
                     "here; excluded from bold and from the overall score).")
    return " ".join(notes)


def _header_labels(tasks: list[dict]) -> list[str]:
    return [t["paper_task"] for t in tasks]


def to_markdown(table: pd.DataFrame, caption: str = "") -> str:
    tasks = _tasks_of(table)
    heads = ["Model"] + [f"{t['paper_task']} ({METRIC_SHORT.get(t['metric'], t['metric'])})"
                         if t["metric"] != "top1_acc" else t["paper_task"] for t in tasks]
    heads += ["Params (M)", "Overall"]
    lines = []
    if caption:
        lines += [f"**{caption}**", ""]
    lines += ["| " + " | ".join(_md_escape(h) for h in heads) + " |",
              "|" + "|".join([":--"] + ["--:"] * (len(heads) - 1)) + "|"]
    bold = {t["task"]: best_mask(table, f"{t['task']}_mean") for t in tasks}
    bold_overall = best_mask(table, "overall")
    for i, r in table.iterrows():
        cells = [_md_escape(r["row"])]
        cells += [_cell(r[f"{t['task']}_mean"], r[f"{t['task']}_ci95"], r[f"{t['task']}_n"],
                        bool(bold[t["task"]][i]), "md") for t in tasks]
        cells.append(format_params(r["parameters"]))
        ov = r["overall"]
        cells.append("" if pd.isna(ov) else (f"**{ov:.1f}**" if bold_overall[i] else f"{ov:.1f}"))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", table_notes(table), ""]
    return "\n".join(lines)


def to_latex(table: pd.DataFrame, caption: str = "", label: str = "tab:results") -> str:
    """A booktabs `table` float; needs only booktabs. Wide tables: define \\msmfittable (see main.tex)."""
    tasks = _tasks_of(table)
    ncol = len(tasks) + 3
    short = ("Cells: mean and 95% confidence half-width over probe seeds, in percent; bold: best "
             "pretrained model per column; full definitions below the table.")
    full_caption = latex_escape((caption + " " if caption else "") + short)
    out = [r"% generated by msmbench.report.tables.write_tables; do not edit",
           r"\providecommand{\msmfittable}[1]{#1}",
           r"\begin{table}[tbp]", r"\centering",
           rf"\caption{{{full_caption}}}", rf"\label{{{label}}}",
           r"\scriptsize", r"\setlength{\tabcolsep}{3pt}",
           r"\msmfittable{%", r"\begin{tabular}{l" + "r" * (ncol - 1) + "}", r"\toprule"]
    out.append(" & ".join(["Model"] + [latex_escape(h) for h in _header_labels(tasks)]
                          + ["Params", "Overall"]) + r" \\")
    out.append(" & ".join([""] + [latex_escape(METRIC_SHORT.get(t["metric"], t["metric"])) for t in tasks]
                          + ["(M)", "(0--100)"]) + r" \\")
    out.append(r"\midrule")
    bold = {t["task"]: best_mask(table, f"{t['task']}_mean") for t in tasks}
    bold_overall = best_mask(table, "overall")
    previous = None
    for i, r in table.iterrows():
        if previous is not None and r["kind"] != previous:
            out.append(r"\midrule")
        previous = r["kind"]
        cells = [latex_escape(r["row"])]
        cells += [_cell(r[f"{t['task']}_mean"], r[f"{t['task']}_ci95"], r[f"{t['task']}_n"],
                        bool(bold[t["task"]][i]), "tex") for t in tasks]
        cells.append(format_params(r["parameters"]))
        ov = r["overall"]
        cells.append("" if pd.isna(ov) else (rf"\textbf{{{ov:.1f}}}" if bold_overall[i] else f"{ov:.1f}"))
        out.append(" & ".join(cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}}", r"\par\smallskip",
            r"\begin{minipage}{\linewidth}\scriptsize " + latex_escape(table_notes(table)) + r"\end{minipage}",
            r"\end{table}", ""]
    return "\n".join(out)


def to_csv_frame(table: pd.DataFrame) -> pd.DataFrame:
    """The machine-readable table: numbers only, units in the column names (percent, millions)."""
    tasks = _tasks_of(table)
    out = table[["row", "model", "kind", "backbone", "size", "objective", "parameters"]].copy()
    for t in tasks:
        name = t["task"]
        out[f"{name}_mean_pct"] = table[f"{name}_mean"]
        out[f"{name}_ci95_pct"] = table[f"{name}_ci95"]
        out[f"{name}_n_seeds"] = table[f"{name}_n"]
    out["overall_norm"] = table["overall"]
    out["mean_score_pct"] = table["mean_score"]
    return out


def write_tables(table: pd.DataFrame, out_dir: str | os.PathLike, caption: str = "") -> list[Path]:
    """Write results.csv (numbers), results.md and results.tex (formatted, bold best) atomically."""
    out_dir = Path(out_dir)
    csv_path, md_path, tex_path = out_dir / "results.csv", out_dir / "results.md", out_dir / "results.tex"
    with atomic_path(csv_path) as tmp:
        to_csv_frame(table).to_csv(tmp, index=False, lineterminator="\n")
    write_text(md_path, to_markdown(table, caption))
    write_text(tex_path, to_latex(table, caption))
    return [csv_path, md_path, tex_path]


# ------------------------------------------------------------------------------------------------
# Headline numbers for the paper
# ------------------------------------------------------------------------------------------------
# Macros defined for every run, whatever models and tasks it has: the only ones paper/main.tex uses.
GENERIC_MACROS = (
    "msmNumTasks", "msmNumModels", "msmNumPretrained", "msmNumBackbones", "msmNumSeeds", "msmTaskNames",
    "msmBestModel", "msmBestBackbone", "msmBestOverall", "msmBestMeanScore", "msmBestParams", "msmBestModelId",
    "msmOverallDefinition", "msmMeanScoreDefinition", "msmCIDefinition", "msmOverallRanking",
    "msmBackboneComparison", "msmPretrainingEffect", "msmBaselineText",
)
_DIGITS = ("Zero", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine")


def macro_name(*parts: str, prefix: str = "msm") -> str:
    """A LaTeX control-word name (letters only) from free text: "mamba-cpu-2" -> "msmMambaCpuTwo".

    Non-letters separate words; each digit becomes its English word, so names stay distinct.
    """
    words: list[str] = []
    for part in parts:
        for token in re.findall(r"[A-Za-z]+|[0-9]", str(part)):
            words.append(_DIGITS[int(token)] if token.isdigit() else token[:1].upper() + token[1:])
    name = prefix + "".join(words)
    assert re.fullmatch(r"[A-Za-z]+", name), name
    return name


def _fmt(value: float, digits: int = 1) -> str:
    return "--" if value is None or pd.isna(value) else f"{value:.{digits}f}"


def headline_numbers(summary: pd.DataFrame, overall: pd.DataFrame) -> dict[str, str]:
    """Macro name -> LaTeX text. Generic names (always defined, used by paper/main.tex) plus one set per
    model (msmOverall<Model>, msmMeanScore<Model>, msmParams<Model>, msmLabel<Model>), backbone and task."""
    tasks = task_order_of(summary)
    task_meta = summary.drop_duplicates("task").set_index("task")
    pre = overall[overall["kind"] == "pretrained"]
    pool = pre if len(pre) else overall
    best = pool.loc[pool["overall"].idxmax()]
    n_seeds = summary["n_seeds"]
    seeds = str(n_seeds.min()) if n_seeds.min() == n_seeds.max() else f"{n_seeds.min()} to {n_seeds.max()}"
    esc = latex_escape
    m: dict[str, str] = {
        "msmNumTasks": str(len(tasks)),
        "msmNumModels": str(len(overall)),
        "msmNumPretrained": str(len(pre)),
        "msmNumBackbones": str(pre["backbone"].nunique()),
        "msmNumSeeds": seeds,
        "msmTaskNames": esc(", ".join(str(task_meta.at[t, "paper_task"]) for t in tasks)),
        "msmBestModel": esc(best["label"]),
        "msmBestBackbone": esc(backbone_name(best["backbone"])),
        "msmBestOverall": _fmt(best["overall"]),
        "msmBestMeanScore": _fmt(best["mean_score"]),
        "msmBestParams": format_params(best["parameters"]) or "--",
        # raw model name for file names (figures/reconstruction_<model>.pdf); empty if it is not plain
        "msmBestModelId": str(best["model"]) if re.fullmatch(r"[A-Za-z0-9.-]+", str(best["model"])) else "",
        "msmOverallDefinition": esc(OVERALL_DEFINITION),
        "msmMeanScoreDefinition": esc(MEAN_SCORE_DEFINITION),
        "msmCIDefinition": esc(CI_DEFINITION),
        # pretrained models only (all models if none), best first
        "msmOverallRanking": esc("; ".join(f"{r.label}: {r.overall:.1f}" for r in
                                           pool.sort_values("overall", ascending=False, kind="stable")
                                           .itertuples())),
        "msmBackboneComparison": esc(_backbone_comparison(summary, overall)),
        "msmPretrainingEffect": esc(_pretraining_effect(overall)),
        "msmBaselineText": esc(_baseline_text(overall)),
    }
    assert tuple(m) == GENERIC_MACROS
    per_model: dict[str, str] = {}
    for r in overall.itertuples():
        per_model[macro_name("Overall", r.model)] = _fmt(r.overall)
        per_model[macro_name("MeanScore", r.model)] = _fmt(r.mean_score)
        per_model[macro_name("Params", r.model)] = format_params(r.parameters) or "--"
        per_model[macro_name("Label", r.model)] = esc(r.label)
    for backbone, g in pre.groupby("backbone", sort=False):
        b = g.loc[g["overall"].idxmax()]
        per_model[macro_name("Best", backbone, "Model")] = esc(b["label"])
        per_model[macro_name("Best", backbone, "Overall")] = _fmt(b["overall"])
    for t in tasks:
        s = summary[summary["task"] == t]
        if len(pre):  # best among the pretrained models, as the bold in the table
            s = s[s["kind"] == "pretrained"]
        b = s.loc[s["mean"].idxmax()]
        per_model[macro_name("Best", t, "Model")] = esc(b["label"])
        per_model[macro_name("Best", t, "Score")] = _fmt(100 * b["mean"])
        per_model[macro_name("TaskName", t)] = esc(task_meta.at[t, "paper_task"])
    for name, value in per_model.items():  # collisions (e.g. "a-b" vs "a_b") get a distinct suffix
        while name in m:
            name += "Alt"
        m[name] = value
    return m


def _backbone_comparison(summary: pd.DataFrame, overall: pd.DataFrame) -> str:
    """Per size: each non-Transformer backbone against the Transformer of the same size."""
    pre = overall[overall["kind"] == "pretrained"]
    sentences = []
    for size, g in pre.groupby("size", sort=False):
        tr = g[g["backbone"] == "transformer"]
        others = g[g["backbone"] != "transformer"]
        if tr.empty or others.empty:
            continue
        t = tr.iloc[0]
        parts = []
        for o in others.itertuples():
            s_o = summary[summary["model"] == o.model].set_index("task")["mean"]
            s_t = summary[summary["model"] == t["model"]].set_index("task")["mean"]
            rel = 100 * (s_o - s_t) / s_t.where(s_t > 0)
            rel = rel.dropna()
            gain = f", up to {rel.max():+.1f}% relative on a single task" if len(rel) else ""
            parts.append(f"{backbone_name(o.backbone)} {o.overall:.1f} ({format_params(o.parameters)}M "
                         f"parameters{gain})")
        sentences.append(f"At size {size}, the Transformer scores {t['overall']:.1f} overall "
                         f"({format_params(t['parameters'])}M parameters) against " + "; ".join(parts) + ".")
    if not sentences:
        return "This run has no pair of Transformer and recurrent backbones of the same size to compare."
    return " ".join(sentences)


def _pretraining_effect(overall: pd.DataFrame) -> str:
    pre = overall[overall["kind"] == "pretrained"]
    rnd = overall[overall["kind"] == "random_init"]
    parts = []
    for r in rnd.itertuples():
        match = pre[(pre["backbone"] == r.backbone) & (pre["size"] == r.size)]
        if len(match):
            p = match.iloc[0]
            parts.append(f"{p['label']} {p['mean_score']:.1f} vs {r.mean_score:.1f} untrained")
    if not parts:
        return "No random-init encoder was evaluated in this run."
    return "Mean score of pretrained vs randomly initialised encoders: " + "; ".join(parts) + "."


def _baseline_text(overall: pd.DataFrame) -> str:
    base = overall[overall["kind"] == "baseline"]
    if base.empty:
        return "No log-mel baseline was evaluated in this run."
    return "; ".join(f"{r.label} reaches {r.overall:.1f} overall (mean score {r.mean_score:.1f})"
                     for r in base.itertuples()) + "."


def write_numbers(summary: pd.DataFrame, overall: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write `\\newcommand` macros for the headline numbers (see `headline_numbers`) to `path`."""
    lines = ["% generated by msmbench.report.tables.write_numbers; do not edit"]
    lines += [rf"\newcommand{{\{name}}}{{{value}}}" for name, value in headline_numbers(summary, overall).items()]
    write_text(path, "\n".join(lines) + "\n")
    return Path(path)


def backbone_order(backbones) -> list[str]:
    """Distinct backbones in the shared order (transformer, mamba, xlstm, others alphabetically)."""
    return sorted({b for b in backbones if isinstance(b, str)}, key=backbone_rank)


__all__ = ["results_table", "write_tables", "write_numbers", "headline_numbers", "latex_escape",
           "macro_name", "to_markdown", "to_latex", "to_csv_frame", "table_notes", "best_mask",
           "format_params", "PUBLISHED_REFERENCE"]
