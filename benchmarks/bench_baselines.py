"""Training speed of every named baseline (fha.baselines) at the seed-0.3m shape, in one run.

    python benchmarks/bench_baselines.py                    # the table in docs/benchmarks.md
    python benchmarks/bench_baselines.py --only fha mha     # a subset

One training step is forward, backward and an AdamW update of the whole model (the chunked
output loss that training uses) on random tokens, batch 32 of 256 positions by default.
Every round runs one step of every baseline in turn (interleaved), so a burst of load on a
shared machine hits them alike; each figure is the median over the rounds, and the last
column is each baseline's step time over the MHA twin's, measured in the same run.
"""

from __future__ import annotations

import argparse

import torch
from timing import time_interleaved
from workloads import training_step

from fha.baselines import BASELINES, baseline_config
from fha.experiments import build_configs, load_experiment
from fha.variants import subhead_sizes

REFERENCE = "mha"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--only", nargs="+", choices=list(BASELINES), default=list(BASELINES))
    args = parser.parse_args()
    names = args.only if REFERENCE in args.only else [*args.only, REFERENCE]
    base = build_configs(load_experiment("seed-0.3m"))[0]
    steps = {name: training_step(baseline_config(base, name), args.batch_size) for name in names}
    timed = time_interleaved({name: step for name, (_, step) in steps.items()}, args.repeats, warmup=2)
    tokens = args.batch_size * base.max_seq_len
    print(
        f"seed-0.3m shape, batch {args.batch_size} x {base.max_seq_len} tokens, {torch.get_num_threads()} threads, "
        f"median of {args.repeats} interleaved rounds, torch {torch.__version__}\n"
    )
    print(f"| baseline | sub-head sizes | parameters | step (s) | training tokens/s | time / {REFERENCE} |")
    print("|---|---|---|---|---|---|")
    for name, (model, _) in steps.items():
        seconds = timed[name]
        print(
            f"| {name} | {subhead_sizes(model.config)} | {model.num_parameters():,} | {seconds:.3f} "
            f"| {tokens / seconds:,.0f} | {seconds / timed[REFERENCE]:.2f}x |"
        )


if __name__ == "__main__":
    main()
