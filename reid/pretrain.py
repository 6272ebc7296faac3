"""Synthetic-person pretraining (SPEC §13): our ImageNet substitute for the default world.

The `pretrain` stage trains a ``baseline`` network (ID + batch-hard triplet, the reID engine) on a
pool of synthetic identities that the reID world never shows (reid.synth.export_pool), in the
spirit of RandPerson / UnrealPerson / LUPerson. Its trunk is saved as a torchvision ResNet state
dict, so every model's ``pretrained:`` (and SAN-PG's) loads it exactly like ImageNet weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
from torch import Tensor

from reid.data.datasets import DatasetError, ImageRecord, list_images, parse_market_name
from reid.data.manifest import build_manifest
from reid.data.torch_dataset import rooted
from reid.modeling.backbone import ResNetTrunk

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


def torchvision_state(trunk: ResNetTrunk) -> dict[str, Tensor]:
    """The trunk's weights under torchvision ResNet names (conv1, bn1, layer1..layer4; no fc)."""
    names = {"stem.0.": "conv1.", "stem.1.": "bn1."}
    names.update({f"layers.{i}.": f"layer{i + 1}." for i in range(len(trunk.layers))})
    state = {}
    for key, value in trunk.state_dict().items():
        prefix = next(p for p in names if key.startswith(p))
        state[names[prefix] + key[len(prefix):]] = value.detach().cpu().contiguous()
    return state
