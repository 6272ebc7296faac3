"""Gallery search: FAISS exact k-NN (GPU when present) and k-reciprocal re-ranking (SPEC §10).

Distances: ``metric="l2"`` gives squared Euclidean distances (FAISS ``IndexFlatL2``);
``metric="cosine"`` expects L2-normalised features and gives ``1 - cosine`` (``IndexFlatIP``).
Ranked lists are sorted by (distance, gallery index): ties go to the earlier gallery item.

Re-ranking (Zhong et al., CVPR 2017, k1=20, k2=6, lambda=0.3) is built from FAISS neighbour
lists, not from an all-pairs matrix: k-reciprocal sets come from the (k1+1)-NN lists of all
query+gallery items, the Gaussian weights are normalised by each row's farthest distance (one
exact farthest-neighbour FAISS search), the sets are kept as a sparse matrix V, local query
expansion is a sparse product, and the Jaccard term is a sparse join over V's columns. Only the
final combination is done densely, one query chunk at a time, so memory is O(chunk x gallery +
nnz(V)). Re-ranking always uses squared Euclidean distances of the (possibly normalised) features,
as fast-reid does; V is float32 (the original code's float16 query expansion is not copied).
"""

from __future__ import annotations

from typing import Literal

import faiss
import numpy as np
import scipy.sparse as sp
import torch
from tqdm import tqdm

Metric = Literal["l2", "cosine"]
GPU_MAX_K = 2048  # FAISS GPU brute-force k limit


def check_features(x, name: str) -> np.ndarray:
    """float32 C-contiguous [N, D] features; clear errors for wrong shape, emptiness or NaN/inf."""
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D [N, D] feature array, got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name}: empty feature set")
    if not np.isfinite(x.sum(1, dtype=np.float64)).all():  # NaN/inf survive a float64 row sum
        bad = np.flatnonzero(~np.isfinite(x).all(1))
        raise ValueError(f"{name}: {len(bad)} feature row(s) contain NaN/inf (first rows {bad[:5].tolist()})")
    return x


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)).astype(np.float32)


def _use_gpu(k: int) -> bool:
    return faiss.get_num_gpus() > 0 and hasattr(faiss, "index_cpu_to_all_gpus") and k <= GPU_MAX_K


def build_index(gallery: np.ndarray, metric: Metric = "l2", *, gpu: bool = False) -> faiss.Index:
    """Exact FAISS index over `gallery`; sharded over all GPUs when asked and available."""
    index = faiss.IndexFlatIP(gallery.shape[1]) if metric == "cosine" else faiss.IndexFlatL2(gallery.shape[1])
    if gpu:
        options = faiss.GpuMultipleClonerOptions()
        options.shard = True
        index = faiss.index_cpu_to_all_gpus(index, options)
    index.add(gallery)
    return index


def _stable_order(dist: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # FAISS does not promise an order among equal distances: sort each row by (distance, index).
    order = np.lexsort((idx, dist), axis=-1)
    return np.take_along_axis(dist, order, 1), np.take_along_axis(idx, order, 1)


def search(query: np.ndarray, gallery: np.ndarray, top_k: int, metric: Metric = "l2", *,
           exclude: np.ndarray | None = None, chunk: int = 4096, progress: bool = False
           ) -> tuple[np.ndarray, np.ndarray]:
    """(distances [Q, k], gallery indices [Q, k]) of each query's `top_k` nearest gallery items.

    `exclude` (bool [G]) leaves gallery items out of the index (e.g. junk); returned indices
    always refer to the full gallery. k is capped at the number of indexed items.
    """
    query, gallery = check_features(query, "query features"), check_features(gallery, "gallery features")
    if query.shape[1] != gallery.shape[1]:
        raise ValueError(f"query features are {query.shape[1]}-d but gallery features are {gallery.shape[1]}-d")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    ids = np.arange(len(gallery)) if exclude is None else np.flatnonzero(~np.asarray(exclude, bool))
    if len(ids) == 0:
        raise ValueError("every gallery item is excluded: nothing to search")
    k = min(top_k, len(ids))
    index = build_index(gallery[ids], metric, gpu=_use_gpu(k))
    dists, idxs = [], []
    for s in tqdm(range(0, len(query), chunk), desc="search", disable=not progress):
        d, i = index.search(query[s:s + chunk], k)
        if metric == "cosine":
            d = 1.0 - d
        d, i = _stable_order(d.astype(np.float32), i)
        dists.append(d)
        idxs.append(ids[i])
    return np.concatenate(dists), np.concatenate(idxs)


def pairwise_distances(query, gallery, metric: Metric = "l2", gallery_sq=None):
    """Dense [Q, G] distances (squared L2, or 1 - cosine for normalised features), one BLAS pass.

    Works on numpy arrays (host BLAS) and torch tensors (any device) alike; `gallery_sq` (the
    gallery's squared norms) can be passed in to skip recomputing them chunk after chunk.
    """
    out = query @ gallery.T
    if metric == "cosine":
        out *= -1.0
        out += 1.0
        return out
    if gallery_sq is None:
        gallery_sq = (gallery * gallery).sum(1)
    out *= -2.0
    out += (query * query).sum(1)[:, None]
    out += gallery_sq[None]
    return out.clip(min=0.0)


def farthest_distances(x: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """max_j ||x_i - x_j||^2 for every row, by one exact FAISS inner-product search.

    ||x_i - x_j||^2 = ||x_i||^2 + (||x_j||^2 - 2 x_i.x_j), and the bracket is the inner product
    of [-2 x_i, 1] with [x_j, ||x_j||^2]: the farthest point is the max-inner-product neighbour.
    """
    sq = (x.astype(np.float64) ** 2).sum(1)
    index = faiss.IndexFlatIP(x.shape[1] + 1)
    index.add(np.hstack([x, sq[:, None]]).astype(np.float32))
    out = np.empty(len(x), np.float64)
    for s in range(0, len(x), chunk):
        q = np.hstack([-2 * x[s:s + chunk], np.ones((len(x[s:s + chunk]), 1), np.float32)]).astype(np.float32)
        d, _ = index.search(q, 1)
        out[s:s + chunk] = sq[s:s + chunk] + d[:, 0]
    return np.maximum(out, 1e-12)


def _reciprocal(lists: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Entries of lists[rows] that have the row in their own list (k-reciprocal), else -1."""
    forward = lists[rows]
    backward = lists[forward]  # [c, k, k]
    is_recip = (backward == rows[:, None, None]).any(-1)
    return np.where(is_recip, forward, -1)


def _unique_rows(x: np.ndarray) -> np.ndarray:
    """Each row sorted with duplicates (and -1 padding) moved to -1."""
    x = np.sort(x, axis=1)
    dup = np.zeros_like(x, dtype=bool)
    dup[:, 1:] = x[:, 1:] == x[:, :-1]
    return np.where(dup | (x < 0), -1, x)


def k_reciprocal_weights(x: np.ndarray, k1: int = 20, chunk: int = 256, progress: bool = False
                         ) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """(V, neighbour lists [N, k1+1], farthest distance per row) for the stacked query+gallery features.

    Row i of the sparse V [N, N] holds exp(-d(i, j) / max_j d(i, .)) over i's expanded
    k-reciprocal set, normalised to sum to 1 (Zhong et al., Eq. 7 and §3.3)."""
    n = len(x)
    k = min(k1 + 1, n)
    d, lists = search(x, x, k)
    del d
    half = min(int(np.around(k1 / 2.0)) + 1, k)
    lists_half = lists[:, :half]
    recip_half = np.concatenate([_reciprocal(lists_half, np.arange(s, min(s + chunk, n)))
                                 for s in range(0, n, chunk)])
    far = farthest_distances(x)
    xt = torch.from_numpy(x)
    rows_out, cols_out, vals_out = [], [], []
    # rows per step so the gathered [rows, expanded set, D] features stay near 64 MB
    step = max(1, min(chunk, (1 << 24) // (k * (half + 1) * x.shape[1])))
    for s in tqdm(range(0, n, step), desc="k-reciprocal", disable=not progress):
        rows = np.arange(s, min(s + step, n))
        recip = _reciprocal(lists, rows)  # [c, k]
        cand = recip_half[recip.clip(min=0)]  # [c, k, half]: candidates' own reciprocal sets
        cand_valid = (cand >= 0) & (recip >= 0)[..., None]
        inter = ((cand[..., None] == recip[:, None, None, :]) & (cand >= 0)[..., None]).any(-1).sum(-1)
        accept = (inter > 2.0 / 3.0 * (cand >= 0).sum(-1)) & (recip >= 0)
        added = np.where(accept[..., None] & cand_valid, cand, -1).reshape(len(rows), -1)
        expanded = _unique_rows(np.concatenate([recip, added], axis=1))
        ok = expanded >= 0
        xi = xt[rows]
        xj = xt[torch.from_numpy(expanded.clip(min=0))]
        dij = ((xi[:, None, :] - xj) ** 2).sum(-1).numpy().astype(np.float64)
        w = np.where(ok, np.exp(-dij / far[rows, None]), 0.0)
        w /= w.sum(1, keepdims=True)
        r, c = np.nonzero(ok)
        rows_out.append(rows[r])
        cols_out.append(expanded[r, c])
        vals_out.append(w[r, c])
    v = sp.csr_matrix((np.concatenate(vals_out), (np.concatenate(rows_out), np.concatenate(cols_out))),
                      shape=(n, n), dtype=np.float64)
    return v, lists, far


def _min_overlap(vq: sp.csr_matrix, vg_csc: sp.csc_matrix) -> np.ndarray:
    """Dense [c, G] of sum_k min(vq[i, k], vg[j, k]): a sparse join over the shared columns k."""
    coo = vq.tocoo()
    starts = vg_csc.indptr[coo.col]
    counts = vg_csc.indptr[coo.col + 1] - starts
    total = int(counts.sum())
    entry = np.repeat(np.arange(len(coo.data)), counts)
    within = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    pos = np.repeat(starts, counts) + within
    vals = np.minimum(coo.data[entry], vg_csc.data[pos])
    out = sp.coo_matrix((vals, (coo.row[entry], vg_csc.indices[pos])), shape=(vq.shape[0], vg_csc.shape[0]))
    return out.toarray()


def rerank(query: np.ndarray, gallery: np.ndarray, top_k: int | None = None, *, k1: int = 20, k2: int = 6,
           lambda_value: float = 0.3, exclude: np.ndarray | None = None, chunk: int = 256,
           progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """k-reciprocal re-ranked (distances [Q, k], gallery indices [Q, k]); k = top_k or the whole gallery.

    final = (1 - lambda) * Jaccard + lambda * d / max_row(d) with d the squared L2 distance, as in
    Zhong et al.; `exclude` (bool [G]) keeps gallery items out of the returned lists (they still
    take part in the k-reciprocal neighbourhoods, as every gallery image does in the original).
    """
    query, gallery = check_features(query, "query features"), check_features(gallery, "gallery features")
    if query.shape[1] != gallery.shape[1]:
        raise ValueError(f"query features are {query.shape[1]}-d but gallery features are {gallery.shape[1]}-d")
    if k1 < 1 or k2 < 1 or not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"re-ranking needs k1 >= 1, k2 >= 1, 0 <= lambda <= 1; got {k1}, {k2}, {lambda_value}")
    nq, ng = len(query), len(gallery)
    x = np.concatenate([query, gallery])
    v, lists, far = k_reciprocal_weights(x, k1, progress=progress)
    if k2 > 1:  # local query expansion: average V over each item's k2 nearest neighbours
        k2 = min(k2, lists.shape[1])
        n = len(x)
        a = sp.csr_matrix((np.full(n * k2, 1.0 / k2), (np.repeat(np.arange(n), k2), lists[:, :k2].reshape(-1))),
                          shape=(n, n))
        v = (a @ v).tocsr()
    vg = v[nq:].tocsc()
    keep = np.ones(ng, bool) if exclude is None else ~np.asarray(exclude, bool)
    k = int(keep.sum()) if top_k is None else min(top_k, int(keep.sum()))
    gt = torch.from_numpy(gallery)
    dists, idxs = [], []
    for s in tqdm(range(0, nq, chunk), desc="re-rank", disable=not progress):
        e = min(s + chunk, nq)
        overlap = torch.from_numpy(_min_overlap(v[s:e], vg))
        jaccard = 1.0 - overlap / (2.0 - overlap)
        d = pairwise_distances(torch.from_numpy(query[s:e]).double(), gt.double()) / torch.from_numpy(far[s:e, None])
        final = ((1.0 - lambda_value) * jaccard + lambda_value * d).float().numpy()
        final[:, ~keep] = np.inf
        order = np.argsort(final, axis=1, kind="stable")[:, :k]  # ties: lower gallery index first
        dists.append(np.take_along_axis(final, order, 1))
        idxs.append(order)
    return np.concatenate(dists), np.concatenate(idxs)
