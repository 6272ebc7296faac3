"""Device policy: CUDA when present, CPU otherwise — the same code path on both."""

from __future__ import annotations

import torch


def default_device(requested: str = "auto") -> torch.device:
    """`auto` -> cuda if available else cpu; otherwise the named device (errors if CUDA is asked for but absent)."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={requested!r} was requested but CUDA is not available")
    return device


def check_device_name(requested: str) -> None:
    """Config-time check of a `device` parameter: auto, cpu, cuda or cuda:N (availability is checked at use)."""
    if requested != "auto" and requested.split(":")[0] not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda[:N], got {requested!r}")


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """bf16/fp16 autocast dtype on CUDA (`amp` auto = bf16 where supported); None (full precision) on
    CPU or when `amp` is off."""
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
