"""`fha study plan`: what a spec will train, how long it should take here, and how many seeds it needs.

The runs are the spec's cells, each marked new or reusable against a study folder's ledger.
Evaluation cells depend on the rates tuning chooses; until tuning is done they are counted at
the base rate, which costs the same. The time is estimated from a short timing of each
variant on this machine: a few optimiser steps of the real model on random tokens of the
real shapes, with the threads each of ``jobs`` parallel trainings would get. A trunk costs
its largest budget's steps; each smaller budget that can branch from it costs its steps
after the branch point (its cooldown), otherwise all of them. Evaluation and start-up are
not counted, so the estimate is a lower bound on a quiet machine.

With a pilot study (a folder with paired results), the seeds needed for a target 95%
half-width follow from the pilot's paired SD of the primary contrast (`fha.stats.seeds_needed`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from fha.errors import FhaError
from fha.model.gpt import GPT
from fha.stats import paired_difference, seeds_needed
from fha.study.execution import branch_step
from fha.study.ledger import Ledger
from fha.study.plan import Cell, Planner, StudyContext, tuning_outcome
from fha.study.results import load_results
from fha.study.spec import StudySpec
from fha.train.optim import make_optimizer

WARMUP_STEPS = 1  # untimed steps first: allocation and kernel selection


@dataclass(frozen=True)
class PlanSummary:
    new: list[Cell]
    reusable: list[Cell]
    seconds: float | None  # estimated training time for the new cells with `jobs` at once; None if not timed
    step_seconds: dict[tuple[str, str], float]  # (grid point, variant) -> seconds per optimiser step
    tuning_pending: bool  # evaluation cells counted at the base rate: tuning has not chosen yet


def time_steps(planner: Planner, variant: str, steps: int, threads: int, point: str = "") -> float:
    """Seconds per optimiser step of `variant` at grid point `point` (median of `steps` timed steps)."""
    spec = planner.spec
    cell = planner.evaluation_cells({name: spec.base_lr_max(name) for name in spec.variant_names}, point)[0]
    plan = planner.plan(replace(cell, variant=variant))
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        model = GPT(plan.model_config)
        optimizer = make_optimizer(model, plan.train_config, torch.device("cpu"))
        config = plan.train_config
        shape = (config.batch_size, plan.model_config.max_seq_len)
        x = torch.randint(0, plan.model_config.vocab_size, shape)
        times = []
        for index in range(WARMUP_STEPS + steps):
            started = time.perf_counter()
            for _ in range(config.grad_accum_steps):
                _, loss = model(x, x, return_logits=False)
                loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if index >= WARMUP_STEPS:
                times.append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(previous)
    return sorted(times)[len(times) // 2]


def _steps_to_train(planner: Planner, new: list[Cell]) -> int:
    """Optimiser steps the trunk's new cells take: all of the largest budget's, and for a smaller budget
    its steps after the point where it branches from the largest (all of them when it cannot)."""
    spec = planner.spec
    largest = planner.plan(new[0].at_budget(max(spec.all_budgets))).train_config
    total = 0
    for cell in new:
        config = planner.plan(cell).train_config
        step = (
            branch_step(largest, config, list(range(1, largest.max_steps + 1)))
            if cell.tokens < max(spec.all_budgets)
            else None
        )
        total += config.max_steps - (step or 0)
    return total


def summarize(
    spec: StudySpec, context: StudyContext, ledger: Ledger, *, timing_steps: int, jobs: int, threads: int
) -> PlanSummary:
    planner = Planner(spec, context)

    def score(cell: Cell) -> float | None:
        entry = ledger.get(planner.plan(cell).fingerprint)
        return None if entry is None else entry.metric("valid")

    cells: list[Cell] = []
    pending = False
    for point in spec.points:
        outcome = tuning_outcome(planner, score, point.label)
        cells += planner.tuning_cells(outcome.grids, point.label)
        rates = outcome.chosen or {name: spec.base_lr_max(name) for name in spec.variant_names}
        cells += planner.evaluation_cells(rates, point.label)
        pending = pending or not outcome.done
    new = [cell for cell in cells if score(cell) is None]
    reusable = [cell for cell in cells if score(cell) is not None]
    step_seconds: dict[tuple[str, str], float] = {}
    seconds = None
    if timing_steps > 0:
        step_seconds = {
            (point.label, name): time_steps(planner, name, timing_steps, threads, point.label)
            for point in spec.points
            for name in spec.variant_names
        }
        trunks: dict[tuple, list[Cell]] = {}
        for cell in new:
            trunks.setdefault(cell.trunk, []).append(cell)
        total = sum(
            _steps_to_train(planner, trunk) * step_seconds[trunk[0].point, trunk[0].variant]
            for trunk in trunks.values()
        )
        seconds = total / jobs
    return PlanSummary(new, reusable, seconds, step_seconds, pending)


def pilot_seeds(pilot: Path, halfwidth: float) -> tuple[float, int, int]:
    """(paired SD of the pilot's primary contrast at its primary budget, its pairs, seeds needed for `halfwidth`);
    with a grid, of the grid point whose paired SD is largest, so that every point reaches `halfwidth`."""
    if not math.isfinite(halfwidth) or halfwidth <= 0:
        raise FhaError(f"`halfwidth` must be a positive number of bits per byte, got {halfwidth}")
    found = []
    for results in load_results([pilot], partial=True):
        spec = results.spec
        variant, baseline = results.values(spec.primary, spec.tokens), results.values(spec.baseline, spec.tokens)
        if len(set(variant) & set(baseline)) >= 2:
            found.append(paired_difference(variant, baseline))
    if not found:
        raise FhaError(
            f"{pilot}: the pilot needs at least 2 paired evaluation seeds of {spec.primary} and {spec.baseline}"
        )
    paired = max(found, key=lambda pair: pair.interval.std)
    sd = paired.interval.std
    return sd, paired.n, seeds_needed(sd, halfwidth)
