"""Pretrain stage: ``python -m stages.pretrain`` — the synthetic-person trunk every model starts from (SPEC §13).

Reads params ``pretrain`` (``root``: the pool folder, ``model``: a ModelConfig for the ``baseline``
network, ``train``: engine knobs) and the pool's ``bounding_box_train/``. Writes, at the paths dvc.yaml
passes, the network folder ``--out`` (model.pt: the whole network, model.json, checkpoint/ to resume,
timing.json), ``--trunk`` (the trunk under its library's names, `library_state`: what ``models.*.pretrained`` and
``train_sanpg.pretrained`` name), the DVCLive dir ``--curves`` and the training record ``<curves>.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from reid.config import ConfigError
from reid.data.torch_dataset import ReidDataset
from reid.data.transforms import train_transform
from reid.engine import distributed
from reid.engine.artifacts import NetworkFolder, write_records
from reid.engine.checkpoint import save_weights
from reid.engine.trainer import TrainConfig, train, train_summary, train_timing
from reid.export import model_info, write_model_info
from reid.modeling.backbone import pretrained_file
from reid.modeling.build import build_model
from reid.modeling.config import ModelConfig, check_input_size
from reid.pretrain import pool_table
from stages.common import PARAMS_FILE, load_config, run, stage_parser


@dataclass
class PretrainConfig:
    """params.yaml section ``pretrain``."""

    root: str  # the pool (dvc.yaml: ${paths.pool}); a param, so it can name real data
    num_workers: int = 2  # image decoding threads while listing the pool
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        self.model.validate()
        self.train.validate()
        check_input_size(self.train.height, self.train.width, "train.")


def main(argv: list[str] | None = None) -> None:
    args = stage_parser(__doc__, out="network folder to write", trunk="trunk state dict to write",
                        curves="DVCLive folder to write (the record: <curves>.json)").parse_args(argv)
    network, trunk = NetworkFolder.at(args.out, args.curves), args.trunk
    cfg = load_config(PretrainConfig, "pretrain")
    start = pretrained_file(cfg.model.backbone, cfg.model.pretrained)
    if start is not None and start.resolve() == trunk.resolve():
        raise ConfigError(f"{PARAMS_FILE}: pretrain.model.pretrained cannot be the trunk this stage writes ({trunk})")
    table = pool_table(cfg.root, num_workers=cfg.num_workers)
    num_classes = len(set(table["label"].to_pylist()))
    torch.manual_seed(cfg.train.seed)
    model = build_model("baseline", num_classes, cfg.model)
    t = cfg.train
    dataset = ReidDataset(table, train_transform(t.size, crop_scale=t.crop_scale))
    result = train(model, dataset, t, network.root, live_dir=network.curves,
                   run_id=f"pretrain|{num_classes}|{cfg.model}|{len(table)}")
    if distributed.current().is_main:
        save_weights(network.model, model.state_dict())
        save_weights(trunk, model.encoder.trunk.library_state())
        write_model_info(network.root, model_info("baseline", cfg.model, t.size))
        write_records(network, {**train_summary(result, num_classes), "identities": num_classes, "images": len(table)},
                      train_timing(result, distributed.current().world_size))
        print(f"pretrain: {num_classes} identities, {len(table)} images, {result.steps} steps, "
              f"{result.train_time_s:.1f} s, loss {result.first_metrics.get('loss', float('nan')):.3f} -> "
              f"{result.final_loss:.3f}; trunk -> {trunk}")
    distributed.cleanup()


if __name__ == "__main__":
    run(main)
