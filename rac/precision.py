"""Reduced precision: which float type a forward pass runs in, and the autocast context that applies it.

Weights always stay float32; ``torch.autocast`` runs the matrix products in the chosen type. That keeps
``dtype="float32"`` exactly today's numbers and lets training keep fp32 master weights under bf16 compute.

``"auto"`` picks bfloat16 where the hardware runs it natively and float32 elsewhere:

* CPU: the ``avx512_bf16`` or ``amx_bf16`` instruction set, as ``torch.cpu.get_capabilities()`` reports it
  (torch versions without it: the same flags in ``/proc/cpuinfo`` on Linux); elsewhere bf16 would be
  emulated and slower than fp32, so auto stays fp32;
* CUDA: compute capability 8.0 and newer (Ampere on), or ROCm; ``torch.cuda.is_bf16_supported()`` would
  also count older GPUs that only emulate bf16.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path

import torch

DTYPES = ("auto", "float32", "bfloat16", "float16")


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when the CPU advertises bf16 instructions (``avx512_bf16`` / ``amx_bf16``)."""
    capabilities = getattr(torch.cpu, "get_capabilities", None)
    if capabilities is not None:
        found = capabilities()
        return bool(found.get("avx512_bf16") or found.get("amx_bf16"))
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cuda_has_native_bf16(device: torch.device) -> bool:
    """True on ROCm and on CUDA GPUs of compute capability 8.0 or newer (native bf16 matrix units)."""
    return bool(torch.version.hip) or torch.cuda.get_device_capability(device)[0] >= 8


def resolve_dtype(dtype: str | torch.dtype | None, device: str | torch.device = "cpu") -> torch.dtype:
    """The compute dtype for ``dtype`` on ``device`` (``None`` and ``"auto"`` choose by hardware)."""
    device_type = torch.device(device).type
    if isinstance(dtype, torch.dtype):
        dtype = str(dtype).removeprefix("torch.")
    dtype = "auto" if dtype is None else dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if dtype == "auto":
        if device_type == "cuda":
            return torch.bfloat16 if cuda_has_native_bf16(torch.device(device)) else torch.float32
        return torch.bfloat16 if device_type == "cpu" and cpu_has_native_bf16() else torch.float32
    if dtype == "float16" and device_type != "cuda":
        raise ValueError(f"dtype float16 needs a CUDA device, got {device_type!r}; use bfloat16 or float32")
    return getattr(torch, dtype)


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"`` (how reports and manifests record it)."""
    return str(dtype).removeprefix("torch.")


@contextlib.contextmanager
def autocast(device: str | torch.device, dtype: torch.dtype) -> Iterator[None]:
    """``torch.autocast`` in ``dtype`` on ``device``; a no-op for float32, so fp32 stays bit-identical."""
    if dtype == torch.float32:
        yield
        return
    with torch.autocast(torch.device(device).type, dtype=dtype):
        yield
