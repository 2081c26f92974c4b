"""The precision that reductions (softmax, norms, sums) run in."""

from __future__ import annotations

import torch

FULL_PRECISION_BYTES = 4  # float32


def at_least_float32(dtype: torch.dtype) -> torch.dtype:
    """float32 for half-precision dtypes, the dtype itself for float32 and float64.

    The same as ``torch.promote_types(dtype, torch.float32)`` for floating dtypes, without an
    operator call (decoding computes it several times per layer and step).
    """
    return dtype if dtype.itemsize >= FULL_PRECISION_BYTES else torch.float32
