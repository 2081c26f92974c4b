"""What the sub-heads do: attention statistics, induction and copying scores, and the loss
each sub-head's ablation costs, per layer, head and sub-head (``fha analyze``).

    from fha.analysis import analyze_subheads, SubheadTable, write_analysis

* `analyze_subheads(model, data, tokenizer=...)`: a `SubheadTable`, one `SubheadRow` per sub-head.
* `SubheadTable`: CSV in and out, labels, concatenation; `summary_by_size` sums it up by sub-head size.
* `write_analysis(table, out_dir, ...)`: the CSV, report.md, report.html and figures.
* `fha.analysis.pooling`: the runs of a group (a study's variant) pooled over seeds, with
  95% t-intervals (`fha analyze STUDY_DIR`, `fha.study.mechanisms`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fha.lazy import lazy_exports

if TYPE_CHECKING:
    from fha.analysis.analyze import analyze_subheads
    from fha.analysis.report import write_analysis
    from fha.analysis.table import SizeSummary, SubheadRow, SubheadTable, summary_by_size

__getattr__, __dir__, __all__ = lazy_exports(__name__)
