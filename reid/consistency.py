"""How much identity the regulators' inputs carry, with no ground truth: retrieval on them alone.

DSA's DSAG-Stream reads the DSAP-images and SAN's decoder regresses the pseudo textures. On the synthetic
world both come close to the identity's texture atlas; on real crops the lite DensePose and SAN-PG were
trained on renders only, so how much of a person survives into them is a question. It is answered the
way any representation is in reID: query-vs-gallery retrieval on the test split (reid.evaluation's
protocol: same pid and camera discarded), here with *fixed* features that nothing was trained for:

* ``crop`` — the crop's own pixels (the reference: what the regulators start from);
* ``dsap`` — the 24 DSAP-images;
* ``texture`` — the pseudo-texture atlas;

each resized (area interpolation) to a few thousand numbers, centred by the mean over the evaluated
images and L2-normalised, scored by cosine distance. A regulator input that describes the person scores
at or above its crop; one that is noise scores at chance (about 1 / gallery identities for Rank-1).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import cv2
import numpy as np
import pyarrow as pa

from reid.data.torch_dataset import DSAP_SIZE_KEY, TEXTURE_TILE_KEY, cache_column, manifest_split, metadata_int
from reid.dsap import dsap_grid, read_dsap, sample_picture
from reid.evaluation import evaluate_features
from reid.io import decode_raw, read_image
from reid.parts import N_PARTS
from reid.retrieval import l2_normalize
from reid.sanpg.cache import read_texture
from reid.viz import colorize_iuv

CROP_SIZE = (32, 16)  # (H, W) of the crop feature: 1,536 numbers
DSAP_SIDE = 6  # each of the 24 part images resized to 6 x 6: 2,592 numbers
TEXTURE_SIZE = (24, 16)  # the [6T, 4T] atlas resized to 24 x 16 (4 x 4 per part tile): 1,152 numbers


@dataclass
class SplitRows:
    """The query and gallery rows of a manifest, in the order the features are built."""

    image_ids: list[str]
    paths: list[str]
    pids: np.ndarray
    camids: np.ndarray
    is_query: np.ndarray


def split_rows(manifest: str | os.PathLike) -> SplitRows:
    table = manifest_split(manifest, ["query", "gallery"])
    return SplitRows([str(i) for i in table["image_id"].to_pylist()], table["path"].to_pylist(),
                     np.asarray(table["pid"].to_pylist()), np.asarray(table["camid"].to_pylist()),
                     np.asarray([s == "query" for s in table["split"].to_pylist()]))


def resized_vector(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 [H, W, 3] -> float32 vector of the image resized to `size` (H, W) with area interpolation."""
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()


def crop_feature(image: np.ndarray) -> np.ndarray:
    return resized_vector(image, CROP_SIZE)


def dsap_feature(dsap: np.ndarray) -> np.ndarray:
    """uint8 [24, S, S, 3] -> the 24 part images, each resized to DSAP_SIDE x DSAP_SIDE, concatenated."""
    return np.concatenate([resized_vector(dsap[i], (DSAP_SIDE, DSAP_SIDE)) for i in range(N_PARTS)])


def texture_feature(atlas: np.ndarray) -> np.ndarray:
    return resized_vector(atlas, TEXTURE_SIZE)


def dsap_cells(path: str | os.PathLike, image_ids: list[str]) -> tuple[pa.Array, int]:
    """The DSAP cache's cells for `image_ids` and its side S (from the cache's metadata)."""
    cells, meta = cache_column(path, "dsap", image_ids)
    return cells, metadata_int(path, meta, DSAP_SIZE_KEY, "the DSAP image side S")


def texture_cells(path: str | os.PathLike, image_ids: list[str]) -> tuple[pa.Array, int]:
    """The texture cache's cells for `image_ids` and its tile T (from the cache's metadata)."""
    cells, meta = cache_column(path, "texture", image_ids)
    return cells, metadata_int(path, meta, TEXTURE_TILE_KEY, "the texture atlas tile T")


def retrieval_scores(features: np.ndarray, rows: SplitRows) -> dict[str, float]:
    """Rank-1, mAP (%) and the valid query count of fixed features: centred, L2-normalised, cosine."""
    x = l2_normalize(features - features.mean(0, keepdims=True))
    q = rows.is_query
    result = evaluate_features(x[q], x[~q], rows.pids[q], rows.pids[~q], rows.camids[q], rows.camids[~q],
                               metric="cosine")
    return {"rank1_pct": round(100 * result.rank(1), 2), "mAP_pct": round(100 * result.mAP, 2),
            "n_query_valid": int(result.n_query_valid)}


def stacked(items: Iterable[object], feature: Callable[[object], np.ndarray]) -> np.ndarray:
    return np.stack([feature(item) for item in items])


def regulator_consistency(manifest: str | os.PathLike, *, dsap: str | os.PathLike | None = None,
                          texture: str | os.PathLike | None = None) -> dict[str, dict[str, float]]:
    """{"crop" | "dsap" | "texture": retrieval_scores} on the manifest's query + gallery rows; the DSAP and
    texture caches are optional."""
    rows = split_rows(manifest)
    scores = {"crop": retrieval_scores(stacked(rows.paths, lambda p: crop_feature(read_image(p))), rows)}
    if dsap is not None:
        cells, side = dsap_cells(dsap, rows.image_ids)
        scores["dsap"] = retrieval_scores(stacked(cells, lambda c: dsap_feature(read_dsap(c.as_py(), side))), rows)
    if texture is not None:
        cells, tile = texture_cells(texture, rows.image_ids)
        scores["texture"] = retrieval_scores(stacked(cells, lambda c: texture_feature(read_texture(c.as_py(), tile))),
                                             rows)
    return scores


def contact_sheet(manifest: str | os.PathLike, iuv: str | os.PathLike, dsap: str | os.PathLike,
                  texture: str | os.PathLike, n: int = 8) -> np.ndarray:
    """A picture of `n` query crops (spread over the split) beside their IUV, DSAP grid and pseudo texture:
    what the regulators make of these people, to look at beside the scores."""
    rows = split_rows(manifest)
    queries = np.flatnonzero(rows.is_query)
    picks = queries[np.linspace(0, len(queries) - 1, min(n, len(queries))).round().astype(int)]
    ids = [rows.image_ids[i] for i in picks]
    iuvs, _ = cache_column(iuv, "iuv", ids)
    dsaps, side = dsap_cells(dsap, ids)
    atlases, tile = texture_cells(texture, ids)
    return sample_picture([(read_image(rows.paths[i]), colorize_iuv(decode_raw(iuvs[k].as_py())),
                            dsap_grid(read_dsap(dsaps[k].as_py(), side)), read_texture(atlases[k].as_py(), tile))
                           for k, i in enumerate(picks)])
