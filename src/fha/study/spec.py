"""The study spec: a TOML file that says what to compare, on what data, with what budgets and seeds.

::

    description = "FHA against MHA"
    base = "tiny"                 # a preset name, or an experiment TOML (relative to the spec)
    baseline = "mha"              # the variant every other one is compared with
    primary = "fha"               # optional: the primary contrast is primary - baseline
                                  #   (default: the first variant that is not the baseline)
    seeds = [0, 1, 2]             # evaluation seeds: each sets the initial weights and the batch order
    data_seeds = [0, 1]           # optional: cross the seeds (initial weights) with these batch orders
    tokens = 1228800              # the primary budget: training tokens per run, equal for every variant
    budgets = [409600]            # optional secondary budgets (cooldown branches with anneal_type = "wsd")
    equivalence_margin = 0.02     # optional: call a contrast equivalent when its interval lies inside +-0.02

    [data]                        # relative paths: from the folder fha runs in
    train = "../shared/data/tinystories-3m/train.txt"
    valid = "../shared/data/tinystories-3m/valid.txt"   # optional: else val_fraction of train
    test = "../shared/data/tinystories-3m/test.txt"
    tokenizer = "tok.json"        # optional: else one is trained for the whole study
    train_sample = 300            # documents of the training text also scored (memorisation); 0: none

    [set]                         # overrides shared by every variant
    max_seq_len = 128

    [[variants]]
    name = "fha"
    set = { attention = "fha" }

    [sweep]                       # optional learning-rate tuning, on seeds of its own
    lr_max = [0.003, 0.01, 0.03]
    seeds = [100, 101]            # default: 10000 and 10001; never an evaluation seed
    max_extensions = 2            # grid steps added beyond an edge that wins (default 2)

    [grid]                        # optional: other settings, crossed with the variants
    fractal_split = [2, 4]        # each list is an axis; several lists are crossed

    [[grid.points]]               # optional: one more axis whose values set several settings together
    dim = 64
    head_dim = 16

Every grid point is a comparison of its own: its variants are tuned, evaluated and compared
apart from the other points', and its runs live under a folder named after it
(``dim-64+head_dim-16+fractal_split-2``).
Every run's ``max_steps`` is its budget divided by its tokens per step, so every budget must
be a whole number of steps of every variant. The spec is pure data: `fha.study.plan` turns it
into runs and fingerprints.
"""

from __future__ import annotations

import itertools
import math
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from fha.config import ModelConfig
from fha.config_base import near_matches, require
from fha.errors import FhaError, FhaValueError, read_text
from fha.experiments import TABLES, Tables, build_configs, load_experiment, merge, owner_of
from fha.train_config import SEED_LIMIT, TrainConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the same parser, packaged for older Pythons
    import tomli as tomllib

TOP_LEVEL_KEYS = (
    "description",
    "base",
    "baseline",
    "primary",
    "seeds",
    "data_seeds",
    "tokens",
    "budgets",
    "equivalence_margin",
    "data",
    "set",
    "variants",
    "sweep",
    "grid",
    "base_tables",
)
REQUIRED_KEYS = ("base", "baseline", "seeds", "tokens", "data", "variants")
DATA_KEYS = ("train", "valid", "test", "tokenizer", "train_sample")
DATA_FILES = ("train", "valid", "test")
VARIANT_KEYS = ("name", "set")
SWEEP_KEYS = ("lr_max", "seeds", "max_extensions")
# Settings the study itself decides: the budget and the seeds.
STUDY_OWNED = {"max_steps": "tokens", "seed": "seeds", "data_seed": "data_seeds"}
SAME_FOR_ALL = ("vocab_size", "val_fraction", "split_seed")  # the data and tokenizer must not differ by variant
VARIANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
LR_SCALED = ("lr_init", "lr_min")  # follow lr_max in a sweep
LOG_ONLY = ("eval_interval", "eval_samples", "log_interval", "checkpoint_interval")  # do not change the weights
GRID_POINTS = "points"  # the [[grid.points]] axis: settings that change together
NOT_AN_AXIS = {"lr_max": "the learning rate is tuned by [sweep], not a grid axis"}
POINT_SEPARATOR = "+"  # between the settings of a grid point's folder name
GRID_VALUE = re.compile(r"^[A-Za-z0-9._-]+$")  # a string value names a folder
MAX_GRID_POINTS = 100
DEFAULT_SWEEP_SEEDS = (10_000, 10_001)
DEFAULT_MAX_EXTENSIONS = 2
DEFAULT_TRAIN_SAMPLE = 300
# Sane upper bounds, checked when the spec is read rather than after hours of training.
MAX_TOKENS = 10**13
MAX_LR = 10.0
MAX_EXTENSIONS = 8
MAX_SEEDS = 1000
MAX_VARIANTS = 100
MAX_TRAIN_SAMPLE = 1_000_000


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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


def _check_seeds(name: str, seeds: Any) -> tuple[int, ...]:
    require(isinstance(seeds, (list, tuple)), f"{name} must be a list of integers, got {seeds!r}")
    require(0 < len(seeds) <= MAX_SEEDS, f"{name} must list 1 to {MAX_SEEDS} seeds, got {len(seeds)}")
    for seed in seeds:
        require(_is_int(seed) and 0 <= seed < SEED_LIMIT, f"{name} must hold whole numbers in [0, 2**32), got {seed!r}")
    require(len(set(seeds)) == len(seeds), f"{name} has repeated values: {list(seeds)}")
    return tuple(seeds)


def _check_tokens(name: str, value: Any) -> int:
    require(
        _is_int(value) and 0 < value <= MAX_TOKENS,
        f"{name} must be a whole number of tokens in [1, {MAX_TOKENS:.0e}], got {value!r}",
    )
    return value


def _tokens_per_step(tables: Tables) -> int:
    train, model = tables["train"], tables["model"]
    values = {
        "batch_size": train.get("batch_size", TrainConfig.batch_size),
        "grad_accum_steps": train.get("grad_accum_steps", TrainConfig.grad_accum_steps),
        "max_seq_len": model.get("max_seq_len", ModelConfig.max_seq_len),
    }
    for name, value in values.items():
        require(_is_int(value) and value > 0, f"{name} must be a positive integer, got {value!r}")
    return values["batch_size"] * values["grad_accum_steps"] * values["max_seq_len"]


def _current_name(key: str) -> str:
    """A known setting's current name (an old field name maps to the new one)."""
    return TABLES[owner_of(key)].current_name(key)


def tables_of(overrides: dict[str, Any]) -> Tables:
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
    train_sample: int = DEFAULT_TRAIN_SAMPLE

    def __post_init__(self) -> None:
        for name in ("train", "valid", "test", "tokenizer"):
            value = getattr(self, name)
            require(
                value is None or (isinstance(value, str) and bool(value.strip())),
                f"data.{name} must be a file path, got {value!r}",
            )
        require(
            _is_int(self.train_sample) and 0 <= self.train_sample <= MAX_TRAIN_SAMPLE,
            f"data.train_sample must be a number of documents in [0, {MAX_TRAIN_SAMPLE}], got {self.train_sample!r}",
        )

    def files(self) -> dict[str, str]:
        """The data files given, by name (train, valid, test)."""
        return {name: getattr(self, name) for name in DATA_FILES if getattr(self, name) is not None}

    def missing_files(self) -> list[str]:
        """``data.NAME (path)`` for every given path that is not a file."""
        paths = {**self.files(), **({"tokenizer": self.tokenizer} if self.tokenizer else {})}
        return [f"data.{name} ({path})" for name, path in paths.items() if not Path(path).is_file()]


@dataclass(frozen=True)
class Variant:
    name: str
    set: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sweep:
    """Learning-rate tuning: every variant at every rate of the grid, on seeds of its own."""

    lr_max: tuple[float, ...]
    seeds: tuple[int, ...] = DEFAULT_SWEEP_SEEDS
    max_extensions: int = DEFAULT_MAX_EXTENSIONS

    def __post_init__(self) -> None:
        require(len(self.lr_max) >= 2, "sweep.lr_max must list at least two learning rates (a grid has edges)")
        for value in self.lr_max:
            require(
                _is_number(value) and math.isfinite(value) and 0 < value <= MAX_LR,
                f"sweep.lr_max must hold numbers in (0, {MAX_LR:g}], got {value!r}",
            )
        require(len(set(self.lr_max)) == len(self.lr_max), f"sweep.lr_max has repeated values: {list(self.lr_max)}")
        _check_seeds("sweep.seeds", self.seeds)
        require(
            _is_int(self.max_extensions) and 0 <= self.max_extensions <= MAX_EXTENSIONS,
            f"sweep.max_extensions must be a whole number in [0, {MAX_EXTENSIONS}], got {self.max_extensions!r}",
        )

    @property
    def grid(self) -> tuple[float, ...]:
        return tuple(sorted(float(rate) for rate in self.lr_max))


def _label_value(value: Any) -> str:
    """A grid value as it appears in a folder name: 64, 0.5, fha, true."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    return str(value)


def _check_grid_value(where: str, value: Any) -> None:
    require(
        isinstance(value, (str, int, float)) and (not isinstance(value, float) or math.isfinite(value)),
        f"{where} values must be numbers, strings or booleans (they name the grid point's folder), got {value!r}",
    )
    require(
        not isinstance(value, str) or bool(GRID_VALUE.match(value)),
        f"{where} values must be letters, digits, '.', '_' or '-' (they name the grid point's folder), got {value!r}",
    )


@dataclass(frozen=True)
class GridPoint:
    """One grid point: the settings it adds to every variant. Without a grid the study has one, `NO_GRID`."""

    label: str  # its folder name, e.g. "dim-128+head_dim-32" ("" without a grid)
    settings: dict[str, Any]  # in the spec's order: the [[grid.points]] settings first
    coordinates: tuple[int, ...] = ()  # its index on each axis of the grid (`Grid.axis_names`)

    @property
    def title(self) -> str:
        """Its settings for a reader, e.g. ``dim=128, head_dim=32``."""
        return self.describe(self.settings)

    def describe(self, keys: Iterable[str]) -> str:
        """The settings among `keys`, as in `title`."""
        wanted = set(keys)
        return ", ".join(f"{key}={_label_value(value)}" for key, value in self.settings.items() if key in wanted)


NO_GRID = GridPoint("", {})


@dataclass(frozen=True)
class Grid:
    """Settings crossed with the variants. Each list of `axes` is an axis, and the axes are crossed;
    `points`, when given, is one more axis (the first) whose values set several settings together,
    such as a model width with its head size."""

    axes: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    points: tuple[dict[str, Any], ...] = ()

    def __post_init__(self) -> None:
        require(
            bool(self.axes or self.points),
            "grid: empty; give lists of values (fractal_split = [2, 4]) or [[grid.points]] tables",
        )
        for key, values in self.axes.items():
            require(
                isinstance(values, (list, tuple)) and len(values) > 0,
                f"grid.{key} must be a non-empty list of values, got {values!r}",
            )
            for value in values:
                _check_grid_value(f"grid.{key}", value)
            require(len(set(values)) == len(values), f"grid.{key} has repeated values: {list(values)}")
        if self.points:
            first = list(self.points[0])
            for index, point in enumerate(self.points):
                where = f"grid.points[{index}]"
                require(isinstance(point, dict) and bool(point), f"{where} must be a table of settings")
                require(
                    sorted(point) == sorted(first),
                    f"{where} sets {', '.join(point)}; every point must set the settings of grid.points[0] "
                    f"({', '.join(first)})",
                )
                for key, value in point.items():
                    _check_grid_value(f"{where}.{key}", value)
                    require(key not in self.axes, f"{where}.{key}: also a list in [grid]; give it in one place")
                for other in range(index):
                    require(self.points[other] != point, f"{where} repeats grid.points[{other}]")
        count = math.prod(len(values) for values in self.axes.values()) * max(1, len(self.points))
        require(count <= MAX_GRID_POINTS, f"grid has {count} points, at most {MAX_GRID_POINTS} are allowed")

    @classmethod
    def from_table(cls, table: dict[str, Any]) -> Grid:
        points = table.get(GRID_POINTS, [])
        require(
            isinstance(points, list) and all(isinstance(point, dict) for point in points),
            "grid.points must be an array of tables ([[grid.points]])",
        )
        axes = {key: value for key, value in table.items() if key != GRID_POINTS}
        for key, value in axes.items():
            require(isinstance(value, list), f"grid.{key} must be a list of values, got {value!r}")
        return cls({key: tuple(value) for key, value in axes.items()}, tuple(dict(point) for point in points))

    def to_table(self) -> dict[str, Any]:
        table: dict[str, Any] = {key: list(values) for key, values in self.axes.items()}
        if self.points:
            table[GRID_POINTS] = [dict(point) for point in self.points]
        return table

    @property
    def axis_names(self) -> tuple[str, ...]:
        return ((GRID_POINTS,) if self.points else ()) + tuple(self.axes)

    def axis_title(self, name: str) -> str:
        """An axis for a reader: its setting, or the [[grid.points]] settings that change together."""
        return f"({', '.join(self.points[0])}) together" if name == GRID_POINTS and self.points else name

    @property
    def settings(self) -> dict[str, str]:
        """Every setting the grid sets, with where it is given (for error messages)."""
        found = {key: f"grid.points[0].{key}" for key in (self.points[0] if self.points else {})}
        return {**found, **{key: f"grid.{key}" for key in self.axes}}

    def expand(self) -> tuple[GridPoint, ...]:
        """Every grid point, the first axis varying slowest."""
        order = list(self.points[0]) if self.points else []
        axes = ([[{key: point[key] for key in order} for point in self.points]] if self.points else []) + [
            [{key: value} for value in values] for key, values in self.axes.items()
        ]
        found = []
        for coordinates in itertools.product(*(range(len(axis)) for axis in axes)):
            settings: dict[str, Any] = {}
            for axis, index in zip(axes, coordinates):
                settings.update(axis[index])
            label = POINT_SEPARATOR.join(f"{key}-{_label_value(value)}" for key, value in settings.items())
            found.append(GridPoint(label, settings, coordinates))
        return tuple(found)


@dataclass(frozen=True)
class StudySpec:
    """A validated study. `base_tables` is the base experiment resolved to its tables, so that a
    study folder does not depend on the base file staying as it was."""

    base: str
    baseline: str
    seeds: tuple[int, ...]
    tokens: int
    data: StudyData
    variants: tuple[Variant, ...]
    base_tables: Tables
    primary: str = ""
    data_seeds: tuple[int, ...] | None = None
    budgets: tuple[int, ...] = ()
    equivalence_margin: float | None = None
    set: dict[str, Any] = field(default_factory=dict)
    sweep: Sweep | None = None
    grid: Grid | None = None
    description: str = ""

    def __post_init__(self) -> None:
        require(
            isinstance(self.description, str), f"description must be a string, got {type(self.description).__name__}"
        )
        require(
            isinstance(self.base, str) and bool(self.base),
            f"base must be a preset name or a TOML file, got {self.base!r}",
        )
        _check_tokens("tokens", self.tokens)
        for budget in self.budgets:
            _check_tokens("budgets", budget)
        require(len(set(self.budgets)) == len(self.budgets), f"budgets has repeated values: {list(self.budgets)}")
        _check_seeds("seeds", self.seeds)
        if self.data_seeds is not None:
            _check_seeds("data_seeds", self.data_seeds)
        require(
            2 <= len(self.variants) <= MAX_VARIANTS,
            f"variants must list 2 to {MAX_VARIANTS} variants, got {len(self.variants)}",
        )
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
        if not self.primary:
            object.__setattr__(self, "primary", next(name for name in names if name != self.baseline))
        require(
            self.primary in names and self.primary != self.baseline,
            f"primary: {self.primary!r} must be a variant other than the baseline; variants: {', '.join(names)}",
        )
        if self.equivalence_margin is not None:
            require(
                _is_number(self.equivalence_margin)
                and math.isfinite(self.equivalence_margin)
                and self.equivalence_margin > 0,
                f"equivalence_margin must be a positive number of bits per byte, got {self.equivalence_margin!r}",
            )
        if self.sweep is not None:
            overlap = sorted(
                set(self.sweep.seeds) & set(self.seeds) | set(self.sweep.seeds) & set(self.data_seeds or ())
            )
            require(
                not overlap,
                f"sweep.seeds {list(self.sweep.seeds)} overlap the evaluation seeds at {overlap}: tuning must use "
                "seeds of its own, or the chosen rate is fitted to the runs it is judged on",
            )
        if self.grid is not None:
            self._check_grid(self.grid)
        self._check_builds()

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
            require(
                "seed" not in sweep,
                "sweep.seed: replaced by sweep.seeds, a list of tuning seeds disjoint from the evaluation seeds",
            )
            _check_keys("sweep: ", sweep, SWEEP_KEYS)
            require("lr_max" in sweep and isinstance(sweep["lr_max"], list), "sweep.lr_max must be a list of numbers")
            seeds = sweep.get("seeds", list(DEFAULT_SWEEP_SEEDS))
            require(isinstance(seeds, list), f"sweep.seeds must be a list of integers, got {seeds!r}")
            sweep = Sweep(tuple(sweep["lr_max"]), tuple(seeds), sweep.get("max_extensions", DEFAULT_MAX_EXTENSIONS))
        grid = data.get("grid")
        if grid is not None:
            require(isinstance(grid, dict), "grid must be a table ([grid])")
            grid = Grid.from_table(grid)
        for key in ("seeds", "budgets", "data_seeds"):
            value = data.get(key, [])
            require(isinstance(value, list), f"{key} must be a list of integers, got {value!r}")
        base_tables = data.get("base_tables")
        if base_tables is None:
            base = data["base"]
            require(isinstance(base, str) and bool(base), f"base must be a preset name or a TOML file, got {base!r}")
            base_tables = (
                load_experiment(config_file=folder / base) if base.endswith(".toml") else load_experiment(base)
            )
        require(isinstance(base_tables, dict), "base_tables must be a table")
        data_seeds = data.get("data_seeds")
        return cls(
            base=data["base"],
            baseline=data["baseline"],
            primary=data.get("primary", ""),
            seeds=tuple(data["seeds"]),
            data_seeds=tuple(data_seeds) if data_seeds is not None else None,
            tokens=data["tokens"],
            budgets=tuple(data.get("budgets", [])),
            equivalence_margin=data.get("equivalence_margin"),
            data=StudyData(**data["data"]),
            variants=tuple(parsed),
            base_tables={name: dict(base_tables.get(name, {})) for name in TABLES},
            set=dict(shared),
            sweep=sweep,
            grid=grid,
            description=data.get("description", ""),
        )

    def to_dict(self) -> dict[str, Any]:
        """The spec as its TOML tables, with the base resolved (what study.json records)."""
        data: dict[str, Any] = {
            "description": self.description,
            "base": self.base,
            "base_tables": {name: dict(table) for name, table in self.base_tables.items()},
            "baseline": self.baseline,
            "primary": self.primary,
            "seeds": list(self.seeds),
            "tokens": self.tokens,
            "budgets": list(self.budgets),
            "data": {
                **{name: getattr(self.data, name) for name in DATA_KEYS[:4] if getattr(self.data, name) is not None},
                "train_sample": self.data.train_sample,
            },
            "set": dict(self.set),
            "variants": [{"name": v.name, "set": dict(v.set)} for v in self.variants],
        }
        if self.data_seeds is not None:
            data["data_seeds"] = list(self.data_seeds)
        if self.equivalence_margin is not None:
            data["equivalence_margin"] = self.equivalence_margin
        if self.sweep is not None:
            data["sweep"] = {
                "lr_max": list(self.sweep.lr_max),
                "seeds": list(self.sweep.seeds),
                "max_extensions": self.sweep.max_extensions,
            }
        if self.grid is not None:
            data["grid"] = self.grid.to_table()
        return data

    # --------------------------------------------------------------- derived
    @property
    def all_budgets(self) -> tuple[int, ...]:
        """Every budget in tokens, increasing; the primary one among them."""
        return tuple(sorted({self.tokens, *self.budgets}))

    @property
    def variant_names(self) -> tuple[str, ...]:
        return tuple(variant.name for variant in self.variants)

    def variant(self, name: str) -> Variant:
        return next(variant for variant in self.variants if variant.name == name)

    @cached_property
    def points(self) -> tuple[GridPoint, ...]:
        """The grid points, in the spec's order; without a grid the one point `NO_GRID`."""
        return (NO_GRID,) if self.grid is None else self.grid.expand()

    def point(self, label: str) -> GridPoint:
        """The grid point named `label` ("": the study without a grid)."""
        if not label:
            return NO_GRID
        found = next((point for point in self.points if point.label == label), None)
        if found is None:
            raise FhaValueError(f"no grid point {label!r}; the spec's are {', '.join(p.label for p in self.points)}")
        return found

    def tables(self, variant: str, point: str = "") -> Tables:
        """The base experiment with the shared, the grid point's and the variant's overrides applied."""
        tables = merge(self.base_tables, tables_of(self.set))
        if point:
            tables = merge(tables, tables_of(self.point(point).settings))
        return merge(tables, tables_of(self.variant(variant).set))

    def base_lr_max(self, variant: str) -> float:
        rate = self.tables(variant)["train"].get("lr_max", TrainConfig.lr_max)
        if isinstance(rate, bool) or not isinstance(rate, int | float):
            raise FhaError(f"lr_max must be a number, got {rate!r} (variant {variant})")
        return float(rate)

    def configs(
        self, variant: str, lr_max: float, init_seed: int, data_seed: int, tokens: int, point: str = ""
    ) -> tuple[ModelConfig, TrainConfig]:
        """The configs of one run: the variant's tables at grid point `point` and at `lr_max` (`lr_init`
        and `lr_min` keep their ratio to it), the seeds, and ``max_steps`` = `tokens` / tokens per step."""
        tables = self.tables(variant, point)
        train = dict(tables["train"])
        base_lr = float(train.get("lr_max", TrainConfig.lr_max))
        if lr_max != base_lr:
            for name in LR_SCALED:
                train[name] = float(train.get(name, getattr(TrainConfig, name))) * lr_max / base_lr
        train.update(lr_max=lr_max, seed=init_seed, data_seed=data_seed)
        per_step = _tokens_per_step(tables)
        require(
            tokens % per_step == 0,
            f"budget {tokens} tokens is not a whole number of steps of variant {variant} ({per_step} tokens per "
            f"step = batch_size x grad_accum_steps x max_seq_len); the nearest are {tokens // per_step * per_step} "
            f"and {(tokens // per_step + 1) * per_step}",
        )
        train["max_steps"] = tokens // per_step
        return build_configs({"model": tables["model"], "train": train})

    def _check_grid(self, grid: Grid) -> None:
        """Grid settings are settings a grid may vary, each given in one place only."""
        shared = {_current_name(key) for key in self.set}
        seen: dict[str, str] = {}
        for key, where in grid.settings.items():
            _check_overrides(where.rsplit(".", 1)[0], {key: None}, variant=False)
            name = _current_name(key)
            require(name not in SAME_FOR_ALL, f"{where}: must be the same for every run (put it in [set])")
            require(name not in NOT_AN_AXIS, f"{where}: {NOT_AN_AXIS.get(name)}")
            require(name not in LOG_ONLY, f"{where}: changes only what is logged, not a result")
            require(name not in seen, f"{where}: the same setting as {seen.get(name)}")
            seen[name] = where
            require(name not in shared, f"{where}: also in [set]; a setting is shared or a grid axis, not both")
            for variant in self.variants:
                require(
                    name not in {_current_name(other) for other in variant.set},
                    f"{where}: also set by variant {variant.name}; a setting is a variant's or a grid axis, not both",
                )

    def _check_builds(self) -> None:
        """Every variant builds at every grid point, budget and rate (the seeds were checked on their own)."""
        rates = self.sweep.grid if self.sweep is not None else ()
        for point in self.points:
            try:
                for variant in self.variant_names:
                    for rate in (*rates, self.base_lr_max(variant)):
                        for tokens in self.all_budgets:
                            self.configs(
                                variant, rate, self.seeds[0], (self.data_seeds or self.seeds)[0], tokens, point.label
                            )
            except FhaError as err:
                if not point.label:
                    raise
                raise FhaError(f"grid point {point.label}: {err}") from None

    @property
    def contrasts(self) -> tuple[str, ...]:
        """The variants compared with the baseline, the primary one first."""
        others = [name for name in self.variant_names if name not in (self.baseline, self.primary)]
        return (self.primary, *others)


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a study TOML; every problem is an FhaError naming the file and the field."""
    path = Path(path)
    if path.is_dir():
        raise FhaError(f"{path}: a folder, not a study spec (a TOML file such as studies/quick.toml)")
    text = read_text(path, "study spec")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise FhaError(f"{path}: not valid TOML ({err})") from None
    if "base_tables" in data:
        raise FhaError(f"{path}: base_tables is written by fha into study.json, not given in a spec")
    return spec_from_dict(data, path.parent, label=str(path))


def spec_from_dict(data: dict[str, Any], folder: Path, label: str) -> StudySpec:
    try:
        return StudySpec.from_dict(data, folder)
    except (TypeError, ValueError) as err:
        raise FhaError(f"{label}: {err}") from None
    except FhaError as err:
        raise FhaError(f"{label}: {err}") from None
