"""Device and precision choice: CUDA when present, the CPU otherwise, same code path.

The precision of the forward passes (``--precision``) is set for a whole command with
:func:`precision_scope` and applied wherever a model runs through :func:`autocast`, the way
``torch.autocast`` itself works; losses and geodesic maths are always computed in float32/float64
outside it. ``auto`` picks the fastest precision the hardware computes natively: float16 autocast
(bfloat16 where the GPU supports it) on CUDA, bfloat16 on CPUs whose instruction set has it
(AMX-BF16 or AVX512-BF16), float32 otherwise: on other CPUs bfloat16 is emulated and slower.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from contextvars import ContextVar

import torch

from .config import PRECISIONS
from .errors import InputError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# What a command runs with when --precision is not given: `auto` on a GPU (mixed precision, as
# always), fp32 on a CPU, the setting benchmarks/results.md's accuracy tables were measured with.
PRECISION_DEFAULT_HELP = "default: auto on a GPU, fp32 on a CPU"
# /proc/cpuinfo flags of CPUs that compute bfloat16 matmuls natively (x86: AMX, AVX512-BF16).
CPU_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})

_precision: ContextVar[str | None] = ContextVar("swclip_precision", default=None)


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


@functools.cache
def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bfloat16 natively (read from ``cpuinfo``'s flags; False where
    there is no such file, so ``auto`` stays float32 on CPUs it cannot vouch for)."""
    try:
        with open(cpuinfo) as handle:
            for line in handle:
                if line.startswith("flags"):
                    return bool(CPU_BF16_FLAGS & set(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return False


def resolve_precision(spec: str | None, device: torch.device) -> str:
    """``auto``, ``fp32``, ``bf16``, ``fp16`` or None (the default) as the precision that runs on
    ``device``: one of fp32, bf16, fp16."""
    if spec is None:
        spec = "auto" if device.type == "cuda" else "fp32"
    if spec not in PRECISIONS:
        raise InputError(f"unknown precision {spec!r}; use one of {', '.join(PRECISIONS)}")
    if spec == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"
    if spec == "fp16" and device.type != "cuda":
        raise InputError("float16 needs a GPU; on a CPU use --precision bf16, fp32 or auto")
    return spec


@contextlib.contextmanager
def precision_scope(spec: str | None) -> Iterator[None]:
    """Run the enclosed code with forward passes in precision ``spec`` (see :func:`autocast`)."""
    token = _precision.set(spec)
    try:
        yield
    finally:
        _precision.reset(token)


def current_precision(device: torch.device) -> str:
    """The precision :func:`autocast` uses on ``device`` in the current scope."""
    return resolve_precision(_precision.get(), device)


def gallery_precision(device: torch.device) -> str:
    """The precision a retrieval gallery is embedded in on ``device``: float32 under ``auto``
    (the GPU's default too), the precision asked for otherwise.

    A gallery is embedded once and cached, so its cost is paid once, while what it must tell
    apart is fine: captions of neighbouring addresses score within 3e-4 of each other (the
    median gap between a photo's 5th and 6th best caption on the bundled photos and generated
    scenes), less than bfloat16's rounding of a similarity. Embedded in bfloat16, the top-5
    set changed for a quarter of those photos; with the gallery in float32 and only the photos
    in bfloat16, for none.
    """
    spec = _precision.get()
    if spec == "auto" or (spec is None and device.type == "cuda"):
        return "fp32"
    return current_precision(device)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast to the current scope's precision on ``device``; a no-op for fp32."""
    precision = current_precision(device)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


def precision_tag(precision: str) -> str:
    """A suffix for cache keys: "" for fp32 (so existing caches stay valid), "-bf16" otherwise."""
    return "" if precision == "fp32" else f"-{precision}"
