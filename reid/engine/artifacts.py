"""What a trained network leaves behind: one layout for every network of the project.

    <folder>/model.pt         final weights: a tensors-only state dict (`torch.load(weights_only=True)`)
    <folder>/model.json       how to rebuild it: {"format": "<kind>/v<n>", ...}; downstream stages and the
                              CLI read this file, never params.yaml
    <folder>/checkpoint/      resume state (`reid.engine.loop`; a DVC `persist` output)
    <folder>/timing.json      wall-clock figures (kept out of the metrics: they differ on every run)
    <curves>/                 DVCLive per-epoch curves (metrics/train/<net>/)
    <curves>.json             the training record: steps, first/last-epoch losses (metrics/train/<net>.json)

Folders: data/pretrain (the pretraining trunk), data/models/<m> (the reID models), data/sanpg
(SAN-PG), data/densepose (the lite DensePose).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from reid.engine.checkpoint import save_weights
from reid.io import write_json_atomic

if TYPE_CHECKING:  # loading a network (inference stages) must not import the training loop
    from reid.engine.loop import TrainResult

MODEL_FILE = "model.pt"
INFO_FILE = "model.json"
CHECKPOINT_DIR = "checkpoint"
TIMING_FILE = "timing.json"


@dataclass(frozen=True)
class NetworkFolder:
    """The files of one trained network (`root`) and of its training curves (`curves`)."""

    root: Path
    curves: Path | None = None  # only a training run needs it

    @classmethod
    def at(cls, root: str | os.PathLike, curves: str | os.PathLike | None = None) -> NetworkFolder:
        return cls(Path(root), Path(curves) if curves is not None else None)

    @property
    def model(self) -> Path:
        return self.root / MODEL_FILE

    @property
    def info(self) -> Path:
        return self.root / INFO_FILE

    @property
    def checkpoint(self) -> Path:
        return self.root / CHECKPOINT_DIR

    @property
    def timing(self) -> Path:
        return self.root / TIMING_FILE

    @property
    def record(self) -> Path:
        if self.curves is None:
            raise ValueError(f"{self.root}: no curves folder given, so no training record path")
        return self.curves.with_name(self.curves.name + ".json")


def save_network(folder: NetworkFolder, state: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> None:
    """model.pt (identical weights give identical bytes) and model.json, each written atomically."""
    save_weights(folder.model, dict(state))
    write_json_atomic(folder.info, dict(info))


def read_info(path: str | os.PathLike, fmt: str) -> dict[str, Any]:
    """A model.json of format `fmt` (e.g. "reid-sanpg/v1"); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model description not found: {path} (train the network first)")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable model.json ({err})") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        found = data.get("format") if isinstance(data, dict) else None
        raise ValueError(f"{path}: expected a model.json of format {fmt!r}, found {found!r}")
    return data


def train_record(result: TrainResult, **extra: Any) -> dict[str, Any]:
    """The training record of metrics/train/<net>.json: step count and first/last-epoch losses, no
    timings (identical runs give identical files), plus the network's own `extra` entries."""
    return {"epochs": result.epochs, "steps": result.steps,
            "first_epoch_loss": round(result.first_metrics.get("loss", float("nan")), 6),
            "last_epoch_loss": round(result.final_loss, 6),
            "first_epoch_losses": epoch_losses(result.first_metrics), "last_epoch_losses": epoch_losses(result.metrics),
            **extra}


def epoch_losses(metrics: Mapping[str, float]) -> dict[str, float]:
    """The per-term losses of one epoch's metrics (``loss_<term>`` -> ``<term>``), rounded."""
    return {k.removeprefix("loss_"): round(v, 6) for k, v in sorted(metrics.items()) if k.startswith("loss_")}


def timing_record(result: TrainResult, **extra: Any) -> dict[str, Any]:
    """timing.json: the wall-clock figures of a run (across resumptions)."""
    return {"train_time_s": round(result.train_time_s, 2), "images_per_s": round(result.images_per_s, 2), **extra}


def write_records(folder: NetworkFolder, record: Mapping[str, Any], timing: Mapping[str, Any]) -> None:
    """The training record (metrics/train/<net>.json) and timing.json, each written atomically."""
    write_json_atomic(folder.record, dict(record))
    write_json_atomic(folder.timing, dict(timing))
