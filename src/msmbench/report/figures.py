"""The paper's figures: per-task scores, overall score vs parameters, pretraining loss, reconstructions
and cost vs sequence length. Each is saved as `<out_stem>.png` (200 dpi) and `<out_stem>.pdf`, atomically.

Figures are built on `matplotlib.figure.Figure` directly (no pyplot): the Agg/PDF canvases are used
whatever the session's backend, nothing global is left behind, and figures are freed when dropped.
Colours: one fixed colour per backbone in every figure (seaborn's colour-blind palette, itself the
Okabe-Ito set), one marker (scatter) or line style (curves) per size; random-init encoders are hollow
markers / dashed lines, baselines grey.
"""

from __future__ import annotations

import math
import os
import zlib
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import matplotlib as mpl
import matplotlib.transforms as mtransforms
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from msmbench.io import atomic_path, read_json
from msmbench.report.aggregate import SIZE_ORDER, backbone_rank, order_models, size_rank, task_order_of
from msmbench.report.tables import backbone_name

# ------------------------------------------------------------------------------------------------
# Shared style
# ------------------------------------------------------------------------------------------------
_CB = sns.color_palette("colorblind")  # 10 colours: Okabe-Ito order, safe for the common colour blindnesses
BACKBONE_COLOURS = {"transformer": _CB[0], "mamba": _CB[3], "xlstm": _CB[2]}  # blue, vermillion, green
_EXTRA_COLOURS = [_CB[1], _CB[4], _CB[5], _CB[8], _CB[9], _CB[6]]
BASELINE_COLOUR = _CB[7]  # grey
SIZE_MARKERS = {"cpu": "o", "tiny": "s", "small": "D", "base": "^"}
SIZE_LINESTYLES = {"cpu": ":", "tiny": "-.", "small": "--", "base": "-"}
CHANCE_STYLE = dict(color="0.35", ls="--", lw=1.0)
METRIC_AXIS = {"top1_acc": "Accuracy", "pitch_acc": "Pitch accuracy", "mAP": "mAP"}
HOP_SECONDS = 0.010  # log-mel hop: 160 samples at 16 kHz (SPEC.md section 1)

RC = {
    "font.size": 9, "axes.titlesize": 9.5, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8,
    "legend.fontsize": 8, "legend.frameon": False, "figure.titlesize": 11,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
    "grid.linewidth": 0.6, "lines.linewidth": 1.6, "lines.markersize": 5.5, "errorbar.capsize": 2.5,
    "pdf.fonttype": 42, "ps.fonttype": 42,  # embed TrueType: text stays editable and searchable
    "savefig.dpi": 200,
}


def backbone_colour(backbone) -> tuple:
    """Fixed colour of a backbone; unknown backbones get a stable colour from their name's CRC32."""
    if backbone is None or (not isinstance(backbone, str) and pd.isna(backbone)):
        return BASELINE_COLOUR
    b = str(backbone).lower()
    if b in BACKBONE_COLOURS:
        return BACKBONE_COLOURS[b]
    return _EXTRA_COLOURS[zlib.crc32(b.encode()) % len(_EXTRA_COLOURS)]


def size_marker(size) -> str:
    return SIZE_MARKERS.get(str(size).lower(), "P") if isinstance(size, str) else "*"


def size_linestyle(size) -> str:
    return SIZE_LINESTYLES.get(str(size).lower(), (0, (5, 1, 1, 1))) if isinstance(size, str) else "-"


def model_style(kind: str, backbone, size) -> dict:
    """Marker style of one model: backbone colour, size marker, hollow if random-init, grey baseline."""
    colour = BASELINE_COLOUR if kind == "baseline" else backbone_colour(backbone)
    return {"color": colour, "marker": size_marker(size) if kind != "baseline" else "X",
            "mfc": "white" if kind == "random_init" else colour, "mec": colour}


def _new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _stem(out_stem: str | os.PathLike) -> Path:
    p = Path(out_stem)
    return p.with_suffix("") if p.suffix.lower() in (".png", ".pdf") else p


def save_figure(fig: Figure, out_stem: str | os.PathLike) -> list[Path]:
    """Write `<out_stem>.png` (200 dpi) and `<out_stem>.pdf` atomically; no timestamps (reproducible)."""
    stem = _stem(out_stem)
    paths = []
    for ext, metadata in (("png", {"Software": None}), ("pdf", {"CreationDate": None, "Producer": None})):
        path = stem.with_name(f"{stem.name}.{ext}")
        with mpl.rc_context(RC), atomic_path(path) as tmp:
            # tight bbox as a safety net: a long title or legend is never clipped at the figure edge
            fig.savefig(tmp, format=ext, dpi=RC["savefig.dpi"], metadata=metadata, bbox_inches="tight",
                        pad_inches=0.05)
        paths.append(path)
    return paths


def _legend_handles(entries: Iterable[tuple[str, dict]]) -> list[Line2D]:
    return [Line2D([], [], label=label, **kw) for label, kw in entries]


def _backbone_entries(backbones) -> list[tuple[str, dict]]:
    order = sorted({b for b in backbones if isinstance(b, str)}, key=backbone_rank)
    return [(backbone_name(b), {"color": backbone_colour(b), "marker": "o", "ls": "-"}) for b in order]


def _size_entries(sizes, lines: bool = False) -> list[tuple[str, dict]]:
    order = sorted({s for s in sizes if isinstance(s, str)}, key=size_rank)
    if lines:
        return [(f"size {s}", {"color": "0.3", "ls": size_linestyle(s), "marker": size_marker(s)}) for s in order]
    return [(f"size {s}", {"color": "0.3", "ls": "none", "marker": size_marker(s)}) for s in order]


# ------------------------------------------------------------------------------------------------
# Per-task scores
# ------------------------------------------------------------------------------------------------
def plot_task_scores(summary: pd.DataFrame, out_stem: str | os.PathLike,
                     task_order: Sequence[str] | None = None) -> list[Path]:
    """Dot plot, one panel per task: mean score per model with its 95% CI (no bar for one seed).

    Models run down the shared y axis in table order; the dashed line marks the task's chance level.
    """
    tasks = task_order_of(summary, task_order)
    models = order_models(summary)
    meta = summary.drop_duplicates("model").set_index("model")
    ncols = min(len(tasks), 5)
    nrows = math.ceil(len(tasks) / ncols)
    label_width = 0.3 + 0.065 * max(len(str(meta.at[m, "label"])) for m in models)
    with mpl.rc_context(RC):
        width = max(7.0, label_width + 2.3 * ncols)
        fig = _new_figure(width, 1.1 + nrows * (0.55 + 0.24 * len(models)))
        axes = np.atleast_1d(fig.subplots(nrows, ncols, sharey=True, squeeze=False)).ravel()
        ypos = {m: i for i, m in enumerate(models)}
        for ax, task in zip(axes, tasks):
            rows = summary[summary["task"] == task]
            first = rows.iloc[0]
            for r in rows.itertuples():
                st = model_style(r.kind, r.backbone, r.size)
                xerr = 100 * r.ci95 if np.isfinite(r.ci95) else None
                ax.errorbar(100 * r.mean, ypos[r.model], xerr=xerr, fmt=st["marker"], color=st["color"],
                            mfc=st["mfc"], mec=st["mec"], ecolor=st["color"], elinewidth=1.2, zorder=3)
            ax.axvline(100 * first["chance"], **CHANCE_STYLE, zorder=1)
            _block_separators(ax, meta, models)
            ax.set_title(str(first["paper_task"]))
            ax.set_xlabel(f"{METRIC_AXIS.get(first['metric'], first['metric'])} (%)")
            ax.grid(axis="y", visible=False)
            lo = min(100 * first["chance"], float(np.nanmin(100 * (rows["mean"] - rows["ci95"].fillna(0)))))
            hi = float(np.nanmax(100 * (rows["mean"] + rows["ci95"].fillna(0))))
            pad = max(1.0, 0.08 * (hi - lo))
            ax.set_xlim(max(lo - pad, -1.0), min(hi + pad, 101.0))
        for ax in axes[len(tasks):]:
            ax.set_visible(False)
        axes[0].set_yticks(range(len(models)), [str(meta.at[m, "label"]) for m in models])
        axes[0].set_ylim(len(models) - 0.5, -0.5)  # first model on top
        n = summary["n_seeds"]
        if n.max() == 1:
            fig.suptitle("Downstream probe scores per task (one seed: no confidence interval)")
        else:
            seeds = f"{n.min()}" if n.min() == n.max() else f"{n.min()}-{n.max()}"
            fig.suptitle(f"Downstream probe scores per task (mean ± 95% CI over {seeds} seeds)")
        entries = [("chance level", {**CHANCE_STYLE, "marker": None})]
        kinds = set(summary["kind"])
        if "pretrained" in kinds:
            entries.append(("pretrained (filled)", {"color": "0.3", "ls": "none", "marker": "o"}))
        if "random_init" in kinds:
            entries.append(("random init (hollow)", {"color": "0.3", "mfc": "white", "ls": "none", "marker": "o"}))
        if "baseline" in kinds:
            entries.append(("baseline", {"color": BASELINE_COLOUR, "ls": "none", "marker": "X"}))
        entries += _backbone_entries(summary["backbone"]) + _size_entries(summary["size"])
        fig.legend(handles=_legend_handles(entries), loc="outside lower center",
                   ncols=min(len(entries), max(2, int(width // 1.6))))
    return save_figure(fig, out_stem)


def _block_separators(ax, meta: pd.DataFrame, models: list[str]) -> None:
    """Thin lines between the pretrained / random-init / baseline blocks."""
    kinds = [meta.at[m, "kind"] for m in models]
    for i in range(1, len(kinds)):
        if kinds[i] != kinds[i - 1]:
            ax.axhline(i - 0.5, color="0.8", lw=0.8, zorder=0)


# ------------------------------------------------------------------------------------------------
# Overall score vs parameters
# ------------------------------------------------------------------------------------------------
def plot_overall_vs_params(summary: pd.DataFrame, overall: pd.DataFrame,
                           out_stem: str | os.PathLike) -> list[Path]:
    """Two panels: normalised overall score and plain mean score vs encoder parameters (log x).

    One marker per model; lines join the sizes of one backbone (solid pretrained, dashed random
    init); baselines without parameters (log-mel) are horizontal reference lines.
    """
    del summary  # the overall frame carries everything; kept for a uniform signature
    with mpl.rc_context(RC):
        fig = _new_figure(9.0, 3.9)
        axes = fig.subplots(1, 2)
        panels = (("overall", "Overall score (normalised, 0-100)", "Normalised overall score"),
                  ("mean_score", "Mean score over tasks (%)", "Mean score over tasks"))
        has_points = overall["parameters"].notna() & (overall["kind"] != "baseline")
        for ax, (col, ylabel, title) in zip(axes, panels):
            pts = overall[has_points]
            for (kind, backbone), g in pts.groupby(["kind", "backbone"], sort=False):
                g = g.assign(pm=g["parameters"].astype(float) / 1e6).sort_values("pm")
                colour = backbone_colour(backbone)
                ax.plot(g["pm"], g[col], ls="--" if kind == "random_init" else "-", color=colour,
                        lw=1.2 if kind == "random_init" else 1.6, zorder=2)
                for r in g.itertuples():
                    st = model_style(kind, backbone, r.size)
                    ax.plot(r.pm, getattr(r, col), ls="none", marker=st["marker"], color=colour,
                            mfc=st["mfc"], mec=st["mec"], ms=7, zorder=3)
            for r in overall[~has_points].itertuples():
                ax.axhline(getattr(r, col), color=BASELINE_COLOUR, ls=":", lw=1.4, zorder=1)
                ax.annotate(r.label, xy=(1.0, getattr(r, col)), xycoords=("axes fraction", "data"),
                            xytext=(-2, 3), textcoords="offset points", ha="right", va="bottom",
                            fontsize=7.5, color="0.3")
            if has_points.any():
                ax.set_xscale("log")
                p = pts["parameters"].astype(float) / 1e6
                ax.set_xlim(p.min() / 1.8, p.max() * 1.8)
            else:
                ax.set_xscale("log")
                ax.set_xlim(0.1, 100)
            ax.set_xlabel("Encoder parameters (millions, log scale)")
            ax.set_ylabel(ylabel)
            ax.set_title(title)
        fig.suptitle("Downstream score vs model size")
        entries = _backbone_entries(overall.loc[has_points, "backbone"])
        entries += _size_entries(overall.loc[has_points, "size"])
        if (overall["kind"] == "random_init").any():
            entries.append(("random init", {"color": "0.3", "ls": "--", "marker": "o", "mfc": "white"}))
        if (~has_points).any():
            entries.append(("baseline (no parameters)", {"color": BASELINE_COLOUR, "ls": ":"}))
        fig.legend(handles=_legend_handles(entries), loc="outside lower center", ncols=min(len(entries), 6))
    return save_figure(fig, out_stem)


# ------------------------------------------------------------------------------------------------
# Pretraining loss
# ------------------------------------------------------------------------------------------------
def _model_meta(model: str, meta: pd.DataFrame | None) -> tuple[str, str | None, str | None]:
    """(label, backbone, size) of a model: from `meta` if it lists it, else parsed from the name
    (`<backbone>-<size>-<objective>`, the workflow's naming)."""
    if meta is not None and "model" in meta and (meta["model"] == model).any():
        r = meta[meta["model"] == model].iloc[0]
        return str(r.get("label", model)), r.get("backbone"), r.get("size")
    parts = model.split("-")
    size = parts[1] if len(parts) > 1 and parts[1] in SIZE_ORDER else None
    return (f"{backbone_name(parts[0])} {size}" if size else model), parts[0], size


def plot_pretrain_loss(metrics: Mapping[str, pd.DataFrame], out_stem: str | os.PathLike,
                       meta: pd.DataFrame | None = None) -> list[Path]:
    """Pretraining loss vs optimiser step (left) and vs epoch (right), one curve per model.

    `metrics`: model -> its metrics.csv frame (step, epoch, loss, ...). `meta` (optional, e.g. the
    summary) supplies labels and backbones; otherwise they are parsed from the model name. Long runs
    are drawn raw (faint) plus a centred moving average; the y axis is logarithmic when all losses > 0.
    """
    if not metrics:
        raise ValueError("plot_pretrain_loss: no models given")
    for model, df in metrics.items():
        missing = {"step", "epoch", "loss"} - set(df.columns)
        if missing:
            raise ValueError(f"metrics of {model}: missing column(s) {', '.join(sorted(missing))}")
    order = sorted(metrics, key=lambda m: (backbone_rank(_model_meta(m, meta)[1]),
                                           size_rank(_model_meta(m, meta)[2]), m))
    with mpl.rc_context(RC):
        fig = _new_figure(9.0, 3.8)
        axes = fig.subplots(1, 2, sharey=True)
        positive = all((df["loss"].dropna() > 0).all() for df in metrics.values())
        handles = []
        for model in order:
            df = metrics[model].dropna(subset=["loss"]).sort_values("step")
            label, backbone, size = _model_meta(model, meta)
            colour, ls = backbone_colour(backbone), size_linestyle(size)
            window = max(1, len(df) // 25)
            for ax, x in zip(axes, ("step", "epoch")):
                if len(df) <= 1:
                    ax.plot(df[x], df["loss"], ls="none", marker=size_marker(size), color=colour)
                    continue
                if window > 1:
                    ax.plot(df[x], df["loss"], color=colour, lw=0.6, alpha=0.3)
                    smooth = df["loss"].rolling(window, center=True, min_periods=1).mean()
                    ax.plot(df[x], smooth, color=colour, ls=ls)
                else:
                    ax.plot(df[x], df["loss"], color=colour, ls=ls)
            handles.append(Line2D([], [], color=colour, ls=ls, label=label))
        for ax, xlabel in zip(axes, ("Optimiser step", "Epoch")):
            ax.set_xlabel(xlabel)
            if positive:
                ax.set_yscale("log")
        axes[0].set_ylabel("Training loss (MSE, log scale)" if positive else "Training loss (MSE)")
        axes[0].set_title("Loss vs step")
        axes[1].set_title("Loss vs epoch")
        fig.suptitle("Masked-spectrogram pretraining loss")
        fig.legend(handles=handles, loc="outside right center")
    return save_figure(fig, out_stem)


# ------------------------------------------------------------------------------------------------
# Reconstructions
# ------------------------------------------------------------------------------------------------
def plot_reconstruction(npz_path: str | os.PathLike, out_stem: str | os.PathLike,
                        max_examples: int = 4) -> list[Path]:
    """Rows = examples; columns = input log-mel, mask, masked input, reconstruction.

    Arrays are time-major [n, T, F]; they are drawn with time on x (seconds, 10 ms hop) and mel bins
    on y. Input, masked input and reconstruction share one colour scale (1st-99th percentile of inputs
    and reconstructions); masked areas of the masked input are grey. Titles give the per-example mask
    ratio and the reconstruction MSE on masked and visible areas.
    """
    path = Path(npz_path)
    with np.load(path, allow_pickle=False) as z:
        missing = {"spec", "mask", "recon"} - set(z.files)
        if missing:
            raise ValueError(f"{path}: missing array(s) {', '.join(sorted(missing))}")
        spec, mask, recon = (np.asarray(z[k], dtype=np.float32) for k in ("spec", "mask", "recon"))
        model = str(z["model"]) if "model" in z.files else path.parent.name
    if spec.ndim != 3 or spec.shape != mask.shape or spec.shape != recon.shape or spec.shape[0] == 0:
        raise ValueError(f"{path}: spec, mask and recon must share one shape [n, T, F], got "
                         f"{spec.shape}, {mask.shape}, {recon.shape}")
    n = min(spec.shape[0], max_examples)
    spec, mask, recon = spec[:n], mask[:n], recon[:n]
    T, F = spec.shape[1:]
    extent = (0.0, T * HOP_SECONDS, 0.0, F)
    both = np.concatenate([spec.ravel(), recon.ravel()])
    both = both[np.isfinite(both)]
    vmin, vmax = (np.percentile(both, [1, 99]) if both.size else (0.0, 1.0))
    if vmax <= vmin:
        vmin, vmax = vmin - 1.0, vmax + 1.0
    cmap = mpl.colormaps["magma"].with_extremes(bad="#c8c8c8")
    with mpl.rc_context(RC):
        fig = _new_figure(11.0, 0.9 + 1.9 * n)
        axes = fig.subplots(n, 4, sharex=True, sharey=True, squeeze=False)
        im = None
        for i in range(n):
            masked = mask[i] > 0.5
            err = (recon[i] - spec[i]) ** 2
            mse_m = float(err[masked].mean()) if masked.any() else math.nan
            mse_v = float(err[~masked].mean()) if (~masked).any() else math.nan
            panels = [(spec[i], cmap, vmin, vmax, "Input log-mel", None),
                      (mask[i], mpl.colormaps["Greys"], 0.0, 1.0, "Mask (black = masked)",
                       f"{masked.mean():.0%} masked"),
                      (np.ma.masked_where(masked, spec[i]), cmap, vmin, vmax, "Masked input (grey = hidden)", None),
                      (recon[i], cmap, vmin, vmax, "Reconstruction",
                       f"MSE masked {mse_m:.3f} / visible {mse_v:.3f}")]
            for j, (data, cm, lo, hi, title, note) in enumerate(panels):
                ax = axes[i, j]
                h = ax.imshow(np.ma.asarray(data).T, origin="lower", aspect="auto", extent=extent, cmap=cm,
                              vmin=lo, vmax=hi, interpolation="nearest")
                if j == 0:
                    im = h
                    ax.set_ylabel(f"Example {i + 1}\nMel bin")
                if i == 0:
                    ax.set_title(title)
                if note:
                    ax.text(0.02, 0.96, note, transform=ax.transAxes, ha="left", va="top", fontsize=7,
                            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.85})
                ax.grid(False)
                if i == n - 1:
                    ax.set_xlabel("Time (s)")
        fig.colorbar(im, ax=axes, shrink=0.9, label="Standardised log-mel (shared scale)")
        fig.suptitle(f"Masked spectrogram reconstruction: {model}")
    return save_figure(fig, out_stem)


# ------------------------------------------------------------------------------------------------
# Cost vs sequence length
# ------------------------------------------------------------------------------------------------
SCALING_KEYS = ("backbone", "size", "tokens", "train_step_ms", "peak_mem_gib", "infer_clips_per_s", "status")
_SCALING_PANELS = (  # column, y label, title, lower is better
    ("train_step_ms", "Train step time (ms)", "Training step", True),
    ("peak_mem_gib", "Peak GPU memory (GiB)", "Peak memory (training)", True),
    ("infer_clips_per_s", "Inference throughput (clips/s)", "Inference throughput", False),
)


def load_scaling(records) -> pd.DataFrame:
    """Scaling records (list of dicts, a DataFrame or a path to scaling.json) as a validated frame."""
    source = "scaling records"
    if isinstance(records, (str, os.PathLike)):
        source = str(records)
        records = read_json(records)
    df = pd.DataFrame(records).copy() if not isinstance(records, pd.DataFrame) else records.copy()
    if df.empty:
        raise ValueError(f"{source}: no records")
    missing = [k for k in SCALING_KEYS if k not in df.columns]
    if missing:
        raise ValueError(f"{source}: missing key(s) {', '.join(missing)}")
    bad = ~df["status"].isin(["ok", "oom"])
    if bad.any():
        raise ValueError(f"{source}: status must be 'ok' or 'oom', got {sorted(set(df.loc[bad, 'status']))}")
    for col in ("tokens", "train_step_ms", "peak_mem_gib", "infer_clips_per_s"):
        df[col] = pd.to_numeric(df[col], errors="raise").astype(float)
    dup = df.duplicated(["backbone", "size", "tokens"], keep=False)
    if dup.any():
        first = df[dup].iloc[0]
        raise ValueError(f"{source}: more than one record for backbone {first['backbone']!r}, size "
                         f"{first['size']!r}, {int(first['tokens'])} tokens (one device per scaling file)")
    return df


def find_crossovers(records, column: str = "train_step_ms") -> list[dict]:
    """Where a non-Transformer backbone overtakes the Transformer of the same size on `column`.

    Compares at the token counts both measured; between the last length where attention is at least
    as good and the first where the other backbone is better, the crossover is interpolated linearly
    in log-log space. Attention running out of memory where the other still runs counts as overtaking
    at that length (if it had not happened before). Returns dicts: backbone, size, tokens (float),
    kind ("measured" or "oom").
    """
    df = load_scaling(records)
    lower_better = dict((c, lb) for c, _, _, lb in _SCALING_PANELS)[column]
    out = []
    for size, g in df.groupby("size", sort=False):
        tr = g[g["backbone"] == "transformer"].set_index("tokens")
        if tr.empty:
            continue
        for backbone, h in g[g["backbone"] != "transformer"].groupby("backbone", sort=False):
            h = h.set_index("tokens")
            tokens = sorted(set(tr.index) & set(h.index))
            prev = None  # (log tokens, log-ratio) at the last length where attention was not worse
            for t in tokens:
                a, b = tr.at[t, column], h.at[t, column]
                if not np.isfinite(b):
                    prev = None
                    continue
                if not np.isfinite(a):
                    if tr.at[t, "status"] == "oom" and prev is not None:
                        out.append({"backbone": backbone, "size": size, "tokens": float(t), "kind": "oom"})
                        break
                    continue
                d = math.log(b / a) if lower_better else math.log(a / b)  # < 0: the other backbone is better
                if d < 0 and prev is not None:
                    lx0, d0 = prev
                    lx = lx0 + (math.log(t) - lx0) * d0 / (d0 - d)
                    out.append({"backbone": backbone, "size": size, "tokens": float(math.exp(lx)),
                                "kind": "measured"})
                    break
                prev = (math.log(t), d) if d >= 0 else None
    return out


def plot_scaling(records, out_stem: str | os.PathLike) -> list[Path]:
    """Train-step time, peak memory and inference throughput vs sequence length (log-log), per backbone.

    `records`: the bench stage's records (list of dicts, DataFrame or path to scaling.json). Out-of-
    memory runs are drawn as "x" at the top of the time and memory panels and at the bottom of the
    throughput panel (where "no throughput" belongs). Grey guides show a cost linear and quadratic in
    length at the batches measured (flat and ∝ L under a fixed token budget per step);
    a dotted vertical line marks where a recurrent backbone overtakes attention (`find_crossovers`).
    The top axis gives the audio duration of the sequence.
    """
    df = load_scaling(records)
    groups = sorted(df.groupby(["backbone", "size"], sort=False).groups,
                    key=lambda k: (backbone_rank(k[0]), size_rank(k[1])))
    with mpl.rc_context(RC):
        fig = _new_figure(12.0, 4.2)
        axes = fig.subplots(1, 3, sharex=True)
        for ax, (col, ylabel, title, lower_better) in zip(axes, _SCALING_PANELS):
            top = lower_better  # where OOM markers go
            trans = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
            finite = df[col][np.isfinite(df[col]) & (df[col] > 0)]
            for backbone, size in groups:
                g = df[(df["backbone"] == backbone) & (df["size"] == size)].sort_values("tokens")
                colour = backbone_colour(backbone)
                ok = g[np.isfinite(g[col]) & (g[col] > 0)]
                ax.plot(ok["tokens"], ok[col], color=colour, ls=size_linestyle(size), marker=size_marker(size),
                        zorder=3)
                oom = g[~np.isfinite(g[col]) & (g["status"] == "oom")]
                if len(oom):
                    y = 0.96 if top else 0.04
                    ax.scatter(oom["tokens"], np.full(len(oom), y), transform=trans,
                               marker="x", s=55, linewidths=2, color=colour, zorder=4, clip_on=False)
                    for t in oom["tokens"]:
                        ax.annotate("OOM", xy=(t, y), xycoords=trans, xytext=(-6, 0), textcoords="offset points",
                                    ha="right", va="center", fontsize=7, color=colour)
            ax.set_xscale("log")
            ax.set_yscale("log")
            if len(finite):
                lo, hi = finite.min(), finite.max()
                span = max(hi / lo, 10.0) ** 0.25  # headroom for the OOM row and the guides' labels
                ax.set_ylim(lo / span, hi * span)
                if lower_better:
                    _growth_guides(ax, df, col)
            crossovers = find_crossovers(df, col) if len(finite) else []
            lines = []
            for c in crossovers:
                colour = backbone_colour(c["backbone"])
                ax.axvline(c["tokens"], color=colour, ls=":", lw=1.3, zorder=1)
                when = ("where attention runs out of memory" if c["kind"] == "oom"
                        else f"from ≈{c['tokens']:,.0f} tokens")
                lines.append(f"{backbone_name(c['backbone'])} {c['size']}: {when}")
            if lines:
                verb = {"train_step_ms": "faster", "peak_mem_gib": "leaner"}.get(col, "higher")
                ax.text(0.03, 0.97 if lower_better else 0.03,
                        f"Crossover ({verb} than Transformer, dotted):\n" + "\n".join(lines),
                        transform=ax.transAxes, ha="left", va="top" if lower_better else "bottom", fontsize=7,
                        bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "0.8", "alpha": 0.9}, zorder=5)
            ax.set_xlabel("Sequence length (tokens, log scale)")
            ax.set_ylabel(ylabel)
            ax.set_title(title)
            _seconds_axis(ax, df)
        devices = sorted({str(d) for d in df.get("device", pd.Series(dtype=str)).dropna()})
        batches = sorted({int(b) for b in df.get("batch", pd.Series(dtype=float)).dropna()})
        budgets = sorted({int(b) for b in df.get("tokens_per_step", pd.Series(dtype=float)).dropna()})
        extra = []
        if devices:
            extra.append("device: " + ", ".join(devices))
        if budgets:
            extra.append(", ".join(f"{b:,}" for b in budgets) + " tokens per step (batch = budget / length)")
        elif batches:
            extra.append("batch " + ", ".join(map(str, batches)))
        fig.suptitle("Cost vs sequence length" + (f" ({'; '.join(extra)})" if extra else ""))
        entries = _backbone_entries(df["backbone"]) + _size_entries(df["size"], lines=True)
        entries.append(("out of memory", {"color": "0.2", "ls": "none", "marker": "x", "mew": 2}))
        entries.append(("linear / quadratic cost guides", {"color": "0.6", "ls": (0, (1, 2)), "lw": 1.0}))
        fig.legend(handles=_legend_handles(entries), loc="outside lower center", ncols=min(len(entries), 8))
    return save_figure(fig, out_stem)


def _growth_guides(ax, df: pd.DataFrame, col: str) -> None:
    """Faint lines for a cost linear and quadratic in L, from the smallest measured point. A step's cost is
    batch x L (linear) or batch x L² (quadratic): with a fixed batch the guides grow as L and L²; with a
    fixed token budget per step (batch ∝ 1/L) as 1 and L."""
    ok = df[np.isfinite(df[col]) & (df[col] > 0)]
    t0 = ok["tokens"].min()
    y0 = ok.loc[ok["tokens"] == t0, col].median()
    if "batch" in df and df["batch"].notna().all():
        per_length = df.groupby("tokens")["batch"].median().astype(float)
    else:
        per_length = pd.Series(1.0, index=sorted(df["tokens"].unique()))
    per_length = per_length[per_length.index >= t0]
    t, batch = per_length.index.to_numpy(float), per_length.to_numpy()
    for power, label in ((1, "linear cost"), (2, "quadratic cost")):
        y = y0 * (batch / batch[0]) * (t / t0) ** power
        ax.plot(t, y, color="0.6", ls=(0, (1, 2)), lw=1.0, zorder=0)
        ymax = ax.get_ylim()[1]
        visible = y <= ymax
        if visible.any():
            k = int(np.flatnonzero(visible)[-1])
            ax.annotate(label, xy=(t[k], y[k]), xytext=(2, -2), textcoords="offset points", fontsize=7,
                        color="0.45", ha="left" if k < len(t) - 1 else "right", va="top")
    ax.set_ylim(*ax.get_ylim())


def _seconds_axis(ax, df: pd.DataFrame) -> None:
    """Top axis in seconds of audio, from the records' seconds_audio per (tokens - 1) patch token."""
    if "seconds_audio" not in df:
        return
    s = pd.to_numeric(df["seconds_audio"], errors="coerce")
    ratio = (s / (df["tokens"] - 1)).replace([np.inf, -np.inf], np.nan).dropna()
    ratio = ratio[ratio > 0]
    if ratio.empty:
        return
    a = float(ratio.median())
    sec = ax.secondary_xaxis("top", functions=(lambda x: np.maximum(np.asarray(x) - 1.0, 1e-6) * a,
                                               lambda s_: np.asarray(s_) / a + 1.0))
    sec.set_xlabel("Audio duration (s)")
