"""Putting runs side by side: loss curves, a table of their numbers, seed groups.

    from fha.compare import compare_runs, PlotOptions
    comparison = compare_runs(["runs/fha", "runs/mha"], "report/", options=PlotOptions(log_y=True))

writes ``loss_vs_tokens.png`` (or against step or wall time, `PlotOptions.x_axes`; or ``.svg``,
``.pdf``: ``PlotOptions(format=...)``), ``report.md`` and ``report.html`` (plots embedded)
into the output folder. See `fha.compare.runs` for what is read from each run and how seed
groups are found, and `fha.compare.fairness` for the checks that keep the comparison fair.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fha.lazy import lazy_exports

if TYPE_CHECKING:
    from fha.compare.comparison import Comparison, compare_runs
    from fha.compare.plots import PlotOptions
    from fha.compare.runs import RunSummary, SeedGroup, Spread, TrainingLog, load_summary, read_log, seed_groups
    from fha.evaluation import held_out_documents

__getattr__, __dir__, __all__ = lazy_exports(__name__)
