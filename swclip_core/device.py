"""Device choice: CUDA with mixed precision when present, the CPU otherwise, same code path."""

from __future__ import annotations

import contextlib

import torch

from .errors import InputError


def resolve_device(spec: str = "auto") -> torch.device:
    """Turn "auto", "cpu", "cuda" or "cuda:N" into a device, checking that it exists."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise InputError(f"unknown device {spec!r}; use auto, cpu or cuda[:N]") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("CUDA was requested but no GPU is usable here; use --device cpu or auto")
    return device


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """float16 autocast on CUDA (AMP); a no-op on the CPU, where float32 is both safe and fast."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()
