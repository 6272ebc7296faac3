"""Train stage: ``python -m stages.train <name>`` (or ``torchrun --nproc_per_node N -m stages.train <name>``).

Reads params ``train`` (engine knobs) and ``models.<name>`` (the model's config), the train rows
of data/manifest.parquet, and data/dsap.parquet / data/texture.parquet when the model needs them.
Writes data/models/<name>/model.pt (final weights, tensors only), data/models/<name>/checkpoint/
(resume state; a killed run continues from its last epoch), the DVCLive dir metrics/train/<name>/
and the summary metrics/train/<name>.json.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import torch

from reid.data.torch_dataset import ReidDataset, manifest_split
from reid.data.transforms import train_transform
from reid.engine import distributed
from reid.engine.checkpoint import save_weights
from reid.engine.trainer import TrainConfig, train, train_summary, train_timing
from reid.export import model_info, write_model_info
from reid.io import write_json_atomic
from reid.modeling.build import ModelConfig, build_model
from stages.common import load_config, read_params, run

MANIFEST = Path("data/manifest.parquet")
DSAP = Path("data/dsap.parquet")
TEXTURE = Path("data/texture.parquet")


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes: ties the resume checkpoint to the exact data it was trained on."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="model name, e.g. baseline, baseline2b, dsa")
    name = parser.parse_args(argv).name
    params = read_params()
    cfg = load_config(TrainConfig, "train", params)
    model_cfg = load_config(ModelConfig, f"models.{name}", params)

    manifest = manifest_split(MANIFEST, ["train"])
    num_classes = len(set(manifest["label"].to_pylist()))
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank and every (re)start
    model = build_model(name, num_classes, model_cfg)
    caches = {"dsap_path": DSAP if "dsap" in model.inputs else None,
              "texture_path": TEXTURE if "texture" in model.inputs else None}
    dataset = ReidDataset(manifest, train_transform(cfg.size, crop_scale=cfg.crop_scale, flip_p=cfg.flip_p,
                                                    erasing_p=cfg.erasing_p), **caches)
    # A checkpoint left by a run on other data or another model config must not be resumed.
    trunk = [Path(model_cfg.pretrained)] if model_cfg.pretrained not in (None, "hub") else []  # its initial weights
    data_key = [file_digest(p) for p in (MANIFEST, *caches.values(), *trunk) if p is not None]
    out_dir = Path("data/models") / name
    result = train(model, dataset, cfg, out_dir, live_dir=Path("metrics/train") / name,
                   run_id=f"{name}|{num_classes}|{model_cfg}|{data_key}")

    if distributed.current().is_main:
        save_weights(out_dir / "model.pt", model.state_dict())
        write_model_info(out_dir, model_info(name, model_cfg, cfg.size))  # lets `reid embed/search/export` load it
        write_json_atomic(Path("metrics/train") / f"{name}.json", train_summary(result, num_classes))
        write_json_atomic(out_dir / "timing.json", train_timing(result, distributed.current().world_size))
        print(f"train {name}: {result.steps} steps, {result.train_time_s:.1f} s, {result.images_per_s:.1f} images/s, "
              f"loss {result.metrics.get('loss', float('nan')):.4f} (first epoch "
              f"{result.first_metrics.get('loss', float('nan')):.4f}) -> {out_dir}/model.pt")
    distributed.cleanup()


if __name__ == "__main__":
    run(main)
