"""Features stage: ``python -m stages.features <name>`` (or under ``torchrun``, sharded over ranks).

``<name>`` is a trained model (weights folder data/models/<name>/) or ``pretrained`` (the pretrain
stage's network, data/pretrain/). Reads params ``features`` (flip averaging, batch size, device) and
the folder's model.json (model name, ModelConfig, input size); a model folder without model.json
falls back to params ``models.<name>`` and ``train.height``/``train.width``. Loads the folder's
model.pt, keeps only the inference network (for dsa: the MF-Stream; the DSAG-Stream is dropped)
and embeds the query and gallery rows of data/manifest.parquet -> data/features/<name>.parquet.

dsa and dsa_san also write two diagnostics from the whole model and data/dsap.parquet, in the same
pass and format: data/features/<name>_fused.parquet ([z_G, z_L] = f + d) and
data/features/<name>_guide.parquet ([d_G, d_L], the DSAG-Stream alone). Flip averaging mirrors only
the crop, never its DSAP.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from reid.device import default_device
from reid.engine import distributed
from reid.engine.inference import manifest_dsa_stream_features, manifest_features
from reid.export import (
    INFO_FILE,
    WEIGHTS_FILE,
    ModelInfo,
    load_inference_model,
    load_trained_model,
    model_info,
    read_model_info,
    weights_metadata,
)
from reid.io import write_parquet_atomic
from reid.modeling.build import MODEL_NAMES, ModelConfig
from stages.common import load_config, read_params, run, section

MANIFEST = Path("data/manifest.parquet")
DSAP = Path("data/dsap.parquet")
FEATURES_DIR = Path("data/features")
PRETRAINED = "pretrained"  # the pretrain stage's network, without fine-tuning
FEATURE_SETS = (*MODEL_NAMES, PRETRAINED)
STREAM_MODELS = ("dsa", "dsa_san")  # with a DSAG-Stream: also the fused and guide diagnostics
DIAGNOSTICS = ("fused", "guide")  # data/features/<name>_<diagnostic>.parquet


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


def weights_folder(name: str) -> Path:
    """Where feature set `name`'s model.pt and model.json live."""
    return Path("data/pretrain") if name == PRETRAINED else Path("data/models") / name


def folder_model_info(name: str, folder: Path) -> ModelInfo:
    """The network of feature set `name`: the folder's model.json, else (trained models) params."""
    path = folder / INFO_FILE
    if path.is_file():
        info = read_model_info(path)
        if name != PRETRAINED and info.name != name:
            raise ValueError(f"{path} describes model {info.name!r}, not {name!r}")
        return info
    if name == PRETRAINED:
        raise FileNotFoundError(f"no {path}: run `dvc repro pretrain` first")
    params = read_params()  # older model folders: the params they were trained with
    size = (int(section("train.height", params)), int(section("train.width", params)))
    return model_info(name, load_config(ModelConfig, f"models.{name}", params), size)


def feature_tables(name: str, info: ModelInfo, weights: Path, cfg: FeaturesConfig) -> dict[str, pa.Table]:
    """{output file stem: table}: <name>, plus <name>_fused and <name>_guide for the dsa models."""
    device = default_device(cfg.device)
    device = distributed.rank_device(device, distributed.init_distributed(device))
    kwargs = dict(device=device, flip=cfg.flip, batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    if name in STREAM_MODELS:
        streams = manifest_dsa_stream_features(load_trained_model(weights, info), MANIFEST, DSAP,
                                               info.input_size, **kwargs)
        return {name: streams["mf"], **{f"{name}_{d}": streams[d] for d in DIAGNOSTICS}}
    return {name: manifest_features(load_inference_model(weights, info), MANIFEST, info.input_size, **kwargs)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=FEATURE_SETS, help="model name (e.g. baseline, dsa) or 'pretrained'")
    name = parser.parse_args(argv).name
    cfg = load_config(FeaturesConfig, "features")
    folder = weights_folder(name)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        stage = "pretrain" if name == PRETRAINED else f"train@{name}"
        raise FileNotFoundError(f"no trained weights at {weights}: run `dvc repro {stage}` first")
    info = folder_model_info(name, folder)
    tables = feature_tables(name, info, weights, cfg)
    if distributed.current().is_main:
        h, w = info.input_size
        # The weights' path and sha256 let `reid search` refuse a query model other than this one.
        meta = {"model": name, "network": info.name, **weights_metadata(weights), "flip": cfg.flip,
                "size": f"{h}x{w}"}
        for stem, table in tables.items():
            out = FEATURES_DIR / f"{stem}.parquet"
            write_parquet_atomic(out, table, meta)
            dim = table.schema.field("feature").type.list_size
            print(f"features {stem}: {table.num_rows} query+gallery images, dim {dim} -> {out}")
    distributed.cleanup()


if __name__ == "__main__":
    run(main)
