"""What makes a comparison of runs fair, and what `fha compare` says when it is not.

* Runs trained with different tokenizers or on different data are never grouped as seeds
  of one experiment, and the report names them: their losses in nats per token are
  measured in different units (tokenizers) or on different texts (data).
* A `--data` text that is a run's own training text is flagged: metrics on it measure fit
  to seen text, not generalisation.
* Seed groups with the same seeds are compared pairwise, seed by seed, against the first
  such group (differences with a 95% t-interval, `fha.stats`).
* Each run's environment (run_info.json) is tabulated.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fha.compare.runs import SEED, RunSummary, SeedGroup
from fha.runs.info import file_digest
from fha.stats import paired_difference

MISSING = "—"
ENVIRONMENT_COLUMNS = (
    ("started", "date"),
    ("fha", "fha_version"),
    ("torch", "torch_version"),
    ("git commit", "git_commit"),
    ("device", "device"),
    ("threads", "threads"),
    ("world size", "world_size"),
    ("command", "command"),
)
DIFFERENCE_DECIMALS = 4


def _by_value(runs: Sequence[RunSummary], value_of) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for run in runs:
        value = value_of(run)
        if value is not None:
            found.setdefault(value, []).append(run.name)
    return found


def mismatch_notes(runs: Sequence[RunSummary]) -> list[str]:
    """Sentences naming runs that differ in tokenizer or in training/validation data."""
    notes = []
    tokenizers = _by_value(runs, lambda run: run.tokenizer_fingerprint)
    if len(tokenizers) > 1:
        notes.append(
            f"Warning: these runs use different tokenizers: {_listed(tokenizers, 'tokenizer ')}. Their losses in "
            "nats per token are not comparable and they are not grouped; compare bits per byte on one held-out "
            "text instead."
        )
    data = _by_value(runs, lambda run: run.data_key)
    if len(data) > 1:
        notes.append(
            f"Warning: these runs were trained or validated on different data: {_listed(data)}. Their "
            "validation losses come from different texts and they are not grouped."
        )
    return notes


def _listed(found: dict[str, list[str]], label: str = "") -> str:
    """ "a, b (LABEL value); c (LABEL other value)": the runs of each value of `_by_value`."""
    return "; ".join(f"{', '.join(names)} ({label}{value})" for value, names in found.items())


def training_text_note(runs: Sequence[RunSummary], data: str) -> str | None:
    """A warning when the held-out text is the training text of some runs (by content, not by name)."""
    if not Path(data).is_file():
        return None
    digest = file_digest(data)
    trained_on = [
        run.name
        for run in runs
        if run.info is not None and run.info.get("data", {}).get("train", {}).get("sha256") == digest
    ]
    if not trained_on:
        return None
    return (
        f"Warning: the held-out text {data} is the training text of {', '.join(trained_on)}; metrics on it "
        "measure fit to text the model has seen, not how it generalises."
    )


def seeds_of(group: SeedGroup) -> dict[int, RunSummary]:
    return {int(config[SEED]): run for run in group.runs if SEED in (config := run.train_config or {})}


def paired_rows(groups: Sequence[SeedGroup], metric: str, value_of) -> tuple[list[str], list[list[str]]]:
    """Rows "group − first group with the same seeds": per-seed differences of `metric`, mean [95% CI], seeds won."""
    header = ["difference", f"per seed ({metric})", "mean [95% CI]", "seeds won"]
    rows = []
    for index, group in enumerate(groups):
        seeds = seeds_of(group)
        baseline = next((other for other in groups[:index] if set(seeds_of(other)) == set(seeds)), None)
        if baseline is None or len(seeds) != len(group.runs):
            continue
        base_seeds = seeds_of(baseline)
        paired = paired_difference(
            {seed: value_of(run) for seed, run in seeds.items()},
            {seed: value_of(run) for seed, run in base_seeds.items()},
        )
        per_seed = ", ".join(
            f"{seed}: {value:+.{DIFFERENCE_DECIMALS}f}" for seed, value in zip(paired.seeds, paired.differences)
        )
        interval = paired.interval
        summary = f"{interval.mean:+.{DIFFERENCE_DECIMALS}f}"
        if interval.n >= 2:
            summary += f" [{interval.low:+.{DIFFERENCE_DECIMALS}f}, {interval.high:+.{DIFFERENCE_DECIMALS}f}]"
        rows.append([f"{group.label} − {baseline.label}", per_seed, summary, f"{paired.wins} of {paired.n}"])
    return header, rows


def environment_rows(runs: Sequence[RunSummary]) -> tuple[list[str], list[list[str]]] | None:
    """One row per run from its run_info.json; None when no run has one."""
    if not any(run.info for run in runs):
        return None
    header = ["run", *(name for name, _ in ENVIRONMENT_COLUMNS)]
    rows = [[run.name, *(str((run.info or {}).get(key, MISSING)) for _, key in ENVIRONMENT_COLUMNS)] for run in runs]
    return header, rows
