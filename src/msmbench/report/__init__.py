"""msmbench.report: score aggregation, the results table, headline numbers and figures.

- `msmbench.stats` (shared with the probe stage): mean and 95% Student-t half-width over seeds.
- `aggregate`: score files -> long table -> per-(model, task) summary -> normalised overall score.
- `tables`: results table (CSV, Markdown, LaTeX) and `paper/tables/numbers.tex` macros.
- `figures`: the paper's figures (PNG + PDF).
- `render`: file-level entry points for the CLI.

Submodules are imported on demand (figures pull in matplotlib).
"""
