"""Training checkpoints: tensors (and plain numbers) only, written atomically, loaded weights_only.

One file, ``<dir>/last.pt``, replaced after every epoch. It carries a fingerprint of the run
settings so that a checkpoint left by a run with other parameters (DVC keeps it: `persist`)
is never resumed by mistake.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

from reid.io import write_torch_atomic

CHECKPOINT_NAME = "last.pt"


def checkpoint_file(directory: str | os.PathLike) -> Path:
    return Path(directory) / CHECKPOINT_NAME


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write `state` atomically (temp file + rename), so a kill never leaves half a checkpoint;
    the same state gives the same bytes (`reid.io.write_torch_atomic`)."""
    write_torch_atomic(path, state)


def save_weights(path: str | os.PathLike, state: dict[str, torch.Tensor]) -> None:
    """Write a tensors-only state dict (on CPU) atomically; identical weights give identical bytes."""
    write_torch_atomic(path, {k: v.detach().cpu().contiguous() for k, v in state.items()})


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with ``weights_only=True``: a checkpoint can never run code."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # corrupt or foreign file: say which
        raise ValueError(f"cannot load checkpoint {path}: {err}") from err


def fingerprint(text: str) -> torch.Tensor:
    """sha256 of `text` as a uint8 tensor (a string key kept tensor-only)."""
    return torch.frombuffer(bytearray(hashlib.sha256(text.encode()).digest()), dtype=torch.uint8).clone()
