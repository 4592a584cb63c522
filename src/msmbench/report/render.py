"""File-level entry points for the CLI (`msmbench table`, `msmbench figure`): paths in, paths out.

Each reads the stage's inputs from disk, calls the pure functions of `aggregate`, `tables` and
`figures`, and returns the files it wrote (all written atomically).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import pandas as pd

from msmbench.report import figures
from msmbench.report.aggregate import overall_scores, read_summary, sort_summary
from msmbench.report.tables import results_table, write_numbers, write_tables

DEFAULT_CAPTION = ("Downstream results of masked spectrogram models with Transformer, Mamba and xLSTM "
                   "backbones (frozen embeddings, shallow probes).")
FIGURE_NAMES = ("task_scores", "overall_vs_params", "pretrain_loss", "reconstruction", "scaling")


def _load(summary_path: str | os.PathLike, tasks: Sequence[str] | None) -> pd.DataFrame:
    return sort_summary(read_summary(summary_path), tasks)


def render_tables(summary_path: str | os.PathLike, out_dir: str | os.PathLike,
                  numbers_path: str | os.PathLike, tasks: Sequence[str] | None = None,
                  caption: str = DEFAULT_CAPTION) -> list[Path]:
    """summary.csv -> `<out_dir>/results.{csv,md,tex}` and the headline macros at `numbers_path`."""
    summary = _load(summary_path, tasks)
    overall = overall_scores(summary)
    table = results_table(summary, overall, task_order=tasks)
    return write_tables(table, out_dir, caption) + [write_numbers(summary, overall, numbers_path)]


def render_figure(name: str, inputs: Sequence[str | os.PathLike], out_stem: str | os.PathLike,
                  tasks: Sequence[str] | None = None) -> list[Path]:
    """Draw figure `name` from `inputs` to `<out_stem>.png` and `<out_stem>.pdf`.

    task_scores, overall_vs_params: inputs = [summary.csv]; pretrain_loss: the models'
    metrics.csv files (the model is the parent directory's name); reconstruction: [reconstruction.npz];
    scaling: [scaling.json].
    """
    inputs = [Path(p) for p in inputs]
    if name in ("task_scores", "overall_vs_params", "reconstruction", "scaling") and len(inputs) != 1:
        raise ValueError(f"figure {name} takes exactly one input, got {len(inputs)}")
    if name == "task_scores":
        return figures.plot_task_scores(_load(inputs[0], tasks), out_stem, task_order=tasks)
    if name == "overall_vs_params":
        summary = _load(inputs[0], tasks)
        return figures.plot_overall_vs_params(summary, overall_scores(summary), out_stem)
    if name == "pretrain_loss":
        metrics = {}
        for p in inputs:
            if p.parent.name in metrics:
                raise ValueError(f"{p}: two metrics files for model {p.parent.name!r}")
            metrics[p.parent.name] = pd.read_csv(p)
        return figures.plot_pretrain_loss(metrics, out_stem)
    if name == "reconstruction":
        return figures.plot_reconstruction(inputs[0], out_stem)
    if name == "scaling":
        return figures.plot_scaling(inputs[0], out_stem)
    raise ValueError(f"unknown figure {name!r}; choose one of {', '.join(FIGURE_NAMES)}")
