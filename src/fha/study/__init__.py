"""Studies: a fair, reproducible comparison of model variants over several seeds.

* `spec.load_spec`: the study TOML as a validated `StudySpec`.
* `runner.run_study`: train and evaluate every run; resumable, parallel, shardable.
* `report.write_report`: results.csv, figures, report.md and report.html with a verdict
  computed from paired differences (`stats`, which `fha compare` uses too).

The submodules are imported where they are used (`fha.compare` needs `stats` alone).
"""

WAITING_EXIT = 3  # `fha study run`'s exit status when runs are left for a later call: its shard's part is done
# but other shards' tuning is not, or SIGUSR1 asked it to start no new training
