"""Feature extraction: embeddings of a dataset as an Arrow table (image_id, feature).

Batched, eval transform (the dataset's), ``model.forward_features`` of an inference module,
optional flip averaging. Under torchrun each rank embeds every world_size-th image and the
shards are gathered, so every rank returns the whole table in dataset order.
"""

from __future__ import annotations

import os

import pyarrow as pa
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from reid.data.torch_dataset import ReidDataset, manifest_split
from reid.data.transforms import eval_transform
from reid.engine import distributed
from reid.engine.trainer import autocast_dtype


@torch.no_grad()
def embed(model: nn.Module, images: torch.Tensor, *, flip: bool = False) -> torch.Tensor:
    """float32 [B, D] features; with `flip`, the mean of the image's and its mirror's features."""
    features = model.forward_features(images).float()
    if flip:
        features = (features + model.forward_features(images.flip(-1)).float()) / 2
    return features


@torch.no_grad()
def extract_features(model: nn.Module, dataset: Dataset, image_ids: list[str], *, device: torch.device,
                     batch_size: int = 128, num_workers: int = 0, flip: bool = False, amp: str = "auto",
                     channels_last: bool = True) -> pa.Table:
    """Table ``image_id: string, feature: fixed_size_list<float32>[D]`` for every item of `dataset`.

    `image_ids[i]` names ``dataset[i]``; items are dicts with an ``"image"`` tensor.
    """
    if len(image_ids) != len(dataset):
        raise ValueError(f"extract_features: {len(image_ids)} image ids for {len(dataset)} dataset items")
    info = distributed.current()
    model = model.to(device).eval()
    on_cuda = device.type == "cuda"
    memory_format = torch.channels_last if channels_last and on_cuda else torch.contiguous_format
    model.to(memory_format=memory_format)
    amp_dtype = autocast_dtype(amp, device)
    shard = Subset(dataset, range(info.rank, len(dataset), info.world_size))
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=on_cuda)
    chunks = []
    for batch in tqdm(loader, desc="features", disable=not info.is_main, leave=False):
        images = batch["image"].to(device, non_blocking=True).contiguous(memory_format=memory_format)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            chunks.append(embed(model, images, flip=flip))
    dim = int(model.feature_dim)
    features = torch.cat(chunks) if chunks else torch.empty(0, dim, device=device)
    if info.world_size > 1:
        features = _gather_strided(features, len(dataset), info.world_size)
    values = pa.array(features.cpu().numpy().reshape(-1), pa.float32())
    return pa.table({"image_id": pa.array(image_ids, pa.string()),
                     "feature": pa.FixedSizeListArray.from_arrays(values, dim)})


def _gather_strided(local: torch.Tensor, n: int, world_size: int) -> torch.Tensor:
    """Rank r holds items r, r + W, ...; pad to equal length, all_gather, interleave back to order."""
    per_rank = -(-n // world_size)
    padded = torch.zeros(per_rank, local.shape[1], dtype=local.dtype, device=local.device)
    padded[:len(local)] = local
    gathered = [torch.empty_like(padded) for _ in range(world_size)]
    dist.all_gather(gathered, padded)
    return torch.stack(gathered, dim=1).reshape(per_rank * world_size, -1)[:n]


def manifest_features(model: nn.Module, manifest_path: str | os.PathLike, size: tuple[int, int], *,
                      device: torch.device, splits: tuple[str, ...] = ("query", "gallery"),
                      **kwargs) -> pa.Table:
    """Features of the manifest's `splits` rows (default query + gallery), eval transform at `size`.

    `model` is an inference module (``trained.inference_model()``); kwargs go to extract_features.
    """
    table = manifest_split(manifest_path, list(splits))
    dataset = ReidDataset(table, eval_transform(size))
    return extract_features(model, dataset, dataset.image_ids, device=device, **kwargs)
