"""Device policy: CUDA when present, CPU otherwise — the same code path on both.

torch (seconds to import) is imported only by the functions that need it, so that code which merely
may meet a tensor (metrics, retrieval, evaluation: numpy on the CPU) and the stages built on it start
without it.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import torch


def default_device(requested: str = "auto") -> torch.device:
    """`auto` -> cuda if available else cpu; otherwise the named device (errors if CUDA is asked for but absent)."""
    import torch  # lazily: see the module notes

    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={requested!r} was requested but CUDA is not available")
    return device


# Files present wherever a GPU driver is loaded (NVIDIA, AMD ROCm, WSL): with none of them torch finds no
# GPU either, so the host path can be chosen without importing torch (seconds).
GPU_DRIVER_FILES = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/kfd", "/dev/dxg")


def blas_device(requested: str = "auto") -> torch.device | None:
    """Where array work (the distance passes) runs: None (numpy, host BLAS) for `cpu`, and for `auto` on
    a machine without a GPU driver, decided without torch; otherwise default_device's device."""
    if requested == "cpu" or (requested == "auto" and not any(map(os.path.exists, GPU_DRIVER_FILES))):
        return None
    return default_device(requested)


AmpMode = Literal["auto", "bf16", "fp16", "off"]  # the `amp` of every training and inference config


def check_device_settings(device: str, amp: str | None = None) -> None:
    """Config-time check of a `device` parameter (auto, cpu, cuda or cuda:N; CUDA present where named) and
    of an `amp` the device it resolves to cannot run (fp16 needs CUDA): a bad parameter, not a traceback."""
    if device != "auto" and device.split(":")[0] not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda[:N], got {device!r}")
    resolved = default_device(device)
    if amp == "fp16" and resolved.type != "cuda":
        raise ValueError(f"amp=fp16 needs CUDA (device {device!r} is {resolved.type} here); on the CPU use "
                         "amp=bf16 or off")


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of `amp` on `device`, or None (full precision).

    `auto` autocasts on CUDA only (bf16 where supported, else fp16): on a CPU the result would change
    with the machine, and a CPU without native bf16 kernels emulates them slowly. `bf16` is explicit
    and autocasts on both (on a CPU with AVX512-BF16/AMX it is the faster; `bench/bench_amp.py`).
    `fp16` needs CUDA: its loss scaling is CUDA's GradScaler.
    """
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    import torch  # lazily: see the module notes

    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "fp16" and device.type != "cuda":
        raise ValueError(f"amp=fp16 needs CUDA (device is {device.type}); on the CPU use amp=bf16 or off")
    if amp == "bf16" and device.type == "cpu" and not native_cpu_bf16():
        warnings.warn("amp=bf16 on a CPU without native bf16 kernels (AVX512-BF16/AMX): emulated, and slower "
                      "than amp=off", stacklevel=2)
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def memory_format(channels_last: bool, device: torch.device, amp_dtype: torch.dtype | None = None) -> torch.memory_format:
    """channels_last if asked for, on CUDA and in fp32 on the CPU; else the contiguous (NCHW) layout.
    Under bf16 autocast on the CPU NHWC is not reliably faster (`bench/bench_amp.py`: 0.87-1.54x per step
    across models on a native-bf16 CPU); in fp32 on the CPU it is (`bench/bench_layout.py`: 1.7x per
    training step for EfficientNet-Lite0, whose depthwise convolutions gain most, 1.1-1.4x for ResNet-18)."""
    import torch  # lazily: see the module notes

    wanted = channels_last and (device.type == "cuda" or amp_dtype is None)
    return torch.channels_last if wanted else torch.contiguous_format


def native_cpu_bf16() -> bool:
    """Whether oneDNN has native bf16 kernels on this CPU (else bf16 autocast is emulated, and slow)."""
    import torch  # lazily: see the module notes

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def is_tensor(x: object) -> bool:
    """Whether `x` is a torch tensor, without importing torch: none can exist before torch is imported."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def to_numpy(x: Any) -> np.ndarray:
    """`x` as a numpy array; a torch tensor (any device) is detached and copied to the host."""
    return x.detach().cpu().numpy() if is_tensor(x) else np.asarray(x)


def on_device(x: np.ndarray, device: torch.device | None) -> np.ndarray | torch.Tensor:
    """`x` itself on the host (None, as blas_device answers, or the CPU: host BLAS is the faster there), a
    torch tensor on CUDA."""
    if device is None or device.type == "cpu":
        return x
    import torch  # only reached on CUDA, where default_device has imported it already

    return torch.from_numpy(x).to(device)
