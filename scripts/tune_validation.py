"""Tune on a validation split of TRAINING identities, never on the test identities.

The last 20 % of the training pids (sorted) are held out; per held-out pid and camera the first
image is a query, the others are the gallery. A model is trained on the other 80 % (or, with
--pool, on the pretraining pool) and scored there. Needs a finished `dvc repro` (data/manifest.parquet,
and the DSAP / texture caches for the dsa / san models). The pretraining schedule of the default
profile was chosen with:

    python scripts/tune_validation.py --pool data/synth/pretrain --p 16 --k 4 --epochs 20 --step 15
"""

from __future__ import annotations

import argparse
import json
import shutil
from typing import get_args

import numpy as np
import pyarrow as pa
import torch

from reid.data.torch_dataset import ReidDataset, cache_shapes, manifest_split
from reid.data.transforms import eval_transform, train_transform
from reid.device import AmpMode
from reid.engine.inference import extract_features
from reid.engine.trainer import TrainConfig, train
from reid.evaluation import evaluate_features
from reid.modeling import MODEL_INPUTS
from reid.modeling.build import build_model
from reid.modeling.config import Backbone, ModelConfig
from reid.pretrain import pool_table
from reid.retrieval import l2_normalize

MANIFEST = "data/manifest.parquet"


def split_train_identities(table: pa.Table, val_share: float = 0.2, pick: str = "last") -> tuple[pa.Table, pa.Table]:
    """(fit rows relabelled 0..n-1, validation rows): `val_share` of the sorted train pids held out, the
    last ones (`pick="last"`) or a random draw (`"random"`, seed 0: where pid order follows the cameras,
    as in CUHK03, the last pids would hold out whole camera pairs)."""
    pids = np.asarray(table["pid"].to_pylist())
    unique = np.unique(pids)
    n_held = max(1, round(len(unique) * val_share))
    if pick == "random":
        held_pids = np.random.default_rng(0).choice(unique, n_held, replace=False)
    elif pick == "last":
        held_pids = unique[len(unique) - n_held:]
    else:
        raise ValueError(f"pick must be 'last' or 'random', got {pick!r}")
    held = np.isin(pids, held_pids)
    fit = table.filter(pa.array(~held))
    labels = {p: i for i, p in enumerate(sorted(set(fit["pid"].to_pylist())))}
    fit = fit.set_column(fit.column_names.index("label"), "label",
                         pa.array([labels[p] for p in fit["pid"].to_pylist()], pa.int64()))
    return fit, table.filter(pa.array(held))


def first_per_camera(pids: np.ndarray, camids: np.ndarray) -> np.ndarray:
    """Query mask: the first image of each (pid, camera)."""
    seen, query = set(), np.zeros(len(pids), bool)
    for i, key in enumerate(zip(pids.tolist(), camids.tolist(), strict=True)):
        query[i] = key not in seen
        seen.add(key)
    return query


def validation_scores(model: torch.nn.Module, rows: pa.Table, size: tuple[int, int],
                      amp: AmpMode = "off") -> dict[str, float]:
    """Rank-1 and mAP (%) of the model's inference feature on the held-out identities."""
    dataset = ReidDataset(rows, eval_transform(size))
    table = extract_features(model.inference_model(), dataset, dataset.image_ids, device=torch.device("cpu"),
                             flip=True, amp=amp)
    feats = l2_normalize(table["feature"].combine_chunks().flatten().to_numpy().reshape(len(dataset), -1))
    pids, camids = np.asarray(rows["pid"].to_pylist()), np.asarray(rows["camid"].to_pylist())
    q = first_per_camera(pids, camids)
    result = evaluate_features(feats[q], feats[~q], pids[q], pids[~q], camids[q], camids[~q], metric="cosine")
    return {"val_rank1": round(100 * result.rank(1), 1), "val_mAP": round(100 * result.mAP, 1),
            "val_queries": int(result.n_query_valid)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default=MANIFEST, help="a prepare stage's manifest (its train rows are split)")
    parser.add_argument("--val-pick", default="last", choices=["last", "random"], help="which train pids to hold out")
    parser.add_argument("--model", default="baseline")
    parser.add_argument("--backbone", default="resnet18", choices=get_args(Backbone))
    parser.add_argument("--trunk", default=None, help="pretrained weights to start from (models.<m>.pretrained: a "
                        "state-dict path or imagenet)")
    parser.add_argument("--pool", default=None, help="train on this pretraining pool instead of the fit identities")
    parser.add_argument("--epochs", type=int, default=8, help="0: score the starting network (e.g. --trunk) as it is")
    parser.add_argument("--lr", type=float, default=8e-4)
    parser.add_argument("--head-lr-mult", type=float, default=1.0, help="train.head_lr_mult")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--step", type=int, default=6)
    parser.add_argument("--p", type=int, default=8)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--max-batches", type=int, default=0, help="train.max_batches_per_epoch (0: all)")
    parser.add_argument("--erasing", type=float, default=0.5, help="train.erasing_p")
    parser.add_argument("--last-stride", type=int, default=1)
    parser.add_argument("--bnneck", action="store_true", help="models.<m>.bnneck (BoT's head; baseline, san)")
    parser.add_argument("--triplet-weight", type=float, default=1.5)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--amp", default="bf16", choices=get_args(AmpMode),
                        help="autocast in training and scoring (the default profile's bf16)")
    parser.add_argument("--seed", type=int, default=0, help="model init and sampling (train.seed)")
    parser.add_argument("--out", default="/tmp/reid-tune")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    fit, held_out = split_train_identities(manifest_split(args.manifest, ["train"]), pick=args.val_pick)
    rows = pool_table(args.pool) if args.pool else fit
    size = (args.height, args.width)
    cfg = ModelConfig(backbone=args.backbone, pretrained=args.trunk, last_stride=args.last_stride, width_mult=0.25,
                      decoder_width_mult=0.5, bnneck=args.bnneck, triplet_weight=args.triplet_weight)
    dsap, texture = "data/dsap.parquet", "data/texture.parquet"
    shapes = cache_shapes(MODEL_INPUTS[args.model], dsap, texture)  # S and T as the caches hold them
    model = build_model(args.model, len(set(rows["label"].to_pylist())), cfg, **shapes)
    dataset = ReidDataset(rows, train_transform(size), dsap_path=dsap if "dsap" in model.inputs else None,
                          texture_path=texture if "texture" in model.inputs else None)
    trained = {}
    if args.epochs > 0:
        shutil.rmtree(args.out, ignore_errors=True)
        result = train(model, dataset, TrainConfig(epochs=args.epochs, p=args.p, k=args.k, lr=args.lr,
                                                   head_lr_mult=args.head_lr_mult, warmup_epochs=args.warmup,
                                                   warmup_factor=0.1, step_epochs=args.step,
                                                   gamma=0.1, height=size[0], width=size[1], amp=args.amp,
                                                   erasing_p=args.erasing, max_batches_per_epoch=args.max_batches,
                                                   seed=args.seed), args.out)
        trained = {"steps": result.steps, "last_epoch_loss": round(result.final_loss, 4),
                   "train_time_s": round(result.train_time_s)}
    print(json.dumps({**vars(args), **trained, **validation_scores(model, held_out, size, args.amp)}))


if __name__ == "__main__":
    main()
