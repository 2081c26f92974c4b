"""The study spec: a TOML file that says what to compare, on what data, with what budget.

::

    description = "FHA against MHA"
    base = "tiny"                 # a preset name, or an experiment TOML (relative to the spec)
    baseline = "mha"              # the variant every other one is compared with
    seeds = [0, 1, 2]
    tokens = 1228800              # training tokens per run, equal for every variant

    [data]                        # relative paths: from the folder fha runs in
    train = "../shared/data/tinystories-3m/train.txt"
    valid = "../shared/data/tinystories-3m/valid.txt"   # optional: else val_fraction of train
    test = "../shared/data/tinystories-3m/test.txt"
    tokenizer = "tok.json"        # optional: else one is trained for the whole study

    [set]                         # overrides shared by every variant
    max_seq_len = 128

    [[variants]]
    name = "fha"
    set = { attention = "fha" }

    [sweep]                       # optional learning-rate sweep
    lr_max = [0.003, 0.01, 0.03]
    seed = 0

Every run's ``max_steps`` is ``tokens`` divided by its tokens per step, so ``tokens`` must be
a whole number of steps of every variant. A sweep trains every variant at every ``lr_max``
(``lr_init`` and ``lr_min`` keep their ratio to ``lr_max`` from the base) with the sweep
seed and keeps, per variant, the rate with the lowest validation bits per byte.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fha.config import ModelConfig, near_matches, require
from fha.errors import FhaError, read_text
from fha.train.config import TrainConfig
from fha.train.presets import TABLES, Tables, build_configs, load_experiment, merge, owner_of

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the same parser, packaged for older Pythons
    import tomli as tomllib

TOP_LEVEL_KEYS = ("description", "base", "baseline", "seeds", "tokens", "data", "set", "variants", "sweep")
REQUIRED_KEYS = ("base", "baseline", "seeds", "tokens", "data", "variants")
DATA_KEYS = ("train", "valid", "test", "tokenizer")
VARIANT_KEYS = ("name", "set")
SWEEP_KEYS = ("lr_max", "seed")
# Settings the study itself decides: the budget, the seeds and, for variants, the data.
STUDY_OWNED = {"max_steps": "tokens", "seed": "seeds"}
SAME_FOR_ALL = ("vocab_size", "val_fraction", "split_seed")  # the data and tokenizer must not differ by variant
LR_SCALED = ("lr_init", "lr_min")  # follow lr_max in a sweep
VARIANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _check_keys(where: str, table: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for key in table:
        require(
            key in allowed, f"{where}unknown key {key!r}{near_matches(key, allowed)}; allowed: {', '.join(allowed)}"
        )


def _check_overrides(where: str, overrides: dict[str, Any], *, variant: bool) -> None:
    for key in overrides:
        try:
            owner_of(key)
        except FhaError:
            every = [*ModelConfig.field_types(), *TrainConfig.field_types()]
            raise ValueError(f"{where}.{key}: unknown setting{near_matches(key, every)}") from None
        if TrainConfig.current_name(key) in STUDY_OWNED:
            raise ValueError(
                f"{where}.{key}: set by the study's `{STUDY_OWNED[TrainConfig.current_name(key)]}`, not here"
            )
        if variant and key in SAME_FOR_ALL:
            raise ValueError(f"{where}.{key}: must be the same for every variant (put it in [set])")


def _tables(overrides: dict[str, Any]) -> Tables:
    tables: Tables = {"model": {}, "train": {}}
    for key, value in overrides.items():
        table = owner_of(key)
        tables[table][TABLES[table].current_name(key)] = value  # an old field name still works
    return tables


@dataclass(frozen=True)
class StudyData:
    train: str
    test: str
    valid: str | None = None
    tokenizer: str | None = None

    def __post_init__(self) -> None:
        for name in DATA_KEYS:
            value = getattr(self, name)
            require(
                value is None or (isinstance(value, str) and value.strip()),
                f"data.{name} must be a file path, got {value!r}",
            )

    def missing_files(self) -> list[str]:
        """``data.NAME (path)`` for every given path that is not a file."""
        return [
            f"data.{name} ({getattr(self, name)})"
            for name in DATA_KEYS
            if getattr(self, name) is not None and not Path(getattr(self, name)).is_file()
        ]


@dataclass(frozen=True)
class Variant:
    name: str
    set: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sweep:
    lr_max: tuple[float, ...]
    seed: int

    def __post_init__(self) -> None:
        require(len(self.lr_max) > 0, "sweep.lr_max must list at least one learning rate")
        for value in self.lr_max:
            require(
                isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0,
                f"sweep.lr_max must hold positive numbers, got {value!r}",
            )
        require(len(set(self.lr_max)) == len(self.lr_max), f"sweep.lr_max has repeated values: {list(self.lr_max)}")
        require(
            isinstance(self.seed, int) and not isinstance(self.seed, bool),
            f"sweep.seed must be an integer, got {self.seed!r}",
        )


@dataclass(frozen=True)
class RunPlan:
    """One training of the study: a variant at one seed and one peak learning rate."""

    variant: str
    seed: int
    lr_max: float

    @property
    def run_id(self) -> str:
        """The run's folder under ``DIR/runs``, e.g. ``fha/lr-0.01/seed-0``."""
        return f"{self.variant}/lr-{self.lr_max:g}/seed-{self.seed}"


@dataclass(frozen=True)
class StudySpec:
    """A validated study; `configs` gives the model and train config of any of its runs."""

    base: str
    baseline: str
    seeds: tuple[int, ...]
    tokens: int
    data: StudyData
    variants: tuple[Variant, ...]
    set: dict[str, Any] = field(default_factory=dict)
    sweep: Sweep | None = None
    description: str = ""
    folder: Path = Path(".")  # where a relative `base` file is found

    def __post_init__(self) -> None:
        require(
            isinstance(self.base, str) and bool(self.base),
            f"base must be a preset name or a TOML file, got {self.base!r}",
        )
        require(
            isinstance(self.tokens, int) and not isinstance(self.tokens, bool) and self.tokens > 0,
            f"tokens must be a positive integer, got {self.tokens!r}",
        )
        require(
            len(self.seeds) > 0 and all(isinstance(s, int) and not isinstance(s, bool) for s in self.seeds),
            f"seeds must be a non-empty list of integers, got {list(self.seeds)!r}",
        )
        require(len(set(self.seeds)) == len(self.seeds), f"seeds has repeated values: {list(self.seeds)}")
        require(len(self.variants) >= 2, f"variants must list at least two variants, got {len(self.variants)}")
        names = [variant.name for variant in self.variants]
        for index, variant in enumerate(self.variants):
            require(
                isinstance(variant.name, str) and bool(VARIANT_NAME.match(variant.name)),
                f"variants[{index}].name must be letters, digits, '.', '_' or '-', got {variant.name!r}",
            )
            require(names.count(variant.name) == 1, f"variants[{index}].name: {variant.name!r} is used twice")
            _check_overrides(f"variants[{index}].set", variant.set, variant=True)
        _check_overrides("set", self.set, variant=False)
        require(self.baseline in names, f"baseline: {self.baseline!r} is not a variant; variants: {', '.join(names)}")
        for variant in self.variants:  # every variant must build, and the budget must be whole steps of each
            for lr_max in self.learning_rates(variant.name):
                self.configs(RunPlan(variant.name, self.seeds[0], lr_max))

    # --------------------------------------------------------------- loading
    @classmethod
    def from_dict(cls, data: dict[str, Any], folder: Path = Path(".")) -> StudySpec:
        _check_keys("", data, TOP_LEVEL_KEYS)
        for key in REQUIRED_KEYS:
            require(key in data, f"{key}: missing (a study needs {', '.join(REQUIRED_KEYS)})")
        require(isinstance(data["data"], dict), "data must be a table ([data])")
        _check_keys("data: ", data["data"], DATA_KEYS)
        require("train" in data["data"] and "test" in data["data"], "data: needs train and test")
        variants = data["variants"]
        require(
            isinstance(variants, list) and all(isinstance(v, dict) for v in variants),
            "variants must be an array of tables ([[variants]])",
        )
        parsed = []
        for index, variant in enumerate(variants):
            _check_keys(f"variants[{index}]: ", variant, VARIANT_KEYS)
            require("name" in variant, f"variants[{index}].name: missing")
            overrides = variant.get("set", {})
            require(isinstance(overrides, dict), f"variants[{index}].set must be a table")
            parsed.append(Variant(variant["name"], dict(overrides)))
        shared = data.get("set", {})
        require(isinstance(shared, dict), "set must be a table ([set])")
        sweep = data.get("sweep")
        if sweep is not None:
            require(isinstance(sweep, dict), "sweep must be a table ([sweep])")
            _check_keys("sweep: ", sweep, SWEEP_KEYS)
            require("lr_max" in sweep and isinstance(sweep["lr_max"], list), "sweep.lr_max must be a list of numbers")
            sweep = Sweep(tuple(sweep["lr_max"]), sweep.get("seed", 0))
        seeds = data["seeds"]
        require(isinstance(seeds, list), f"seeds must be a list of integers, got {seeds!r}")
        return cls(
            base=data["base"],
            baseline=data["baseline"],
            seeds=tuple(seeds),
            tokens=data["tokens"],
            data=StudyData(**data["data"]),
            variants=tuple(parsed),
            set=dict(shared),
            sweep=sweep,
            description=data.get("description", ""),
            folder=folder,
        )

    def to_dict(self) -> dict[str, Any]:
        """The spec as its TOML tables (what study.json records)."""
        data: dict[str, Any] = {
            "description": self.description,
            "base": self.base,
            "baseline": self.baseline,
            "seeds": list(self.seeds),
            "tokens": self.tokens,
            "data": {name: getattr(self.data, name) for name in DATA_KEYS if getattr(self.data, name) is not None},
            "set": dict(self.set),
            "variants": [{"name": v.name, "set": dict(v.set)} for v in self.variants],
        }
        if self.sweep is not None:
            data["sweep"] = {"lr_max": list(self.sweep.lr_max), "seed": self.sweep.seed}
        return data

    # --------------------------------------------------------------- runs
    def variant(self, name: str) -> Variant:
        return next(variant for variant in self.variants if variant.name == name)

    def base_tables(self, variant: str) -> Tables:
        """The base experiment with the shared and the variant's overrides applied."""
        if self.base.endswith(".toml"):
            base = load_experiment(config_file=self.folder / self.base)
        else:
            base = load_experiment(self.base)
        return merge(merge(base, _tables(self.set)), _tables(self.variant(variant).set))

    def base_lr_max(self, variant: str) -> float:
        return float(self.base_tables(variant)["train"].get("lr_max", TrainConfig.lr_max))

    def learning_rates(self, variant: str) -> tuple[float, ...]:
        """The peak rates this variant is trained at: the sweep's, or the base config's."""
        return self.sweep.lr_max if self.sweep is not None else (self.base_lr_max(variant),)

    def configs(self, run: RunPlan) -> tuple[ModelConfig, TrainConfig]:
        tables = self.base_tables(run.variant)
        train = dict(tables["train"])
        base_lr = float(train.get("lr_max", TrainConfig.lr_max))
        if run.lr_max != base_lr:
            for name in LR_SCALED:
                train[name] = float(train.get(name, getattr(TrainConfig, name))) * run.lr_max / base_lr
        train["lr_max"] = run.lr_max
        train["seed"] = run.seed
        batch_size = train.get("batch_size", TrainConfig.batch_size)
        accum = train.get("grad_accum_steps", TrainConfig.grad_accum_steps)
        seq_len = tables["model"].get("max_seq_len", ModelConfig.max_seq_len)
        for name, value in (("batch_size", batch_size), ("grad_accum_steps", accum), ("max_seq_len", seq_len)):
            require(
                isinstance(value, int) and not isinstance(value, bool) and value > 0,
                f"{name} must be a positive integer, got {value!r}",
            )
        per_step = batch_size * accum * seq_len
        require(
            self.tokens % per_step == 0,
            f"tokens: {self.tokens} is not a whole number of steps of variant {run.variant} ({per_step} tokens "
            f"per step = batch_size {batch_size} x grad_accum_steps {accum} x max_seq_len {seq_len}); the "
            f"nearest are {self.tokens // per_step * per_step} and {(self.tokens // per_step + 1) * per_step}",
        )
        train["max_steps"] = self.tokens // per_step
        return build_configs({"model": tables["model"], "train": train})

    def first_run(self) -> RunPlan:
        """A run whose configs show what all runs share (data split, vocabulary size)."""
        first = self.variants[0].name
        return RunPlan(first, self.seeds[0], self.learning_rates(first)[0])

    def sweep_runs(self) -> list[RunPlan]:
        if self.sweep is None:
            return []
        return [RunPlan(v.name, self.sweep.seed, lr) for v in self.variants for lr in self.sweep.lr_max]

    def main_runs(self, chosen_lr: dict[str, float]) -> list[RunPlan]:
        """Every variant at every seed, at its chosen peak rate."""
        return [RunPlan(v.name, seed, chosen_lr[v.name]) for v in self.variants for seed in self.seeds]


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a study TOML; every problem is an FhaError naming the file and the field."""
    path = Path(path)
    text = read_text(path, "study spec")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise FhaError(f"{path}: not valid TOML ({err})") from None
    return spec_from_dict(data, path.parent, label=str(path))


def spec_from_dict(data: dict[str, Any], folder: Path, label: str) -> StudySpec:
    try:
        return StudySpec.from_dict(data, folder)
    except (TypeError, ValueError) as err:
        raise FhaError(f"{label}: {err}") from None
    except FhaError as err:
        raise FhaError(f"{label}: {err}") from None
