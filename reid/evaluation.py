"""The evaluate stage's machinery: feature-based evaluation, CMC file, ranked-list picture.

Feature files: ``data/features/<name>.parquet``, read with reid.features (the format's one module).
The manifest (``data/manifest.parquet``) gives pid, camid, path and split; only its query and
gallery rows are ever used here.

``evaluate_features`` is the feature-based form of ``reid.metrics.evaluate``. It never builds
the whole [Q, G] distance matrix:

* ``top_k=None``: exact. Distances are computed one query chunk at a time (one BLAS pass on
  CPU or CUDA) and each chunk is scored at once, so memory is O(chunk x gallery).
* ``top_k=K``: FAISS k-NN lists; junk (gallery pid -1) is left out of the index and each list is
  fetched K + (most same-pid-same-camera items of any query) deep, so after the protocol's
  removals every query keeps its first K valid items: CMC up to rank K is exact, and positives
  beyond the K-th valid item count as not retrieved (AP over the true positive count, INP 0 if
  the hardest positive is missing). Memory O((Q + G) x K). With K >= the gallery, it equals exact.
* ``rerank``: k-reciprocal re-ranking (reid.retrieval), junk dropped before it. With ``top_k=None``
  its distances are streamed a query chunk at a time (``rerank_distances``) into the exact path's
  scorer, so memory is the re-ranking's own plus O(chunk x gallery); with ``top_k=K``, its K-deep
  ranked lists are scored as above.

Per-query file (``run_evaluation``'s ``per_query_path``, e.g. ``data/eval/<name>/per_query.parquet``):
one row per query in manifest order, columns ``image_id`` (string), ``pid``, ``camid`` (int64),
``valid`` (bool), ``ap`` (float64, NaN when not valid), ``first_hit`` (int64 0-based filtered rank
of the first true match, -1 when none) and ``inp`` (float64, NaN when not valid); see
reid.metrics.PerQuery. The report's paired bootstrap reads it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
from tqdm import tqdm

from reid.device import blas_device, on_device, to_numpy
from reid.features import read_features
from reid.io import (
    parquet_metadata,
    read_image,
    write_image,
    write_json_atomic,
    write_parquet_atomic,
    write_text_atomic,
)
from reid.metrics import (
    ChunkScorer,
    EvalResult,
    PerQuery,
    check_labels,
    chunk_rows,
    count_positives,
    count_same_camera,
    evaluate_ranked,
)
from reid.retrieval import (
    Metric,
    check_features,
    l2_normalize,
    pairwise_distances,
    rerank,
    rerank_distances,
    search,
    sq_norms,
)
from reid.viz import add_border, make_grid

DIAGNOSTIC_KEYS = ("rank1_pct", "mAP_pct", "mINP_pct")  # the numbers kept per diagnostic feature set
DISTANCE_BLOCK = 1 << 24  # (query, gallery) pairs per distance block: 64 MB, big enough for efficient BLAS
GREEN, RED, GREY, BLUE = (0, 170, 0), (220, 0, 0), (160, 160, 160), (40, 90, 220)


@dataclass
class RerankConfig:
    enabled: bool = False
    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3

    def validate(self) -> None:
        if self.k1 < 1 or self.k2 < 1:
            raise ValueError("rerank.k1 and rerank.k2 must be >= 1")
        if not 0.0 <= self.lambda_value <= 1.0:
            raise ValueError("rerank.lambda_value must be in [0, 1]")


@dataclass
class EvaluateConfig:
    max_rank: int = 50
    top_k: int | None = None  # None = exact over the whole gallery
    normalize: bool = True  # L2-normalise features -> cosine distance
    rerank: RerankConfig = field(default_factory=RerankConfig)
    single_gallery_shot: int = 0  # CUHK03 single-gallery-shot CMC repeats (0 = off)
    seed: int = 0
    n_ranked_queries: int = 6
    ranked_list_size: int = 10
    device: str = "auto"

    def validate(self) -> None:
        if self.max_rank < 1:
            raise ValueError("max_rank must be >= 1")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError("top_k must be >= 1 or null")
        if self.single_gallery_shot < 0 or self.n_ranked_queries < 0 or self.ranked_list_size < 1:
            raise ValueError("single_gallery_shot and n_ranked_queries must be >= 0, ranked_list_size >= 1")
        if self.single_gallery_shot and (self.top_k is not None or self.rerank.enabled):
            raise ValueError("single_gallery_shot needs the exact path (top_k: null, rerank off)")


@dataclass
class EvalSet:
    """Query and gallery features with their labels and image paths, in manifest order."""

    q_feats: np.ndarray
    g_feats: np.ndarray
    q_pids: np.ndarray
    g_pids: np.ndarray
    q_camids: np.ndarray
    g_camids: np.ndarray
    q_paths: list[Path]
    g_paths: list[Path]
    q_ids: list[str]  # the queries' manifest image_id, for the per-query file


def load_eval_set(features_path: str | os.PathLike, manifest_path: str | os.PathLike) -> EvalSet:
    """Join a feature file with the manifest's query and gallery rows (train rows are never used)."""
    from reid.data.manifest import read_manifest

    table, root = read_manifest(manifest_path)
    file = read_features(features_path)
    feats = file.features
    row_of = {image_id: i for i, image_id in enumerate(file.image_ids)}
    split = np.asarray(table.column("split").to_pylist())
    manifest_ids = table.column("image_id").to_pylist()
    pids = table.column("pid").to_numpy().astype(np.int64)
    camids = table.column("camid").to_numpy().astype(np.int64)
    paths = table.column("path").to_pylist()
    parts = {}
    for name in ("query", "gallery"):
        rows = np.flatnonzero(split == name)
        if len(rows) == 0:
            raise ValueError(f"{manifest_path}: no {name} rows")
        missing = [manifest_ids[r] for r in rows if manifest_ids[r] not in row_of]
        if missing:
            raise ValueError(f"{features_path}: {len(missing)} {name} image(s) of {manifest_path} have no feature "
                             f"(first: {', '.join(missing[:3])})")
        parts[name] = (feats[[row_of[manifest_ids[r]] for r in rows]], pids[rows], camids[rows],
                       [root / paths[r] for r in rows], [manifest_ids[r] for r in rows])
    (qf, qp, qc, qpath, qids), (gf, gp, gc, gpath, _) = parts["query"], parts["gallery"]
    return EvalSet(check_features(qf, f"{features_path} (query rows)"),
                   check_features(gf, f"{features_path} (gallery rows)"), qp, gp, qc, gc, qpath, gpath, qids)


def manifest_dataset(path: str | os.PathLike) -> dict[str, str]:
    """{"dataset", "root"}: what a manifest was prepared from (its schema metadata, written by
    reid.data.manifest.write_manifest), to label a cross-dataset evaluation's source and target."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path} (run the stage that prepares it)")
    meta = parquet_metadata(path)
    if missing := [k for k in ("dataset", "root") if k not in meta]:
        raise ValueError(f"{path}: no {' or '.join(missing)} in the schema metadata (not a prepared manifest)")
    return {"dataset": meta["dataset"], "root": meta["root"]}


# ----------------------------------------------------------------------------- evaluation

def evaluate_features(q_feats, g_feats, q_pids, g_pids, q_camids, g_camids, *, max_rank: int = 50,
                      top_k: int | None = None, metric: Metric = "l2", rerank_cfg: RerankConfig | None = None,
                      single_gallery_shot: int = 0, seed: int = 0, device: str = "auto",
                      progress: bool = False) -> EvalResult:
    """Metrics straight from features (see the module notes for the three paths and their memory)."""
    qf, gf = check_features(q_feats, "query features"), check_features(g_feats, "gallery features")
    if qf.shape[1] != gf.shape[1]:
        raise ValueError(f"query features are {qf.shape[1]}-d but gallery features are {gf.shape[1]}-d")
    qp, gp, qc, gc = check_labels(len(qf), len(gf), q_pids, g_pids, q_camids, g_camids)
    reranking = rerank_cfg is not None and rerank_cfg.enabled
    if single_gallery_shot and (reranking or top_k is not None):
        raise ValueError("single_gallery_shot needs the exact path (top_k=None, no re-ranking)")
    exclude = gp == -1
    if top_k is not None:
        k = top_k + int(count_same_camera(qp, qc, gp, gc).max())
        if reranking:
            _, idx = rerank(qf, gf, k, k1=rerank_cfg.k1, k2=rerank_cfg.k2, lambda_value=rerank_cfg.lambda_value,
                            exclude=exclude, device=device, progress=progress)
        else:
            _, idx = search(qf, gf, k, metric, exclude=exclude, progress=progress)
        return evaluate_ranked(idx, qp, gp, qc, gc, max_rank, depth=top_k)
    if reranking:  # exact: each re-ranked chunk is scored as it comes, no [Q, G] ranking is kept
        chunks = rerank_distances(qf, gf, k1=rerank_cfg.k1, k2=rerank_cfg.k2, lambda_value=rerank_cfg.lambda_value,
                                  exclude=exclude, device=device, progress=progress)
    else:
        chunks = distance_chunks(qf, gf, metric, device, progress)
    scorer = ChunkScorer(gp, gc, max_rank, single_gallery_shot, seed)
    for s, d in chunks:
        scorer.add(d, qp[s:s + len(d)], qc[s:s + len(d)])
    return scorer.result()


def distance_chunks(qf: np.ndarray, gf: np.ndarray, metric: Metric = "l2", device: str = "auto",
                    progress: bool = False) -> Iterator[tuple[int, np.ndarray]]:
    """(first query index, float32 [c, G] distances on the host) per query chunk of about DISTANCE_BLOCK pairs:
    host BLAS on CPU (numpy), torch on CUDA; the scoring that follows is on the host (numpy SIMD sort)."""
    dev = blas_device(device)
    g = on_device(gf, dev)
    g_sq = sq_norms(g)
    step = chunk_rows(len(gf), DISTANCE_BLOCK)
    for s in tqdm(range(0, len(qf), step), desc="evaluate", disable=not progress):
        yield s, to_numpy(pairwise_distances(on_device(qf[s:s + step], dev), g, metric, g_sq))


def evaluate_set(data: EvalSet, cfg: EvaluateConfig, progress: bool = False) -> EvalResult:
    qf, gf = (l2_normalize(data.q_feats), l2_normalize(data.g_feats)) if cfg.normalize else (data.q_feats, data.g_feats)
    return evaluate_features(qf, gf, data.q_pids, data.g_pids, data.q_camids, data.g_camids,
                             max_rank=cfg.max_rank, top_k=cfg.top_k, metric="cosine" if cfg.normalize else "l2",
                             rerank_cfg=cfg.rerank, single_gallery_shot=cfg.single_gallery_shot, seed=cfg.seed,
                             device=cfg.device, progress=progress)


def invalid_query_note(result: EvalResult) -> str:
    """A line saying how many queries were skipped and why (empty when none were)."""
    skipped = result.n_query - result.n_query_valid
    if not skipped:
        return ""
    return (f"{skipped} of {result.n_query} queries have no true match in the gallery (same pid on another "
            f"camera) and were skipped; check camera ids if this is unexpected")


# ----------------------------------------------------------------------------- outputs

def write_cmc(path: str | os.PathLike, cmc: np.ndarray) -> None:
    """TSV with columns rank (1-based) and accuracy_pct, for ``dvc plots``."""
    lines = ["rank\taccuracy_pct"] + [f"{r + 1}\t{100 * v:.4f}" for r, v in enumerate(cmc)]
    write_text_atomic(path, "\n".join(lines) + "\n")


def write_metrics(path: str | os.PathLike, result: EvalResult,
                  diagnostics: Mapping[str, EvalResult] | None = None,
                  labels: Mapping[str, object] | None = None) -> None:
    """metrics/<name>.json: `labels` (e.g. a cross-dataset run's ``source`` and ``target``), the
    summary, plus ``diagnostics`` (``mf`` = `result`, then each extra feature set's Rank-1 / mAP / mINP)
    when extra feature sets were evaluated."""
    summary = {**(labels or {}), **result.summary()}
    if diagnostics:
        summary["diagnostics"] = {name: diagnostic_scores(r) for name, r in {"mf": result, **diagnostics}.items()}
    write_json_atomic(path, summary)


def diagnostic_scores(result: EvalResult) -> dict[str, float]:
    summary = result.summary()
    return {key: summary[key] for key in DIAGNOSTIC_KEYS}


def per_query_table(data: EvalSet, per_query: PerQuery) -> pa.Table:
    """The per-query file's table (columns in the module notes), one row per query in manifest order."""
    if len(per_query.valid) != len(data.q_ids):
        raise ValueError(f"{len(per_query.valid)} per-query values for {len(data.q_ids)} queries")
    return pa.table({"image_id": pa.array(data.q_ids, pa.string()), "pid": pa.array(data.q_pids, pa.int64()),
                     "camid": pa.array(data.q_camids, pa.int64()),
                     **{name: pa.array(values) for name, values in per_query.columns().items()}})


def pick_queries(data: EvalSet, n: int, seed: int = 0) -> np.ndarray:
    """`n` query indices spread over the query set (seeded), only queries that have a true match."""
    candidates = np.flatnonzero(count_positives(data.q_pids, data.q_camids, data.g_pids, data.g_camids) > 0)
    if len(candidates) == 0 or n == 0:
        return np.zeros(0, np.int64)
    return np.sort(np.random.default_rng(seed).choice(candidates, min(n, len(candidates)), replace=False))


def ranked_list_picture(data: EvalSet, queries: np.ndarray, *, size: int = 10, normalize: bool = True,
                        cell: tuple[int, int] = (128, 64)) -> np.ndarray:
    """One row per query: the query (blue border), then its top `size` gallery images by plain distance
    (no re-ranking), green = true match, red = wrong, grey = junk (pid -1 or same pid + same camera)."""
    if len(queries) == 0:
        raise ValueError("ranked_list_picture needs at least one query")
    qf, gf = (l2_normalize(data.q_feats), l2_normalize(data.g_feats)) if normalize else (data.q_feats, data.g_feats)
    d = pairwise_distances(qf[queries], gf, "cosine" if normalize else "l2")
    size = min(size, len(gf))
    order = np.argsort(d, axis=1, kind="stable")[:, :size]
    tiles, captions = [], []

    def tile(path: Path, color: tuple[int, int, int]) -> np.ndarray:
        return add_border(cv2.resize(read_image(path), (cell[1], cell[0]), interpolation=cv2.INTER_AREA), color)

    for qi, row in zip(queries, order, strict=True):
        tiles.append(tile(data.q_paths[qi], BLUE))
        captions.append(f"q {data.q_pids[qi]}")
        for rank, gi in enumerate(row, 1):
            same = data.g_pids[gi] == data.q_pids[qi]
            junk = data.g_pids[gi] == -1 or (same and data.g_camids[gi] == data.q_camids[qi])
            tiles.append(tile(data.g_paths[gi], GREY if junk else GREEN if same else RED))
            captions.append(f"{rank}:{data.g_pids[gi]}")
    return make_grid(tiles, size + 1, captions=captions)


def run_evaluation(cfg: EvaluateConfig, features_path: str | os.PathLike, manifest_path: str | os.PathLike,
                   metrics_path: str | os.PathLike, cmc_path: str | os.PathLike,
                   picture_path: str | os.PathLike, per_query_path: str | os.PathLike,
                   diagnostic_features: Mapping[str, str | os.PathLike] | None = None,
                   labels: Mapping[str, object] | None = None) -> EvalResult:
    """The whole evaluate stage: features + manifest -> metrics JSON, CMC TSV, ranked-list picture,
    per-query Parquet. `diagnostic_features` (name -> feature file of the same model, e.g. ``fused``)
    are evaluated with the same config into the JSON's ``diagnostics``; `labels` are added to the JSON."""
    data = load_eval_set(features_path, manifest_path)
    result = evaluate_set(data, cfg, progress=True)
    if result.n_query_valid == 0:
        raise ValueError(f"{manifest_path}: no query has a true match in the gallery (same pid, other camera)")
    diagnostics = {name: evaluate_set(load_eval_set(path, manifest_path), cfg, progress=True)
                   for name, path in (diagnostic_features or {}).items()}
    write_metrics(metrics_path, result, diagnostics, labels)
    write_cmc(cmc_path, result.cmc)
    write_parquet_atomic(per_query_path, per_query_table(data, result.per_query))
    queries = pick_queries(data, cfg.n_ranked_queries, cfg.seed)
    if len(queries):
        picture = ranked_list_picture(data, queries, size=cfg.ranked_list_size, normalize=cfg.normalize)
    else:  # still write the declared output
        picture = np.full((32, 32, 3), 255, np.uint8)
    write_image(picture_path, picture)
    return result
