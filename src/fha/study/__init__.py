"""Studies: a fair, reproducible comparison of model variants over several seeds.

* `load_spec` (`spec`): the study TOML as a validated `StudySpec`.
* `run_study` (`runner`): train and evaluate every run; resumable, parallel, shardable.
* `write_report` (`report`): results.csv, figures, report.md and report.html with a verdict
  computed from paired differences (`stats`).
"""

from fha.study.report import Report, write_report
from fha.study.runner import Shard, StudyProgress, run_study
from fha.study.spec import RunPlan, StudySpec, load_spec

__all__ = ["Report", "RunPlan", "Shard", "StudyProgress", "StudySpec", "load_spec", "run_study", "write_report"]
