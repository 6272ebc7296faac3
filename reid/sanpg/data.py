"""PIT pairs in memory, the held-out split by texture identity, and texture normalisation."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from reid.data.pit import PitPair, load_pit_pairs, read_pit_pair
from reid.data.transforms import texture_inputs
from reid.parts import atlas_shape

# --- texture normalisation ---


def to_uint8(texture: torch.Tensor) -> np.ndarray:
    """float [..., 3, H, W] in [-1, 1] -> uint8 [..., H, W, 3]: round((x + 1) * 127.5), clipped."""
    x = ((texture.detach().float() + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)
    return x.movedim(-3, -1).cpu().numpy()


def textures_tensor(atlases: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [-1, 1] (`reid.data.transforms.texture_inputs`)."""
    return texture_inputs(torch.from_numpy(np.ascontiguousarray(atlases)))


def images_tensor(images: Sequence[np.ndarray], transform: Callable[[np.ndarray], torch.Tensor]) -> torch.Tensor:
    """uint8 [N, H, W, 3]: `transform` (a resize) applied image by image, in order."""
    return torch.stack([transform(image) for image in images])


# --- PIT data and the held-out split ---


@dataclass
class PitData:
    """PIT pairs in memory: person images (as stored) and the distinct textures they index."""

    stems: list[str]
    images: list[np.ndarray]  # uint8 [H, W, 3] each
    textures: np.ndarray  # uint8 [M, 6T, 4T, 3], one per texture identity, in first-seen order
    texture_of: np.ndarray  # int64 [N]: pair i shows textures[texture_of[i]]
    digest: str = ""  # sha1 over stems and texture keys (ties checkpoints to the data)

    def __len__(self) -> int:
        return len(self.stems)

    def targets(self, indices: np.ndarray) -> np.ndarray:
        """uint8 [len(indices), 6T, 4T, 3]: the true atlas of each pair."""
        return self.textures[self.texture_of[indices]]


def load_pit(root: str | Path, tile: int, *, progress: bool = True) -> PitData:
    """Every PIT pair under `root` (reid.data.pit), grouped by texture identity (identical texture bytes).

    Textures must be atlases of tile `tile`; an error names the first file that is not.
    """
    pairs: list[PitPair] = load_pit_pairs(root)
    expected = atlas_shape(tile)
    stems, images, textures, texture_of = [], [], [], []
    index: dict[str, int] = {}
    digest = hashlib.sha1()
    for pair in tqdm(pairs, desc="read PIT", unit="pair", disable=not progress, mininterval=1.0):
        key = hashlib.sha1(Path(pair.texture).read_bytes()).hexdigest()
        image, texture, _ = read_pit_pair(pair)
        if texture.shape != expected:
            raise ValueError(f"{pair.texture}: texture shape {texture.shape} is not the atlas {expected} "
                             f"of tile {tile} (parameter train_sanpg.tile)")
        if key not in index:
            index[key] = len(textures)
            textures.append(texture)
        stems.append(pair.stem)
        images.append(image)
        texture_of.append(index[key])
        digest.update(f"{pair.stem}:{key};".encode())
    return PitData(stems, images, np.stack(textures), np.asarray(texture_of, np.int64), digest.hexdigest())


def split_by_texture(texture_of: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) pair indices; a seeded round(val_fraction * M) of the M textures (at least 1,
    at most M - 1) are held out with all their pairs."""
    n_textures = int(texture_of.max()) + 1
    if n_textures < 2:
        raise ValueError(f"PIT holds {n_textures} texture identity; a held-out split needs at least 2")
    n_held = min(max(1, round(val_fraction * n_textures)), n_textures - 1)
    held = np.random.default_rng(seed).permutation(n_textures)[:n_held]
    is_held = np.isin(texture_of, held)
    return np.flatnonzero(~is_held), np.flatnonzero(is_held)


def mean_texture(data: PitData, indices: np.ndarray) -> torch.Tensor:
    """float [3, 6T, 4T] in [-1, 1]: the mean target over pairs `indices` (the mean-texture predictor)."""
    counts = np.bincount(data.texture_of[indices], minlength=len(data.textures)).astype(np.float64)
    mean = np.tensordot(counts / counts.sum(), data.textures.astype(np.float64), axes=1)
    return torch.from_numpy(mean / 127.5 - 1.0).float().permute(2, 0, 1).contiguous()
