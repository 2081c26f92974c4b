"""How long a fresh interpreter takes to start fha: the command line's help and usage errors
(which import no torch), ``import fha`` (whose exports load on first use) and its model.

    python benchmarks/bench_startup.py [--repeats 7]

Prints a Markdown table: the median wall time of each command over the repeats, the commands
taking turns, and each median as a multiple of ``python -c "import torch"`` measured in the
same rounds (the machine's speed cancels out of that ratio).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

TORCH = "import torch"
COMMANDS = {
    "python -c pass": ["-c", "pass"],
    TORCH: ["-c", TORCH],
    "import fha": ["-c", "import fha"],
    "from fha import GPT, ModelConfig": ["-c", "from fha import GPT, ModelConfig"],
    "import fha.model.attention": ["-c", "import fha.model.attention"],
    "fha --help": ["-m", "fha", "--help"],
    "fha train --help": ["-m", "fha", "train", "--help"],
    "fha train --no-such-flag (a usage error)": ["-m", "fha", "train", "--no-such-flag"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="rounds of every command (default 7)")
    args = parser.parse_args()
    seconds: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, arguments in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run([sys.executable, *arguments], capture_output=True, check=False)
            seconds[name].append(time.perf_counter() - start)
    torch_median = statistics.median(seconds[TORCH])
    print("| command | median wall time (s) | x `import torch` |")
    print("|---|---|---|")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"| `{name}` | {median:.2f} | {median / torch_median:.2f} |")


if __name__ == "__main__":
    main()
