"""Feature extraction: embeddings of a dataset as Arrow tables (image_id, feature).

Batched, eval transform (the dataset's), optional flip averaging. What is embedded is a
`BatchFeatures` function of (model, batch) -> named features: `image_features` (the inference
module's ``forward_features``, one table) or `dsa_stream_features` (a whole dsa / dsa_san model on
image + DSAP: the MF-Stream, fused and DSAG-Stream features in one pass, one table each). Flip
averaging mirrors only the image: a flipped crop keeps its unflipped DSAP-images (SPEC §2).
Under torchrun each rank embeds every world_size-th image and the shards are gathered, so every
rank returns the whole tables in dataset order. The tables are reid.features' feature files' tables;
`FeaturesConfig` holds the features stage's knobs (params ``features``), and `embed_feature_set` is
what the features and cross_evaluate stages embed: a feature set from its trained network folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from reid.data.torch_dataset import ReidDataset, manifest_split
from reid.data.transforms import eval_transform, model_inputs
from reid.device import AmpMode, autocast_dtype, check_device_settings, default_device, memory_format
from reid.engine import distributed
from reid.export import INFO_FILE, WEIGHTS_FILE, TrainedModel, load_trained
from reid.features import feature_table
from reid.modeling import PRETRAINED, STREAM_MODELS

Batch = dict[str, torch.Tensor]
BatchFeatures = Callable[[nn.Module, Batch], dict[str, torch.Tensor]]
MODEL_INPUTS = ("image", "dsap")  # batch keys moved to the device; labels and indices stay behind
DSA_STREAMS = ("mf", "fused", "guide")  # [f_G, f_L], [z_G, z_L] = f + d, [d_G, d_L]


@dataclass
class FeaturesConfig:
    """How a set of images is embedded (params ``features``)."""

    flip: bool = True  # average the embeddings of the image and its mirror
    batch_size: int = 128
    num_workers: int = 2
    device: str = "auto"
    amp: AmpMode = "auto"  # reid.device.autocast_dtype: auto = CUDA only; bf16 also on the CPU; off = fp32

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        check_device_settings(self.device, self.amp)


def image_features(model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
    """{"feature": model.forward_features(image)}: an inference module's embedding."""
    return {"feature": model.forward_features(batch["image"])}


def dsa_stream_features(model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
    """{"mf", "fused", "guide"} of a whole dsa / dsa_san model from batch image and DSAP."""
    return model.forward_stream_features(batch["image"], batch["dsap"])


def mirrored(batch: Batch) -> Batch:
    """The batch with its images flipped left-right and everything else, the DSAP included, as is."""
    return {**batch, "image": batch["image"].flip(-1)}


@torch.no_grad()
def embed_batch(model: nn.Module, batch: Batch, features: BatchFeatures = image_features, *,
                flip: bool = False) -> dict[str, torch.Tensor]:
    """float32 named features [B, D]; with `flip`, each the mean over the batch and its mirror."""
    out = {name: f.float() for name, f in features(model, batch).items()}
    if flip:
        mirror = features(model, mirrored(batch))
        out = {name: (f + mirror[name].float()) / 2 for name, f in out.items()}
    return out


def embed(model: nn.Module, images: torch.Tensor, *, flip: bool = False) -> torch.Tensor:
    """float32 [B, D] features of an inference module for uint8 images [B, H, W, 3] (as `eval_transform`
    yields them); with `flip`, the mean of image and mirror."""
    return embed_batch(model, model_inputs({"image": images}), flip=flip)["feature"]


@torch.no_grad()
def extract_named_features(model: nn.Module, dataset: Dataset, image_ids: list[str], *,
                           features: BatchFeatures, dims: Mapping[str, int], device: torch.device,
                           batch_size: int = 128, num_workers: int = 0, flip: bool = False, amp: str = "auto",
                           channels_last: bool = True) -> dict[str, pa.Table]:
    """{name: table ``image_id: string, feature: fixed_size_list<float32>[dims[name]]``} over `dataset`.

    `image_ids[i]` names ``dataset[i]``; items are dicts with the tensors `features` reads;
    `dims` names the features `features` returns (also what an empty shard contributes).
    """
    if len(image_ids) != len(dataset):
        raise ValueError(f"extract_features: {len(image_ids)} image ids for {len(dataset)} dataset items")
    info = distributed.current()
    model = model.to(device).eval()
    on_cuda = device.type == "cuda"
    amp_dtype = autocast_dtype(amp, device)
    layout = memory_format(channels_last, device, amp_dtype)
    model.to(memory_format=layout)
    shard = Subset(dataset, range(info.rank, len(dataset), info.world_size))
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=on_cuda)
    chunks: dict[str, list[torch.Tensor]] = {name: [] for name in dims}
    for batch in tqdm(loader, desc="features", disable=not info.is_main, leave=False):
        inputs = model_inputs({k: batch[k].to(device, non_blocking=True) for k in MODEL_INPUTS if k in batch})
        inputs["image"] = inputs["image"].contiguous(memory_format=layout)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            out = embed_batch(model, inputs, features, flip=flip)
        if set(out) != set(dims):
            raise ValueError(f"extract_features: the features are {sorted(out)}, expected {sorted(dims)}")
        for name, f in out.items():
            chunks[name].append(f)
    return {name: _feature_table(chunks[name], int(dim), image_ids, device, len(dataset), info.world_size)
            for name, dim in dims.items()}


def _feature_table(chunks: list[torch.Tensor], dim: int, image_ids: list[str], device: torch.device,
                   n: int, world_size: int) -> pa.Table:
    features = torch.cat(chunks) if chunks else torch.empty(0, dim, device=device)
    if world_size > 1:
        features = _gather_strided(features, n, world_size)
    return feature_table(image_ids, features.cpu().numpy())


def extract_features(model: nn.Module, dataset: Dataset, image_ids: list[str], *, device: torch.device,
                     **kwargs) -> pa.Table:
    """Table ``image_id: string, feature: fixed_size_list<float32>[D]`` of an inference module's
    ``forward_features`` for every item of `dataset` (dicts with an ``"image"``); kwargs as
    extract_named_features'."""
    tables = extract_named_features(model, dataset, image_ids, features=image_features,
                                    dims={"feature": int(model.feature_dim)}, device=device, **kwargs)
    return tables["feature"]


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


def manifest_dsa_stream_features(model: nn.Module, manifest_path: str | os.PathLike,
                                 dsap_path: str | os.PathLike, size: tuple[int, int], *, device: torch.device,
                                 splits: tuple[str, ...] = ("query", "gallery"), **kwargs) -> dict[str, pa.Table]:
    """{"mf", "fused", "guide"} tables of the manifest's `splits` rows with their DSAP images.

    `model` is a whole dsa / dsa_san model (``reid.export.load_trained_model``); "mf" equals
    manifest_features of its inference model. kwargs go to extract_named_features.
    """
    table = manifest_split(manifest_path, list(splits))
    dataset = ReidDataset(table, eval_transform(size), dsap_path=dsap_path)
    dims = dict.fromkeys(DSA_STREAMS, int(model.feature_dim))
    return extract_named_features(model, dataset, dataset.image_ids, features=dsa_stream_features, dims=dims,
                                  device=device, **kwargs)


# --- the pipeline's feature sets (features and cross_evaluate stages) ---

DIAGNOSTICS = ("fused", "guide")  # dsa, dsa_san with their DSAP: <set>_fused ([z_G, z_L]), <set>_guide ([d_G, d_L])


def embed_feature_set(name: str, folder: Path, cfg: FeaturesConfig, manifest: str | os.PathLike,
                      dsap: str | os.PathLike | None = None) -> tuple[TrainedModel, dict[str, pa.Table]]:
    """Feature set `name` (reid.modeling.FEATURE_SETS) embedded from its network `folder` (model.pt +
    model.json) over `manifest`'s query and gallery rows: (the network, {output stem: table}).

    The stems are <name>, plus <name>_fused and <name>_guide for the dsa models when `dsap` is given: then
    the whole network is loaded, else the inference network alone (no DSAP of the manifest is needed).
    """
    for file in (WEIGHTS_FILE, INFO_FILE):
        if not (folder / file).is_file():
            stage = "pretrain" if name == PRETRAINED else f"train@{name}"
            raise FileNotFoundError(f"no {folder / file}: run `dvc repro {stage}` first")
    streams = name in STREAM_MODELS and dsap is not None
    trained = load_trained(folder, whole=streams, name=None if name == PRETRAINED else name)
    device = default_device(cfg.device)
    device = distributed.rank_device(device, distributed.init_distributed(device))
    kwargs = dict(device=device, flip=cfg.flip, batch_size=cfg.batch_size, num_workers=cfg.num_workers, amp=cfg.amp)
    size = trained.info.input_size
    if streams:
        tables = manifest_dsa_stream_features(trained.network, manifest, dsap, size, **kwargs)
        return trained, {name: tables["mf"], **{f"{name}_{d}": tables[d] for d in DIAGNOSTICS}}
    return trained, {name: manifest_features(trained.network, manifest, size, **kwargs)}
