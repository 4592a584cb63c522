"""Aggregation of probe score files: long table -> per-(model, task) summary -> overall score.

Inputs are the probe stage's `results/scores/<model>/<task>.json` files (one per (model, task), one
entry per seed). `collect_scores` validates every file and returns a long table with one row per
(model, task, seed); `summarise` reduces it to mean +/- 95% Student-t half-width per (model, task)
(SPEC.md section 7); `overall_scores` computes the normalised overall score of SPEC.md section 8, whose
exact definition in the overview could not be confirmed, so ours is stated in `OVERALL_DEFINITION`
and printed next to every table that shows it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from msmbench.io import atomic_path, read_json
from msmbench.stats import mean_ci95

KINDS = ("pretrained", "random_init", "baseline")
METRICS = {"top1_acc": "accuracy", "pitch_acc": "pitch accuracy", "mAP": "mAP"}
BACKBONE_ORDER = ("transformer", "mamba", "xlstm")  # then any other backbone, alphabetically
SIZE_ORDER = ("cpu", "tiny", "small", "base")

# Keys every score file must carry. `result` (per-seed details) and `ci95` are not used here: the
# summary recomputes the interval from the seeds, so a stale or null ci95 cannot leak into a table.
REQUIRED_KEYS = ("model", "label", "kind", "backbone", "size", "objective", "parameters", "task",
                 "paper_task", "metric", "chance", "protocol", "seeds", "mean")
MODEL_COLUMNS = ("model", "label", "kind", "backbone", "size", "objective", "parameters")
TASK_COLUMNS = ("task", "paper_task", "metric", "chance")

OVERALL_DEFINITION = (
    "Overall score: for each task, the mean test scores (over seeds) of all models in the table, "
    "pretrained encoders and baselines alike, are min-max normalised across those models "
    "(worst model 0, best model 1; a task on which all models tie gives each of them 0.5), "
    "the normalised scores are averaged over the tasks and multiplied by 100. "
    "It ranks models relative to each other and changes when the set of compared models changes."
)
MEAN_SCORE_DEFINITION = "Mean score: the plain average of the per-task mean scores over tasks, in percent."

_MEAN_TOLERANCE = 1e-6  # the file's own "mean" must agree with the mean of its seeds


# ------------------------------------------------------------------------------------------------
# Ordering shared by tables and figures
# ------------------------------------------------------------------------------------------------
def backbone_rank(backbone: str | None) -> tuple[int, str]:
    """transformer, mamba, xlstm first; other backbones alphabetically; none (log-mel) last."""
    if backbone is None or (isinstance(backbone, float) and math.isnan(backbone)):
        return (len(BACKBONE_ORDER) + 1, "")
    b = str(backbone).lower()
    return (BACKBONE_ORDER.index(b), b) if b in BACKBONE_ORDER else (len(BACKBONE_ORDER), b)


def size_rank(size: str | None) -> tuple[int, str]:
    if size is None or (isinstance(size, float) and math.isnan(size)):
        return (len(SIZE_ORDER) + 1, "")
    s = str(size).lower()
    return (SIZE_ORDER.index(s), s) if s in SIZE_ORDER else (len(SIZE_ORDER), s)


def model_sort_key(kind: str, backbone: str | None, size: str | None, model: str) -> tuple:
    """Pretrained models first (by backbone, then size), then random-init encoders, then baselines."""
    kind_rank = KINDS.index(kind) if kind in KINDS else len(KINDS)
    return (kind_rank, backbone_rank(backbone), size_rank(size), model)


def order_models(frame: pd.DataFrame) -> list[str]:
    """Model names of `frame` (needs model/kind/backbone/size columns) in table order."""
    first = frame.drop_duplicates("model")
    keys = {r.model: model_sort_key(r.kind, _none(r.backbone), _none(r.size), r.model)
            for r in first.itertuples(index=False)}
    return sorted(keys, key=keys.__getitem__)


def _none(value):
    """pandas missing values (None, NaN, NA) -> None."""
    return None if value is None or (not isinstance(value, str) and pd.isna(value)) else value


# ------------------------------------------------------------------------------------------------
# Score files -> long table
# ------------------------------------------------------------------------------------------------
def find_score_files(root: str | os.PathLike) -> list[Path]:
    """All `<root>/<model>/<task>.json`, sorted (a deterministic order for `collect_scores`)."""
    return sorted(Path(root).glob("*/*.json"))


def _fail(path: Path, message: str) -> ValueError:
    return ValueError(f"{path}: {message}")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _validate(path: Path, rec) -> None:
    if not isinstance(rec, dict):
        raise _fail(path, "a score file must hold a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in rec]
    if missing:
        raise _fail(path, f"missing key(s) {', '.join(missing)}")
    for key in ("model", "label", "task", "paper_task"):
        if not isinstance(rec[key], str) or not rec[key]:
            raise _fail(path, f"{key!r} must be a non-empty string, got {rec[key]!r}")
    if rec["kind"] not in KINDS:
        raise _fail(path, f"kind {rec['kind']!r} is not one of {', '.join(KINDS)}")
    if rec["metric"] not in METRICS:
        raise _fail(path, f"metric {rec['metric']!r} is not one of {', '.join(METRICS)}")
    for key in ("backbone", "size", "objective"):
        if rec[key] is not None and not isinstance(rec[key], str):
            raise _fail(path, f"{key!r} must be a string or null, got {rec[key]!r}")
    if rec["kind"] != "baseline":
        for key in ("backbone", "size"):
            if not rec[key]:
                raise _fail(path, f"{key!r} is required for kind {rec['kind']!r}")
    params = rec["parameters"]
    if params is not None and not (isinstance(params, int) and not isinstance(params, bool) and params > 0):
        raise _fail(path, f"'parameters' must be a positive integer or null, got {params!r}")
    if params is None and rec["kind"] != "baseline":
        raise _fail(path, f"'parameters' is null but kind is {rec['kind']!r}")
    if not (_finite(rec["chance"]) and 0.0 <= rec["chance"] <= 1.0):
        raise _fail(path, f"'chance' must be a finite number in [0, 1], got {rec['chance']!r}")
    seeds = rec["seeds"]
    if not isinstance(seeds, list) or not seeds:
        raise _fail(path, "'seeds' must be a non-empty list")
    seen = set()
    for i, entry in enumerate(seeds):
        if not isinstance(entry, dict) or "seed" not in entry or "score" not in entry:
            raise _fail(path, f"seeds[{i}] must be an object with 'seed' and 'score'")
        if not isinstance(entry["seed"], int) or isinstance(entry["seed"], bool):
            raise _fail(path, f"seeds[{i}].seed must be an integer, got {entry['seed']!r}")
        if entry["seed"] in seen:
            raise _fail(path, f"seed {entry['seed']} appears twice")
        seen.add(entry["seed"])
        if not _finite(entry["score"]):
            raise _fail(path, f"seeds[{i}] (seed {entry['seed']}) has a non-finite score {entry['score']!r}")
        if not 0.0 <= entry["score"] <= 1.0:  # scores are fractions; 71.0 would be a percent slip
            raise _fail(path, f"seeds[{i}] (seed {entry['seed']}) score {entry['score']!r} is outside [0, 1]")
    mean = float(np.mean([e["score"] for e in seeds]))
    if not _finite(rec["mean"]) or abs(rec["mean"] - mean) > _MEAN_TOLERANCE:
        raise _fail(path, f"'mean' {rec['mean']!r} disagrees with the mean of its seeds ({mean!r})")


def collect_scores(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Read and validate score files into a long table: one row per (model, task, seed).

    Columns: model, label, kind, backbone, size, objective, parameters (nullable Int64), task,
    paper_task, metric, chance, seed, score, protocol (compact JSON), source (the file).
    Raises ValueError naming the offending file for a missing key, a wrong type or value, a
    non-finite score, a duplicate (model, task), or metadata that disagrees with another file of the
    same model (label, kind, backbone, ...) or of the same task (paper_task, metric, chance).
    """
    rows: list[dict] = []
    models: dict[str, tuple[Path, dict]] = {}
    tasks: dict[str, tuple[Path, dict]] = {}
    pairs: dict[tuple[str, str], Path] = {}
    for p in paths:
        path = Path(p)
        rec = read_json(path)  # FileNotFoundError / ValueError naming the file
        _validate(path, rec)
        key = (rec["model"], rec["task"])
        if key in pairs:
            raise _fail(path, f"duplicate scores for model {key[0]!r} on task {key[1]!r} (also in {pairs[key]})")
        pairs[key] = path
        _check_consistent(path, models, rec["model"], {k: rec[k] for k in MODEL_COLUMNS}, "model")
        _check_consistent(path, tasks, rec["task"], {k: rec[k] for k in TASK_COLUMNS}, "task")
        protocol = json.dumps(rec["protocol"], sort_keys=True, separators=(",", ":"))
        for entry in rec["seeds"]:
            rows.append({**{k: rec[k] for k in MODEL_COLUMNS}, **{k: rec[k] for k in TASK_COLUMNS},
                         "seed": entry["seed"], "score": float(entry["score"]),
                         "protocol": protocol, "source": str(path)})
    if not rows:
        raise ValueError("collect_scores: no score files given")
    df = pd.DataFrame(rows)
    df["parameters"] = df["parameters"].astype("Int64")
    df["chance"] = df["chance"].astype(float)
    df["seed"] = df["seed"].astype(int)
    return df


def _check_consistent(path: Path, seen: dict, name: str, meta: dict, what: str) -> None:
    if name not in seen:
        seen[name] = (path, meta)
        return
    first_path, first = seen[name]
    for k, v in meta.items():
        w = first[k]
        same = (math.isclose(v, w, abs_tol=1e-12) if _finite(v) and _finite(w) else v == w)
        if not same:
            raise _fail(path, f"{what} {name!r} has {k}={v!r} here but {k}={w!r} in {first_path}")


# ------------------------------------------------------------------------------------------------
# Long table -> summary -> overall
# ------------------------------------------------------------------------------------------------
def task_order_of(frame: pd.DataFrame, task_order: Sequence[str] | None = None) -> list[str]:
    """Tasks of `frame` in `task_order` (the config's order); tasks it omits follow in first-seen order."""
    present = list(dict.fromkeys(frame["task"]))
    if task_order is None:
        return present
    ordered = [t for t in task_order if t in present]
    return ordered + [t for t in present if t not in ordered]


def summarise(df: pd.DataFrame, task_order: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (model, task): mean, ci95 (Student-t half-width, NaN for one seed), std, n_seeds.

    Rows are in table order: models as `order_models`, tasks as `task_order` (default: first seen).
    Scores stay fractions in [0, 1] as in the score files.
    """
    tasks = task_order_of(df, task_order)
    out = []
    for (model, task), g in df.groupby(["model", "task"], sort=False):
        mean, ci = mean_ci95(g["score"])
        first = g.iloc[0]
        out.append({**{k: first[k] for k in MODEL_COLUMNS}, **{k: first[k] for k in TASK_COLUMNS},
                    "mean": mean, "ci95": ci,
                    "std": float(g["score"].std(ddof=1)) if len(g) > 1 else math.nan,
                    "n_seeds": int(len(g))})
    summary = sort_summary(pd.DataFrame(out), tasks)
    summary["parameters"] = summary["parameters"].astype("Int64")
    return summary


def sort_summary(summary: pd.DataFrame, task_order: Sequence[str] | None = None) -> pd.DataFrame:
    """Rows in table order: models as `order_models`, then tasks as `task_order` (default: first seen)."""
    models, tasks = order_models(summary), task_order_of(summary, task_order)
    return (summary.assign(_m=summary["model"].map(models.index), _t=summary["task"].map(tasks.index))
            .sort_values(["_m", "_t"]).drop(columns=["_m", "_t"]).reset_index(drop=True))


def check_complete(summary: pd.DataFrame) -> None:
    """Raise ValueError unless every model has a score on every task (overall scores need it)."""
    have = set(zip(summary["model"], summary["task"]))
    missing = [(m, t) for m in dict.fromkeys(summary["model"]) for t in dict.fromkeys(summary["task"])
               if (m, t) not in have]
    if missing:
        listed = ", ".join(f"{m}/{t}" for m, t in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise ValueError(f"overall scores need every model on every task; missing {len(missing)}: {listed}")


def normalised_scores(summary: pd.DataFrame) -> pd.DataFrame:
    """`summary` plus column `normalised`: per task, (mean - min) / (max - min) across its models.

    A task on which every model has the same mean (max == min) gives 0.5 to each: the midpoint
    keeps a tie neutral instead of rewarding or punishing everyone, and avoids 0/0.
    """
    out = summary.copy()
    grouped = out.groupby("task", sort=False)["mean"]
    lo, hi = grouped.transform("min"), grouped.transform("max")
    span = hi - lo
    tied = span <= 1e-12
    out["normalised"] = np.where(tied, 0.5, (out["mean"] - lo) / span.where(~tied, 1.0))
    return out


def overall_scores(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per model (table order): normalised `overall` and plain `mean_score`, both 0-100.

    overall = 100 * mean over tasks of the min-max normalised per-task mean (see OVERALL_DEFINITION;
    all models in `summary` take part, baselines included); mean_score = 100 * mean over tasks of the
    per-task mean. Every model must have every task (ValueError otherwise).
    """
    check_complete(summary)
    norm = normalised_scores(summary)
    rows = []
    for model, g in norm.groupby("model", sort=False):
        first = g.iloc[0]
        rows.append({**{k: first[k] for k in MODEL_COLUMNS}, "n_tasks": int(len(g)),
                     "overall": 100.0 * float(g["normalised"].mean()),
                     "mean_score": 100.0 * float(g["mean"].mean())})
    overall = pd.DataFrame(rows)
    overall["parameters"] = overall["parameters"].astype("Int64")
    order = order_models(overall)
    overall["_m"] = overall["model"].map(order.index)
    return overall.sort_values("_m").drop(columns="_m").reset_index(drop=True)


def write_csv(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """`frame` as CSV (no index), written atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n")
    return path


def write_summary(scores: pd.DataFrame, summary: pd.DataFrame, out_dir: str | os.PathLike,
                  overall: pd.DataFrame | None = None) -> list[Path]:
    """Write `scores.csv` (long, one row per seed), `summary.csv` and, if given, `overall.csv`."""
    out_dir = Path(out_dir)
    written = [write_csv(scores, out_dir / "scores.csv"), write_csv(summary, out_dir / "summary.csv")]
    if overall is not None:
        written.append(write_csv(overall, out_dir / "overall.csv"))
    return written


SUMMARY_COLUMNS = MODEL_COLUMNS + TASK_COLUMNS + ("mean", "ci95", "std", "n_seeds")


def read_summary(path: str | os.PathLike) -> pd.DataFrame:
    """Load `summary.csv` (as written by `write_summary`) with its dtypes restored.

    Missing text fields (a baseline's backbone/size/objective) come back missing, as in the output of
    `summarise`; parameters as nullable Int64 and a single seed's ci95 as NaN. Raises ValueError
    naming the file if a column is missing.
    """
    path = Path(path)
    try:
        df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    missing = [c for c in SUMMARY_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    for col in ("model", "label", "kind", "backbone", "size", "objective", "task", "paper_task", "metric"):
        df[col] = df[col].astype("str")  # pandas' string dtype; missing stays missing (NaN)
    df["parameters"] = df["parameters"].astype("Int64")
    for col in ("chance", "mean", "ci95", "std"):
        df[col] = df[col].astype(float)
    df["n_seeds"] = df["n_seeds"].astype(int)
    return df


def aggregate(score_paths: Iterable[str | os.PathLike], out_long: str | os.PathLike,
              out_summary: str | os.PathLike, task_order: Sequence[str] | None = None) -> pd.DataFrame:
    """Score files -> `out_long` (one row per seed) and `out_summary` (one row per model and task).

    The CLI's `msmbench aggregate`. Tasks keep `task_order`, else the order in which the files name
    them (the workflow lists them in config order). Returns the summary.
    """
    scores = collect_scores(score_paths)
    summary = summarise(scores, task_order)
    write_csv(scores, out_long)
    write_csv(summary, out_summary)
    return summary
