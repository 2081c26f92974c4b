"""A run folder and everything written into it, apart from the training loop that writes it.

* `folder`: what a finished or stopped run holds (configs, weights, tokenizer) and how to load it.
* `writer`: setting a new folder up (refusing to overwrite a user's run) and writing its files.
* `lock`: one writer at a time per folder.
* `checkpoint`: `TrainingState`, saved atomically every `checkpoint_interval` steps, read back for
  an exact resume.
* `logbook` (with `trackers`): the run's log: log_data.csv, metrics.csv and the TensorBoard / W&B
  mirrors.
* `info`: run_info.json (versions, machine, timings).
"""
