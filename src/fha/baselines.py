"""Named baselines that separate the causes of an FHA result, as model-config overrides.

FHA differs from ordinary attention in three ways at once: more and smaller heads, heads of
mixed sizes, and a different spread of RoPE frequencies per sub-head (plus its score scale).
Each baseline below changes one of them and keeps every projection, so applied to the same
base config (e.g. the `seed-0.3m` preset) all of them have exactly the same parameters.
Every entry sets all the attention settings but the shape (variant, score scale, RoPE layout,
no written pattern), so it means the same on any base of the same heads and `fractal_split`;
``fha train --preset seed-0.3m --set key=value ...`` with its overrides trains it.
"""

from __future__ import annotations

from typing import Any

from fha.config import ModelConfig

_FHA = {
    "attention": "fha",
    "fractal_scale": "subhead",
    "rope_layout": "head",
    "head_splits": None,
    "layer_head_splits": None,
}

BASELINES: dict[str, dict[str, Any]] = {
    "fha": _FHA,  # sub-heads of 32/16/8/4 at the seed-0.3m shape, each an ordinary head
    "mha": {**_FHA, "attention": "mha"},  # the same projections, whole heads
    "uniform-finest": {**_FHA, "attention": "uniform-finest"},  # as many heads, all of FHA's smallest size
    "uniform-middle": {**_FHA, "attention": "uniform-middle"},  # small heads of one size, no mix
    "reversed-fha": {**_FHA, "attention": "reversed-fha"},  # the same sizes on other query heads
    "fha-rope-subhead": {**_FHA, "rope_layout": "subhead"},  # every sub-head gets a full RoPE spectrum
    "fha-head-scale": {**_FHA, "fractal_scale": "head"},  # the original's head_dim**-0.5 everywhere
    "coarse-to-fine": {**_FHA, "attention": "coarse-to-fine"},  # whole heads early, finest cuts late
}


def baseline_config(base: ModelConfig, name: str) -> ModelConfig:
    """`base` with the attention settings of baseline `name`."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; baselines: {', '.join(BASELINES)}")
    return base.replace(**BASELINES[name])
