"""Names and defaults that the command line shows in its help and checks its arguments against,
defined here, free of torch and matplotlib, so that ``fha --help`` loads neither; the library
modules that use them import them from here."""

from __future__ import annotations

PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # autocast dtypes (`fha.device`)
X_AXIS_NAMES = ("tokens", "step", "time")  # x axes of the loss figures (`fha.compare.plots`)
EXPORT_FORMATS = ("hf",)  # what `fha.export.hf` writes

# `fha.evaluation`
EVAL_TOP_K = 5
EVAL_BATCH_SIZE = 8

# `fha.analysis.analyze`
ANALYSIS_BATCH_SIZE = 8  # windows per forward pass of the clean model
ANALYSIS_INDUCTION_SEQUENCES = 32
ANALYSIS_ABLATION_TOKENS = 16_384  # 64 windows of 256: seed-0.3m over valid.txt in 44 s on 2 cores (docs/benchmarks.md)
