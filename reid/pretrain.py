"""Synthetic-person pretraining (SPEC §13): our ImageNet substitute for the default world.

The `pretrain` stage trains a ``baseline`` network (ID + batch-hard triplet, the reID engine) on a
pool of synthetic identities that the reID world never shows (reid.synth.export_pool), in the
spirit of RandPerson / UnrealPerson / LUPerson. Its trunk is saved under its source library's names
(`library_state`: torchvision's for a ResNet, timm's for EfficientNet-Lite0), so every model's
``pretrained:`` (and SAN-PG's) loads it exactly like ImageNet weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa

from reid.data.datasets import DatasetError, ImageRecord, list_images, parse_market_name
from reid.data.manifest import build_manifest
from reid.data.torch_dataset import rooted

POOL_FOLDER = "bounding_box_train"


def pool_table(root: str | os.PathLike, *, num_workers: int = 2) -> pa.Table:
    """The pool's images as train manifest rows (contiguous labels, paths usable as they are)."""
    root = Path(root)
    records = []
    for path in list_images(root / POOL_FOLDER):
        try:
            pid, camid = parse_market_name(path.name)
        except ValueError as err:
            raise DatasetError(f"{path}: {err}") from None
        records.append(ImageRecord(f"{POOL_FOLDER}/{path.name}", pid, camid, "train"))
    table, _ = build_manifest(records, root, num_workers=num_workers)
    return rooted(table, root)
