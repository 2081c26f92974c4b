"""`fha study run --jobs`: is one training with every core faster than several with one core each?

Runs the same small study (the quick study's model, 2 variants x 2 seeds, --steps steps per
run) once per --jobs value, each into a fresh folder with a warm token cache, alternating
the values over --repeats rounds so that a burst of load from other processes hits both
alike. Prints the wall time of each whole study (training and evaluation of all runs) and
the median per value. Each study runs as its own `fha study run` process.

    python benchmarks/bench_study_jobs.py [--steps 150] [--jobs 1 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "tinystories-sample"
TOKENS_PER_STEP = 32 * 128  # the tiny preset's batch of 32 sequences x 128 tokens
WARMUP_STEPS = 4
SPEC = """
description = "--jobs benchmark"
base = "tiny"
baseline = "mha"
seeds = [0, 1]
tokens = {tokens}

[data]
train = "{data}/train.txt"
test = "{data}/valid.txt"

[set]
eval_interval = 50

[[variants]]
name = "fha"
set = {{ attention = "fha" }}

[[variants]]
name = "mha"
set = {{ attention = "mha" }}
"""


def run_study(spec: Path, out: Path, jobs: int) -> float:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "fha", "study", "run", str(spec), "--out", str(out), "--jobs", str(jobs)],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--data", type=Path, default=SAMPLE)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        os.environ["FHA_CACHE_DIR"] = str(root / "cache")
        spec, warmup = root / "study.toml", root / "warmup.toml"
        spec.write_text(SPEC.format(tokens=args.steps * TOKENS_PER_STEP, data=args.data.resolve()))
        warmup.write_text(SPEC.format(tokens=WARMUP_STEPS * TOKENS_PER_STEP, data=args.data.resolve()))
        run_study(warmup, root / "warmup", 1)  # fills the token cache, so both values start alike
        times: dict[int, list[float]] = {jobs: [] for jobs in args.jobs}
        for repeat in range(args.repeats):
            for jobs in args.jobs:
                seconds = run_study(spec, root / f"jobs{jobs}-{repeat}", jobs)
                times[jobs].append(seconds)
                print(f"round {repeat + 1}: --jobs {jobs}: {seconds:.1f} s", flush=True)
    print(f"\n{os.cpu_count()} cores, 4 runs of {args.steps} steps ({args.steps * TOKENS_PER_STEP:,} tokens each)")
    print("| --jobs | threads per job | median wall time (s) | all rounds (s) |\n|---|---|---|---|")
    for jobs, values in times.items():
        rounds = ", ".join(f"{value:.1f}" for value in values)
        print(f"| {jobs} | {max(1, (os.cpu_count() or 1) // jobs)} | {statistics.median(values):.1f} | {rounds} |")


if __name__ == "__main__":
    main()
