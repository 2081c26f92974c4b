"""The trip of one ``fha train`` call through fha's modules: how many it visits, how often
control passes from one to another, and how often it comes back to one it had left.

    PYTHONPATH=src python benchmarks/trip_train.py

Under `sys.setprofile` every Python call and return in a module of fha is recorded by the
module's name; repeats in a row collapse into one visit. A *transition* is a change of module
between two visits, a *return* a transition into a module visited before. Two calls are
measured after the same two calls have run once unmeasured (so imports are not counted):
``fha train --preset tiny --set max_steps=4`` on a small generated text, and a resume of that
run to ``max_steps=6``. Prints a Markdown table. Measure another checkout of the code by
pointing PYTHONPATH at its ``src``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

PACKAGE = "fha"
CACHE_ENV = "FHA_CACHE_DIR"  # fha.data.cache_location.CACHE_ENV, read before fha is imported
FRESH_STEPS = 4
RESUMED_STEPS = 6
TEXT_LINES = 400
TEXT_SEED = 0
WORDS = (
    "the cat dog bird sat ran saw a small big red blue tree house river in on under near and then "
    "she he they found lost made quickly slowly happy sad little old new day night sun moon"
).split()
WORDS_PER_LINE = (6, 14)


def write_text(path: Path) -> None:
    """A few hundred short generated documents: enough for the tiny preset's batches and tokenizer."""
    rng = random.Random(TEXT_SEED)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(*WORDS_PER_LINE))) + "." for _ in range(TEXT_LINES)]
    path.write_text("\n\n".join(lines) + "\n", encoding="utf-8")  # a blank line ends a document


class Trip:
    """The modules of fha that Python frames run in, in order, repeats in a row collapsed."""

    def __init__(self) -> None:
        self.visits: list[str] = []

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if event not in ("call", "return"):
            return
        module = frame.f_globals.get("__name__", "")
        if module != PACKAGE and not module.startswith(PACKAGE + "."):
            return
        if not self.visits or self.visits[-1] != module:
            self.visits.append(module)

    def counts(self) -> tuple[int, int, int]:
        """(distinct modules, transitions, returns to a module already left)."""
        seen: set[str] = set()
        returns = 0
        for module in self.visits:
            returns += module in seen
            seen.add(module)
        return len(seen), max(len(self.visits) - 1, 0), returns


@contextlib.contextmanager
def recorded(trip: Trip) -> Iterator[Trip]:
    sys.setprofile(trip)
    try:
        yield trip
    finally:
        sys.setprofile(None)


def fha_train(*arguments: str) -> None:
    from fha.cli import main

    status = main(["train", *arguments])
    if status:
        raise SystemExit(f"fha train {' '.join(arguments)} ended with status {status}")


def calls(text: Path, run_dir: Path) -> dict[str, tuple[str, ...]]:
    fresh = ("--preset", "tiny", "--set", f"max_steps={FRESH_STEPS}", "--data", str(text), "--out", str(run_dir))
    resume = ("--resume", str(run_dir), "--set", f"max_steps={RESUMED_STEPS}")
    return {f"fresh run, {FRESH_STEPS} steps": fresh, f"resume to {RESUMED_STEPS} steps": resume}


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        os.environ[CACHE_ENV] = str(root / "cache")  # the user's token cache stays as it was
        text = root / "text.txt"
        write_text(text)
        console = io.StringIO()  # the runs' progress and log lines
        results = {}
        try:
            with contextlib.redirect_stderr(console):
                for arguments in calls(text, root / "warm-up").values():
                    fha_train(*arguments)
                for name, arguments in calls(text, root / "measured").items():
                    with recorded(Trip()) as trip:
                        fha_train(*arguments)
                    results[name] = trip.counts()
        except SystemExit:
            sys.stderr.write(console.getvalue())
            raise
    print("| call | modules | transitions | returns to a module already left |")
    print("|---|---|---|---|")
    for name, (modules, transitions, returns) in results.items():
        print(f"| {name} | {modules} | {transitions} | {returns} |")


if __name__ == "__main__":
    main()
