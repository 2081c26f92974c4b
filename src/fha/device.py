"""Choosing the device and the autocast dtype once, at the command-line entry."""

from __future__ import annotations

import contextlib
import logging
import re

import torch

from fha.choices import PRECISIONS
from fha.errors import FhaError

log = logging.getLogger(__name__)

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps")  # for help texts; N is a card index
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
PRECISION_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
FP16_DEVICE_TYPES = ("cuda", "mps")
DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16"}


def pick_device(name: str | None = "auto") -> torch.device:
    """CUDA, then Apple MPS, then CPU for "auto"; an explicit name must be available."""
    name = name or "auto"
    if not DEVICE_PATTERN.fullmatch(name):
        raise FhaError(f"`device` {name!r}: unknown device (use {', '.join(DEVICE_CHOICES)})")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise FhaError(f"`device` {name}: CUDA is not available on this machine")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise FhaError(
                f"`device` {name}: this machine has {count} CUDA device{'s' if count != 1 else ''} "
                f"(cuda:0 to cuda:{count - 1})"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise FhaError(f"`device` {name}: Apple MPS is not available on this machine")
    return device


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise FhaError(f"`precision` {precision!r}: unknown precision (use one of {', '.join(PRECISIONS)})")


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The dtype autocast computes in on `device` for `precision`; None for full float32.

    "auto" is bf16 on CUDA cards that support it and float32 elsewhere; an explicit dtype
    that the device cannot autocast to is an FhaError.
    """
    check_precision(precision)
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    dtype = PRECISION_DTYPES[precision]
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise FhaError(f"`precision` bf16: {torch.cuda.get_device_name(device)} does not support bfloat16")
    if precision == "fp16" and device.type not in FP16_DEVICE_TYPES:
        raise FhaError(f"`precision` fp16: float16 autocast needs a GPU (cuda or mps), not {device.type}")
    return dtype


def autocast(device: torch.device, precision: str = "auto") -> contextlib.AbstractContextManager:
    dtype = autocast_dtype(device, precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def describe(device: torch.device, precision: str = "auto") -> str:
    dtype = autocast_dtype(device, precision)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    if device.type == "cuda" and device.index is not None:
        name = f"{device} {name}"
    return f"{name} ({DTYPE_NAMES[dtype] + ' autocast' if dtype else 'float32'})"


def setup_device(name: str | None = "auto", precision: str = "auto") -> torch.device:
    """Pick the device, check the precision fits it, and log both once; the entry point of every
    command that computes."""
    device = pick_device(name)
    log.info("device: %s", describe(device, precision))
    return device
