"""From a spec to runs: every training result a study needs, its configs and its fingerprint.

A *cell* is one training result: a variant at one grid point (when the spec has a grid), one
peak learning rate, one pair of seeds (initial weights, batch order) and one budget in tokens. Its *fingerprint* hashes
everything that decides the result: the resolved model and training configs (seeds and
budget included), the digests of the training, validation and test files, the tokenizer's
fingerprint and the training sample scored. Settings that only change what is logged
(`LOG_ONLY`) are left out. Two cells with one fingerprint are the same computation, so a
study that grows (more seeds, variants, budgets or rates) reuses every result whose
fingerprint is unchanged, and a result is never pooled with runs it does not belong to.

Tuning: with a ``[sweep]``, every variant is trained at every rate of the grid on the tuning
seeds. When its best rate (lowest mean validation bits per byte over the tuning seeds, at
the primary budget) lies at an edge of the grid, the grid grows by one geometric step on
that side, up to ``max_extensions`` times; a rate still at an edge is reported as "not
tuned". `tuning_outcome` replays this from the results alone, so the runner and the report
agree on it by construction. With a ``[grid]``, every grid point is tuned on its own: each
variant's rate is chosen per grid point.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from fha.config import ModelConfig
from fha.study.spec import LOG_ONLY, StudySpec
from fha.train_config import TrainConfig

FINGERPRINT_HEX_CHARS = 16
RATE_DIGITS = 6  # significant digits of an extended grid rate, so that 0.01 * 2 is 0.02 and names stay short
TUNING, EVALUATION = "tuning", "evaluation"


@dataclass(frozen=True, order=True)
class Seeds:
    """The seed of the initial weights and the seed of the batch order."""

    init: int
    data: int

    @property
    def label(self) -> str:
        return str(self.init) if self.init == self.data else f"{self.init}-data-{self.data}"


@dataclass(frozen=True)
class Cell:
    """One training result of the study."""

    variant: str
    lr_max: float
    seeds: Seeds
    tokens: int
    role: str  # TUNING or EVALUATION
    point: str = ""  # the grid point's label; "" without a grid

    @property
    def run_id(self) -> str:
        """A readable name, e.g. ``fha/lr-0.01/seed-3/tokens-8192000``, under its grid point's label when the
        spec has a grid (``dim-128/fha/lr-0.01/...``)."""
        name = f"{self.variant}/lr-{self.lr_max:g}/seed-{self.seeds.label}/tokens-{self.tokens}"
        return f"{self.point}/{name}" if self.point else name

    @property
    def trunk(self) -> tuple[str, str, float, Seeds, str]:
        """Cells sharing this key differ only in their budget: one training can serve them all."""
        return (self.point, self.variant, self.lr_max, self.seeds, self.role)

    def at_budget(self, tokens: int) -> Cell:
        """The cell of the same trunk at another budget."""
        return replace(self, tokens=tokens)


@dataclass(frozen=True)
class StudyContext:
    """What the study's runs share beyond the spec: the data digests and the tokenizer."""

    data_digests: dict[str, str]  # train, valid (or the split rule), test
    tokenizer_fingerprint: str
    vocab_size: int
    pad_id: int | None


@dataclass(frozen=True)
class CellPlan:
    cell: Cell
    model_config: ModelConfig
    train_config: TrainConfig
    identity: dict[str, Any]
    fingerprint: str

    @property
    def folder_name(self) -> str:
        """Where its run folder lives under ``runs/``: readable, and unique to its fingerprint."""
        return f"{self.cell.run_id}-{self.fingerprint[:8]}"


def round_rate(rate: float) -> float:
    return float(f"{rate:.{RATE_DIGITS}g}")


def fingerprint_of(identity: dict[str, Any]) -> str:
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:FINGERPRINT_HEX_CHARS]


def configs_for(
    spec: StudySpec, variant: str, lr_max: float, seeds: Seeds, tokens: int, point: str = ""
) -> tuple[ModelConfig, TrainConfig]:
    """The configs of one cell, before the tokenizer sets the vocabulary size."""
    return spec.configs(variant, lr_max, seeds.init, seeds.data, tokens, point)


def evaluation_seeds(spec: StudySpec) -> list[Seeds]:
    if spec.data_seeds is None:
        return [Seeds(seed, seed) for seed in spec.seeds]
    return [Seeds(init, data) for init in spec.seeds for data in spec.data_seeds]


def tuning_seeds(spec: StudySpec) -> list[Seeds]:
    return [] if spec.sweep is None else [Seeds(seed, seed) for seed in spec.sweep.seeds]


class Planner:
    """Cells of one study with their configs and fingerprints, each computed once."""

    def __init__(self, spec: StudySpec, context: StudyContext) -> None:
        self.spec = spec
        self.context = context
        self._plans: dict[Cell, CellPlan] = {}

    def plan(self, cell: Cell) -> CellPlan:
        if cell not in self._plans:
            model, train = configs_for(self.spec, cell.variant, cell.lr_max, cell.seeds, cell.tokens, cell.point)
            model = model.replace(vocab_size=self.context.vocab_size, pad_id=self.context.pad_id)
            identity = {
                "model": model.to_dict(),
                "train": {key: value for key, value in train.to_dict().items() if key not in LOG_ONLY},
                "data": dict(self.context.data_digests),
                "tokenizer": self.context.tokenizer_fingerprint,
                "train_sample": self.spec.data.train_sample,
            }
            self._plans[cell] = CellPlan(cell, model, train, identity, fingerprint_of(identity))
        return self._plans[cell]

    def tuning_cells(self, grids: dict[str, tuple[float, ...]], point: str = "") -> list[Cell]:
        return [
            Cell(variant, rate, seeds, tokens, TUNING, point)
            for variant, rates in grids.items()
            for rate in rates
            for seeds in tuning_seeds(self.spec)
            for tokens in self.spec.all_budgets
        ]

    def evaluation_cells(self, rates: dict[str, float], point: str = "") -> list[Cell]:
        return [
            Cell(variant, rates[variant], seeds, tokens, EVALUATION, point)
            for variant in self.spec.variant_names
            for seeds in evaluation_seeds(self.spec)
            for tokens in self.spec.all_budgets
        ]


@dataclass(frozen=True)
class TuningOutcome:
    """Where tuning stands: the grid of every variant, the cells still missing and the chosen rates."""

    grids: dict[str, tuple[float, ...]]
    scores: dict[str, dict[float, float]]  # variant -> rate -> mean validation bits/byte (inf: diverged)
    missing: tuple[Cell, ...]  # cells of the current grids without a result
    chosen: dict[str, float] | None  # None while cells are missing
    at_edge: tuple[str, ...]  # variants whose chosen rate is still at an edge of their grid

    @property
    def done(self) -> bool:
        return self.chosen is not None


def tuning_outcome(planner: Planner, score: Callable[[Cell], float | None], point: str = "") -> TuningOutcome:
    """Replay tuning at grid point `point` over the results: `score(cell)` is the cell's validation bits per
    byte (inf when it diverged), or None when it has no result yet."""
    spec = planner.spec
    if spec.sweep is None:
        rates = {name: spec.base_lr_max(name) for name in spec.variant_names}
        return TuningOutcome({name: (rate,) for name, rate in rates.items()}, {}, (), rates, ())
    grids = {name: spec.sweep.grid for name in spec.variant_names}
    extensions = dict.fromkeys(spec.variant_names, 0)
    while True:
        cells = planner.tuning_cells(grids, point)
        primary = [cell for cell in cells if cell.tokens == spec.tokens]
        missing = tuple(cell for cell in cells if score(cell) is None)
        if any(score(cell) is None for cell in primary):
            scores = _mean_scores(primary, score)
            return TuningOutcome(dict(grids), scores, missing, None, ())
        scores = _mean_scores(primary, score)
        chosen, grown = {}, False
        for name in spec.variant_names:
            chosen[name] = best = best_rate(scores[name])
            grid = grids[name]
            if extensions[name] < spec.sweep.max_extensions and best in (grid[0], grid[-1]) and len(grid) >= 2:
                grids[name] = extend_grid(grid, low=best == grid[0])
                extensions[name] += 1
                grown = True
        if not grown:
            at_edge = tuple(name for name in spec.variant_names if chosen[name] in (grids[name][0], grids[name][-1]))
            return TuningOutcome(dict(grids), scores, missing, chosen, at_edge)


def _mean_scores(cells: Iterable[Cell], score: Callable[[Cell], float | None]) -> dict[str, dict[float, float]]:
    values: dict[str, dict[float, list[float]]] = {}
    for cell in cells:
        value = score(cell)
        if value is not None:
            values.setdefault(cell.variant, {}).setdefault(cell.lr_max, []).append(value)
    return {
        variant: {rate: math.fsum(v) / len(v) for rate, v in sorted(rates.items())} for variant, rates in values.items()
    }


def best_rate(scores: dict[float, float]) -> float:
    """The rate with the lowest score; the lowest rate among equals (diverged rates score inf)."""
    return min(sorted(scores), key=lambda rate: scores[rate])


def extend_grid(grid: tuple[float, ...], *, low: bool) -> tuple[float, ...]:
    """The grid with one more rate beyond its low or high edge, at the ratio of its two outer rates there."""
    if low:
        return (round_rate(grid[0] * grid[0] / grid[1]), *grid)
    return (*grid, round_rate(grid[-1] * grid[-1] / grid[-2]))
