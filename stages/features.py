"""Features stage: ``python -m stages.features <name>`` (or under ``torchrun``, sharded over ranks).

Reads params ``features`` (flip averaging, batch size, device), ``train.height``/``train.width``
(the input size the model was trained at) and ``models.<name>``; loads data/models/<name>/model.pt,
keeps only the inference network (for dsa: the MF-Stream; the DSAG-Stream is dropped) and embeds
the query and gallery rows of data/manifest.parquet -> data/features/<name>.parquet.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from reid.device import default_device
from reid.engine import distributed
from reid.engine.inference import manifest_features
from reid.export import load_inference_model, model_info
from reid.io import write_parquet_atomic
from reid.modeling.build import ModelConfig
from stages.common import load_config, read_params, section

MANIFEST = Path("data/manifest.parquet")


@dataclass
class FeaturesConfig:
    """params.yaml section ``features``."""

    flip: bool = True  # average the embeddings of the image and its mirror
    batch_size: int = 128
    num_workers: int = 2
    device: str = "auto"

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="model name, e.g. baseline, baseline2b, dsa")
    name = parser.parse_args(argv).name
    params = read_params()
    cfg = load_config(FeaturesConfig, "features", params)
    size = (int(section("train.height", params)), int(section("train.width", params)))
    weights = Path("data/models") / name / "model.pt"
    if not weights.is_file():
        raise FileNotFoundError(f"no trained weights at {weights}: run `dvc repro train@{name}` first")
    info = model_info(name, load_config(ModelConfig, f"models.{name}", params), size)
    model = load_inference_model(weights, info)
    device = default_device(cfg.device)
    device = distributed.rank_device(device, distributed.init_distributed(device))
    table = manifest_features(model, MANIFEST, size, device=device, flip=cfg.flip,
                              batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    if distributed.current().is_main:
        out = Path("data/features") / f"{name}.parquet"
        write_parquet_atomic(out, table, {"model": name, "flip": cfg.flip, "size": f"{size[0]}x{size[1]}"})
        print(f"features {name}: {table.num_rows} query+gallery images, dim {model.feature_dim} -> {out}")
    distributed.cleanup()


if __name__ == "__main__":
    main()
