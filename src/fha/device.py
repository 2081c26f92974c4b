"""Choosing the device and the autocast dtype once, at the command-line entry."""

from __future__ import annotations

import contextlib
import logging

import torch

from fha.errors import FhaError

log = logging.getLogger(__name__)

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def pick_device(name: str | None = "auto") -> torch.device:
    """CUDA, then Apple MPS, then CPU for "auto"; an explicit name must be available."""
    name = name or "auto"
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise FhaError(f"--device {name!r}: unknown device (use one of {', '.join(DEVICE_CHOICES)})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FhaError(f"--device {name}: CUDA is not available on this machine")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise FhaError(f"--device {name}: Apple MPS is not available on this machine")
    return device


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA cards that support it; full precision elsewhere."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    dtype = autocast_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def describe(device: torch.device) -> str:
    dtype = autocast_dtype(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return f"{name} ({'bf16 autocast' if dtype else 'float32'})"


def setup_device(name: str | None = "auto") -> torch.device:
    """Pick the device and log the choice once; the entry point of every command that computes."""
    device = pick_device(name)
    log.info("device: %s", describe(device))
    return device
