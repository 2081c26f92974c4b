"""`TrainConfig`: everything about a training run that is not the model's architecture.

The learning-rate schedule is the original project's by default: a linear warmup from
`lr_init` to `lr_max`, then `num_restarts + 1` annealing cycles from `lr_max` down to
`lr_min` (``anneal_type`` ``cos`` or ``lin``; warm restarts, each `T_mult` times longer than
the one before, together filling the span up to the final flat part), then
`final_flat_steps` steps at `lr_min`. ``anneal_type="wsd"`` (warmup-stable-decay) holds
`lr_max` after the warmup instead and decays linearly to `lr_min` over the `cooldown_steps`
before the final flat part, with no restarts. `warmup_steps`, `cooldown_steps` and
`final_flat_steps` default to `warmup_fraction`, `cooldown_fraction` and
`final_flat_fraction` of `max_steps` (None means "use the fraction"), so changing
`max_steps` alone rescales the whole schedule; the numbers they resolve to are
`warmup_length`, `cooldown_length` and `final_flat_length`.

`seed` sets the initial weights, dropout and everything else random; `data_seed`, when
given, sets the order of the training batches in its place (`batch_seed`), so the two can
vary separately.

The three step counts were once called ``max_iters``, ``warmup_iters`` and
``final_flat_iters``; configs, runs and checkpoints written with those names still load
(`RENAMED`). Those written before `cooldown_steps`, `cooldown_fraction` and `data_seed`
existed load with their defaults and train as they did.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import ClassVar

from fha.config_base import ConfigBase, require, require_choice, require_positive, require_probability

WSD = "wsd"  # warmup-stable-decay: one linear decay after a stable stretch at lr_max, no restarts
ANNEAL_TYPES = ("cos", "lin", WSD)
BATCHING_MODES = ("packed", "padded")
CYCLE_LENGTH_TOLERANCE = 1e-9  # float slack when the shortest annealing cycle is exactly one step
SEED_LIMIT = 2**32  # numpy's and torch's generators take seeds below this (plus small offsets) on every platform


@dataclasses.dataclass
class TrainConfig(ConfigBase):
    """Optimiser, schedule, batching, evaluation and checkpointing of one run.

    One optimiser step sees ``batch_size * grad_accum_steps * world_size`` sequences;
    `batch_size` is per process and per micro-batch.
    """

    batch_size: int = 32
    max_steps: int = 1000
    grad_accum_steps: int = 1
    lr_init: float = 1e-5
    lr_max: float = 1e-2
    lr_min: float = 1e-4
    warmup_steps: int | None = None
    warmup_fraction: float = 0.05
    anneal_type: str = "cos"
    num_restarts: int = 0
    T_mult: float = 2.0
    cooldown_steps: int | None = None
    cooldown_fraction: float = 0.2
    final_flat_steps: int | None = None
    final_flat_fraction: float = 0.3
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    grad_clip: float | None = 1.0
    eval_interval: int = 100
    eval_samples: int = 20
    log_interval: int = 10
    checkpoint_interval: int = 500
    seed: int = 0
    data_seed: int | None = None
    batching: str = "packed"
    val_fraction: float = 0.05
    split_seed: int = 0
    compile: bool = False

    RENAMED: ClassVar[Mapping[str, str]] = {
        "max_iters": "max_steps",
        "warmup_iters": "warmup_steps",
        "final_flat_iters": "final_flat_steps",
    }

    def __post_init__(self) -> None:
        self._check_types()
        require_positive(
            self,
            "batch_size",
            "max_steps",
            "grad_accum_steps",
            "eval_interval",
            "eval_samples",
            "log_interval",
            "checkpoint_interval",
            "T_mult",
        )
        for name in ("lr_init", "lr_max", "lr_min", "adam_eps"):
            value = getattr(self, name)
            require(math.isfinite(value) and value > 0, f"{name} must be a positive number, got {value!r}")
        require(self.lr_min <= self.lr_max, f"lr_min ({self.lr_min}) must not exceed lr_max ({self.lr_max})")
        require(self.lr_init <= self.lr_max, f"lr_init ({self.lr_init}) must not exceed lr_max ({self.lr_max})")
        require(0 <= self.seed < SEED_LIMIT, f"seed must be a whole number in [0, 2**32), got {self.seed}")
        require(
            self.data_seed is None or 0 <= self.data_seed < SEED_LIMIT,
            f"data_seed must be a whole number in [0, 2**32) (or None: the same as seed), got {self.data_seed}",
        )
        require_choice(self, "anneal_type", ANNEAL_TYPES)
        require_choice(self, "batching", BATCHING_MODES)
        require(self.num_restarts >= 0, f"num_restarts must be 0 or more, got {self.num_restarts}")
        require(
            self.num_restarts < self.max_steps,
            f"num_restarts ({self.num_restarts}) must be below max_steps ({self.max_steps}): every annealing "
            "cycle needs at least one step",
        )
        require(
            math.isfinite(self.weight_decay) and self.weight_decay >= 0,
            f"weight_decay must be 0 or more, got {self.weight_decay!r}",
        )
        require_probability(self, "adam_beta1")
        require_probability(self, "adam_beta2")
        if self.grad_clip is not None:
            require(self.grad_clip > 0, f"grad_clip must be positive or None (no clipping), got {self.grad_clip!r}")
        require(0.0 < self.val_fraction < 1.0, f"val_fraction must be between 0 and 1, got {self.val_fraction!r}")
        for name in ("warmup_steps", "final_flat_steps"):
            value = getattr(self, name)
            require(value is None or value >= 0, f"{name} must be 0 or more (or None for the default), got {value}")
        for name in ("warmup_fraction", "final_flat_fraction"):
            value = getattr(self, name)
            require(0.0 <= value < 1.0, f"{name} must be in [0, 1), got {value!r}")
        require(
            self.cooldown_steps is None or self.cooldown_steps >= 1,
            f"cooldown_steps must be 1 or more (or None for the default), got {self.cooldown_steps}",
        )
        require(
            0.0 < self.cooldown_fraction < 1.0, f"cooldown_fraction must be in (0, 1), got {self.cooldown_fraction!r}"
        )
        require(math.isfinite(self.T_mult), f"T_mult must be a finite number, got {self.T_mult!r}")
        if self.anneal_type == WSD:
            self._check_wsd()
        else:
            self._check_cycles()

    def _check_wsd(self) -> None:
        require(
            self.num_restarts == 0,
            f"num_restarts must be 0 with anneal_type='wsd' (one decay, no restarts), got {self.num_restarts}",
        )
        warmup, cooldown, flat = self.warmup_length, self.cooldown_length, self.final_flat_length
        require(
            cooldown >= 1,
            f"cooldown_fraction={self.cooldown_fraction:g} of max_steps={self.max_steps} is {cooldown} steps; "
            "anneal_type='wsd' needs a cooldown of at least 1 step: raise cooldown_fraction or give cooldown_steps",
        )
        require(
            warmup + cooldown + flat <= self.max_steps,
            f"warmup_steps ({warmup}) + cooldown_steps ({cooldown}) + final_flat_steps ({flat}) = "
            f"{warmup + cooldown + flat} exceed max_steps={self.max_steps}; lower them or raise max_steps",
        )

    def _check_cycles(self) -> None:
        anneal = self.max_steps - self.warmup_length - self.final_flat_length
        cycles = self.num_restarts + 1
        try:
            lengths = [self.T_mult**i for i in range(cycles)]
            shortest = anneal * min(lengths) / sum(lengths)
        except OverflowError:
            shortest = 0.0
        require(
            shortest >= 1.0 - CYCLE_LENGTH_TOLERANCE,
            f"warmup_steps ({self.warmup_length}) + final_flat_steps ({self.final_flat_length}) leave {anneal} of "
            f"max_steps={self.max_steps} steps for {cycles} annealing cycles growing by T_mult={self.T_mult:g}, "
            f"so the shortest would last {shortest:.2g} steps (at least 1 is needed); lower them, use fewer "
            "num_restarts or raise max_steps",
        )

    @property
    def warmup_length(self) -> int:
        """`warmup_steps`, or `warmup_fraction` of `max_steps`."""
        return self._steps(self.warmup_steps, self.warmup_fraction)

    @property
    def cooldown_length(self) -> int:
        """`cooldown_steps`, or `cooldown_fraction` of `max_steps` (used by ``anneal_type="wsd"`` only)."""
        return self._steps(self.cooldown_steps, self.cooldown_fraction)

    @property
    def final_flat_length(self) -> int:
        """`final_flat_steps`, or `final_flat_fraction` of `max_steps`."""
        return self._steps(self.final_flat_steps, self.final_flat_fraction)

    def _steps(self, steps: int | None, fraction: float) -> int:
        """A phase's length: `steps` when given, else `fraction` of `max_steps`."""
        return steps if steps is not None else int(fraction * self.max_steps)

    @property
    def batch_seed(self) -> int:
        """The seed of the training batch order: `data_seed`, or `seed` when it is None."""
        return self.data_seed if self.data_seed is not None else self.seed
