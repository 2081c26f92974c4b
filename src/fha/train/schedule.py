"""The learning-rate schedule as a pure function of the step, and a plot of it.

Step ``s`` is the index of the optimiser update (0-based). With ``W`` warmup steps, ``F``
final flat steps and ``A = max_steps - W - F`` annealing steps:

* ``s < W``: linear from `lr_init` (at 0) towards `lr_max` (reached at ``W``);
* ``W <= s < W + A``: ``num_restarts + 1`` cycles of lengths ``c, c*T_mult, c*T_mult**2, ...``
  with ``c`` chosen so that they add up to ``A``; each cycle anneals from `lr_max` towards
  `lr_min` (half a cosine, or a straight line) and the next one restarts at `lr_max`;
* ``s >= W + A``: `lr_min`.

``anneal_type="wsd"`` (warmup-stable-decay) has no cycles: with ``C`` cooldown steps and
``D = max_steps - F - C`` (`decay_start`), the rate stays at `lr_max` for ``W <= s < D``, falls
in a straight line from `lr_max` (at ``D``) to `lr_min` (reached at ``D + C``) and stays there.
Its rate before ``D`` depends on the warmup alone, not on `max_steps`, so a run of a longer
budget resumed at a step ``k <= D`` with a shorter `max_steps` (a cooldown branch) trains
exactly as a fresh run of the shorter budget would.

Cycle boundaries are real numbers, so a restart happens at the first whole step at or after
one. Because the rate depends on the step alone, a resumed run follows the same curve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from fha.figure_formats import DEFAULT_DPI, check_dpi
from fha.figures import grid, plain_log_ticks, save_figure
from fha.train_config import WSD, TrainConfig
from fha.wording import counted

MAX_PLOT_POINTS = 10_000  # steps evaluated for a plot; more would not show and would take minutes for 1e9 steps


@dataclass(frozen=True)
class LRSchedule:
    """A config's schedule with its parts resolved: `warmup_length`, `anneal_length` (the steps
    between the warmup and the final flat part) and `cooldown_length` (the decay of ``wsd``, 0
    for the other types) are numbers of steps (the config's `warmup_steps` may be None: "use
    the fraction")."""

    lr_init: float
    lr_max: float
    lr_min: float
    warmup_length: int
    anneal_length: int
    num_cycles: int
    T_mult: float
    anneal_type: str
    max_steps: int
    cooldown_length: int = 0

    @classmethod
    def from_config(cls, config: TrainConfig) -> LRSchedule:
        warmup, flat = config.warmup_length, config.final_flat_length
        return cls(
            lr_init=config.lr_init,
            lr_max=config.lr_max,
            lr_min=config.lr_min,
            warmup_length=warmup,
            anneal_length=config.max_steps - warmup - flat,
            num_cycles=config.num_restarts + 1,
            T_mult=config.T_mult,
            anneal_type=config.anneal_type,
            max_steps=config.max_steps,
            cooldown_length=config.cooldown_length if config.anneal_type == WSD else 0,
        )

    @property
    def decay_start(self) -> int:
        """The first step whose rate depends on `max_steps`: where the ``wsd`` decay begins (the
        end of the stable part), or the end of the warmup for the annealing cycles."""
        return self.warmup_length + self.anneal_length - self.cooldown_length

    def cycle_boundaries(self) -> list[float]:
        """Start of each cycle and end of the last, in steps from the start of training (for
        ``wsd``, the start and end of its one decay)."""
        if self.anneal_type == WSD:
            return [float(self.decay_start), float(self.decay_start + self.cooldown_length)]
        lengths = [self.T_mult**i for i in range(self.num_cycles)]
        unit = self.anneal_length / sum(lengths)
        bounds = [float(self.warmup_length)]
        for length in lengths:
            bounds.append(bounds[-1] + unit * length)
        bounds[-1] = float(self.warmup_length + self.anneal_length)  # exact, whatever the rounding
        return bounds

    def __call__(self, step: int) -> float:
        if step < self.warmup_length:
            return self.lr_init + (self.lr_max - self.lr_init) * step / self.warmup_length
        if self.anneal_type == WSD:
            return self._wsd(step)
        bounds = self.cycle_boundaries()
        if step >= bounds[-1]:
            return self.lr_min
        cycle = max(i for i in range(self.num_cycles) if bounds[i] <= step)
        progress = (step - bounds[cycle]) / (bounds[cycle + 1] - bounds[cycle])  # in [0, 1)
        if self.anneal_type == "cos":
            decay = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            decay = 1.0 - progress
        return self.lr_min + (self.lr_max - self.lr_min) * decay

    def _wsd(self, step: int) -> float:
        """The rate after the warmup: stable, then the linear decay, then flat."""
        if step < self.decay_start:
            return self.lr_max
        if step >= self.decay_start + self.cooldown_length:
            return self.lr_min
        progress = (step - self.decay_start) / self.cooldown_length  # in [0, 1)
        return self.lr_max - (self.lr_max - self.lr_min) * progress

    def values(self) -> list[float]:
        """The rate of every update, steps 0 to max_steps - 1."""
        return [self(step) for step in range(self.max_steps)]

    def describe(self) -> str:
        warmup = f"warmup {counted(self.warmup_length, 'step')} ({self.lr_init:g} -> {self.lr_max:g})"
        if self.anneal_type == WSD:
            end = self.decay_start + self.cooldown_length
            return (
                f"{warmup}; stable at {self.lr_max:g} to step {self.decay_start}; linear decay to {self.lr_min:g} "
                f"over {counted(self.cooldown_length, 'step')} ({self.decay_start} to {end}); "
                f"flat at {self.lr_min:g} from step {end} to {self.max_steps}"
            )
        bounds = self.cycle_boundaries()
        starts = ", ".join(str(math.ceil(b)) for b in bounds[:-1])
        return (
            f"{warmup}; {counted(self.num_cycles, f'{self.anneal_type} cycle')} to {self.lr_min:g} "
            f"starting at {'step' if self.num_cycles == 1 else 'steps'} {starts}; "
            f"flat at {self.lr_min:g} from step {math.ceil(bounds[-1])} to {self.max_steps}"
        )


def plot_steps(schedule: LRSchedule) -> list[int]:
    """The steps a plot evaluates: all of them, or for long schedules `MAX_PLOT_POINTS` evenly spaced
    ones plus the steps on both sides of every cycle boundary, so no restart is lost between samples."""
    last = schedule.max_steps - 1
    if schedule.max_steps <= MAX_PLOT_POINTS:
        return list(range(schedule.max_steps))
    steps = {round(i * last / (MAX_PLOT_POINTS - 1)) for i in range(MAX_PLOT_POINTS)}
    for bound in (schedule.warmup_length, *schedule.cycle_boundaries()):
        steps.update(s for s in (math.floor(bound) - 1, math.floor(bound), math.ceil(bound)) if 0 <= s <= last)
    return sorted(steps)


SCHEDULE_FIELDS = (
    "max_steps",
    "lr_init",
    "lr_max",
    "lr_min",
    "warmup_steps",
    "warmup_fraction",
    "anneal_type",
    "num_restarts",
    "T_mult",
    "cooldown_steps",
    "cooldown_fraction",
    "final_flat_steps",
    "final_flat_fraction",
)


def describe_schedule_change(before: TrainConfig, after: TrainConfig, step: int) -> str | None:
    """What a resume at `step` with `after` in place of `before` does to the learning rate; None
    when the schedule stays the same (warmup and final flat part follow `max_steps` by default)."""
    old, new = LRSchedule.from_config(before), LRSchedule.from_config(after)
    if old == new:
        return None
    changed = ", ".join(
        f"{name} {getattr(before, name)} -> {getattr(after, name)}"
        for name in SCHEDULE_FIELDS
        if getattr(before, name) != getattr(after, name)
    )
    last = max(old.max_steps, new.max_steps)
    first = next((s for s in range(step, last) if new(s) != old(s)), last)
    return (
        f"resuming at step {step} with a changed schedule ({changed}): the rates differ from step "
        f"{first} on ({new(first):.3g} instead of {old(first):.3g}). "
        f"Before: {old.describe()}. Now: {new.describe()}"
    )


def plot_schedule(schedule: LRSchedule, path: str | Path, title: str = "learning rate", dpi: int = DEFAULT_DPI) -> None:
    """Draw the rate against the step into an image file (the format follows the suffix)."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    fig = Figure(figsize=(7, 3.5), layout="tight")
    ax = fig.subplots()
    steps = plot_steps(schedule)
    ax.plot(steps, [schedule(step) for step in steps])
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.set_yscale("log")
    plain_log_ticks(ax.yaxis)
    ax.set_title(title)
    grid(ax, minor=True)
    check_dpi(dpi)
    save_figure(fig, path, dpi)
