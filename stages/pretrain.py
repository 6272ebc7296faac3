"""Pretrain stage: ``python -m stages.pretrain`` — the synthetic-person trunk every model starts from (SPEC §13).

Reads params ``pretrain`` (``root``: the pool folder, ``model``: a ModelConfig for the ``baseline``
network, ``train``: engine knobs) and the pool's ``bounding_box_train/``. Writes data/pretrain/model.pt
(the whole network) + model.json, data/pretrain/trunk.pt (the ResNet trunk as a torchvision state dict,
what ``models.*.pretrained`` and ``train_sanpg.pretrained`` name), data/pretrain/checkpoint/ (resume),
the DVCLive dir metrics/train/pretrain/ and metrics/train/pretrain.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from reid.data.torch_dataset import ReidDataset
from reid.data.transforms import train_transform
from reid.engine import distributed
from reid.engine.checkpoint import save_weights
from reid.engine.trainer import TrainConfig, train, train_summary, train_timing
from reid.export import model_info, write_model_info
from reid.io import write_json_atomic
from reid.modeling.build import ModelConfig, build_model
from reid.pretrain import pool_table, torchvision_state
from stages.common import load_config, run

OUT = Path("data/pretrain")
LIVE = Path("metrics/train/pretrain")
SUMMARY = Path("metrics/train/pretrain.json")


@dataclass
class PretrainConfig:
    """params.yaml section ``pretrain``."""

    root: str = "data/synth/pretrain"
    num_workers: int = 2  # image decoding threads while listing the pool
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        if self.model.pretrained not in (None, "hub") and Path(self.model.pretrained).resolve() == \
                (OUT / "trunk.pt").resolve():
            raise ValueError("pretrain.model.pretrained cannot be the trunk this stage writes")
        self.model.validate()
        self.train.validate()


def main() -> None:
    cfg = load_config(PretrainConfig, "pretrain")
    table = pool_table(cfg.root, num_workers=cfg.num_workers)
    num_classes = len(set(table["label"].to_pylist()))
    torch.manual_seed(cfg.train.seed)
    model = build_model("baseline", num_classes, cfg.model)
    t = cfg.train
    dataset = ReidDataset(table, train_transform(t.size, crop_scale=t.crop_scale, flip_p=t.flip_p,
                                                 erasing_p=t.erasing_p))
    result = train(model, dataset, t, OUT, live_dir=LIVE, run_id=f"pretrain|{num_classes}|{cfg.model}|{len(table)}")
    if distributed.current().is_main:
        save_weights(OUT / "model.pt", model.state_dict())
        save_weights(OUT / "trunk.pt", torchvision_state(model.encoder.trunk))
        write_model_info(OUT, model_info("baseline", cfg.model, t.size))
        write_json_atomic(SUMMARY, {**train_summary(result, num_classes), "identities": num_classes,
                                    "images": len(table)})
        write_json_atomic(OUT / "timing.json", train_timing(result, distributed.current().world_size))
        print(f"pretrain: {num_classes} identities, {len(table)} images, {result.steps} steps, "
              f"{result.train_time_s:.1f} s, loss {result.first_metrics.get('loss', float('nan')):.3f} -> "
              f"{result.final_loss:.3f}; trunk -> {OUT / 'trunk.pt'}")
    distributed.cleanup()


if __name__ == "__main__":
    run(main)
