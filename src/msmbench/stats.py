"""Summary statistics for per-seed probe scores (used by the probe and report stages).

SPEC.md section 7: every (model, task) is probed with several seeds and reported as the mean and the
half-width of a 95% Student-t confidence interval over those seeds.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np


def mean_ci95(values: Iterable[float]) -> tuple[float, float]:
    """Mean and 95% Student-t half-width of `values` (one score per seed).

    half_width = t.ppf(0.975, n - 1) * s / sqrt(n), with s the sample standard deviation (ddof=1).
    With a single value the spread is unknown: the half-width is NaN (tables print "n=1", figures draw
    no error bar), never 0, which would claim a perfectly repeatable score.
    Raises ValueError for an empty input or a non-finite value.
    """
    x = np.asarray(list(values), dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError("mean_ci95 needs at least one value")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"mean_ci95 got a non-finite value: {x.tolist()}")
    n = x.size
    mean = float(x.mean())
    if n == 1:
        return mean, math.nan
    s = float(x.std(ddof=1))
    from scipy import stats  # imported here: scipy.stats costs a quarter second at start-up

    return mean, float(stats.t.ppf(0.975, n - 1) * s / math.sqrt(n))
