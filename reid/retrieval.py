"""Gallery search: FAISS exact k-NN (GPU when present) and k-reciprocal re-ranking (SPEC §10).

Distances: ``metric="l2"`` gives squared Euclidean distances (FAISS ``IndexFlatL2``);
``metric="cosine"`` expects L2-normalised features and gives ``1 - cosine`` (``IndexFlatIP``).
Ranked lists are sorted by (distance, gallery index): ties go to the earlier gallery item.

Re-ranking (Zhong et al., CVPR 2017; k1=20, k2=6, lambda=0.3) works on squared Euclidean
distances d of the (possibly normalised) features, so its results equal Zhong's ``re_ranking``
fed plain Euclidean distances (it squares its input). torchreid's engine feeds it *squared*
distances (its "euclidean" metric), i.e. re-ranks d**2: same k-NN lists, other Gaussian weights
and lambda blend. fast-reid's evaluator uses a different Jaccard variant. Each row of d is scaled
by its farthest item, over query + gallery, as in the original.

It never builds an all-pairs matrix and reads all (query + gallery) pairs 1.5 times: one FAISS
k-NN pass gives the (k1+1)-NN lists (GPU FAISS when present), from which the expanded k-reciprocal
sets follow; one BLAS pass over the upper triangle of the symmetric distance matrix, a
[chunk, N] block at a time (host BLAS on CPU, torch on CUDA), gives every row's farthest distance
(row and column maxima) and the distances to its set members, read from the blocks as scalars.
V is a sparse [N, N] matrix stored in float32 (as in torchreid's copy of the original code; its
float16 query expansion is not copied), its Gaussian weights normalised in float64; local query
expansion is a sparse product and the Jaccard term a sparse join over V's columns, accumulated in
float64. The final distance comes one query chunk at a time (``rerank_distances``, float32 [c, G])
plus one Q x G BLAS pass, so memory is O(N x D + nnz(V) + chunk x N), never O(N^2) or O(Q x G)
unless the caller keeps all of it (``rerank`` with ``top_k=None`` returns every query's whole
ranked gallery: at MSMT17 size that alone is 3.8 GB of float32 + 7.7 GB of int64; stream with
``rerank_distances`` into reid.metrics.ChunkScorer instead, or ask for a top_k).

Junk: gallery items in ``exclude`` (e.g. pid -1) are dropped before re-ranking, as the usual
dataset loaders (torchreid, fast-reid) drop junk images before evaluating: they take no part in
the k-reciprocal neighbourhoods nor in the farthest-distance scaling, and never appear in the
ranked lists (they are excluded from scoring anyway).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

import faiss
import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from reid.device import blas_device, is_tensor, on_device, to_numpy

if TYPE_CHECKING:
    import torch

Metric = Literal["l2", "cosine"]
GPU_MAX_K = 2048  # FAISS GPU brute-force k limit
BLOCK_PAIRS = 1 << 24  # entries per k-reciprocal distance block (64 MB float32): big enough for efficient BLAS
FINAL_PAIRS = 1 << 22  # (query, gallery) pairs per final-distance chunk: a few float32 [c, G] arrays of 16 MB
JOIN_ENTRIES = 1 << 18  # joined entries per Jaccard step (~40 B each: ~10 MB of temporaries)
JOIN_PAIRS = 1 << 21  # output cells per Jaccard step (its float64 bincount)


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
    index = build_index(gallery if exclude is None else gallery[ids], metric, gpu=_use_gpu(k))  # no copy
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
    """max_j ||x_i - x_j||^2 for every row, by one exact FAISS inner-product search (re-ranking gets
    these from its BLAS pass instead: `farthest_and_pair_distances`).

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
    """Each row's distinct non-negative entries, ascending, right-aligned behind -1 padding,
    trimmed to the widest row."""
    x = np.sort(x, axis=1)
    dup = np.zeros_like(x, dtype=bool)
    dup[:, 1:] = x[:, 1:] == x[:, :-1]
    x = np.sort(np.where(dup | (x < 0), -1, x), axis=1)  # -1 first, members ascending after it
    width = max(int((x >= 0).sum(1).max(initial=0)), 1)
    return x[:, x.shape[1] - width:]


def expanded_sets(lists: np.ndarray, recip_half: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """[c, m] expanded k-reciprocal sets of `rows` (ascending, -1 padding; Zhong et al. §3.3).

    `lists` are the (k1+1)-NN lists, `recip_half` every item's k-reciprocal set at round(k1/2)
    (-1 padded). A member c of R(i, k1) adds R(c, k1/2) when more than 2/3 of it lies in R(i, k1).
    """
    recip = _reciprocal(lists, rows)  # [c, k]
    cand = recip_half[recip.clip(min=0)]  # [c, k, half]: the members' own half-size sets
    cand_ok = cand >= 0
    inside = ((cand[..., None] == recip[:, None, None, :]) & cand_ok[..., None]).any(-1).sum(-1)
    accept = (inside > 2.0 / 3.0 * cand_ok.sum(-1)) & (recip >= 0)
    added = np.where(accept[..., None] & cand_ok, cand, -1).reshape(len(rows), -1)
    return _unique_rows(np.concatenate([recip, added], axis=1))


def knn_lists(x: np.ndarray, k: int, chunk: int = 4096, progress: bool = False) -> np.ndarray:
    """[N, k] indices of every row's k nearest rows of `x` itself (self first, unless it has an exact
    duplicate of lower index), by (distance, index).

    FAISS brute force straight on `x` (no index copy of the features) on the host; the sharded
    GPU index of `search` when FAISS has GPUs."""
    if _use_gpu(k):
        return search(x, x, k, progress=progress)[1]
    out = np.empty((len(x), k), np.int64)
    for s in tqdm(range(0, len(x), chunk), desc="k-NN", disable=not progress):
        d, i = faiss.knn(x[s:s + chunk], x, k)
        out[s:s + chunk] = _stable_order(d, i)[1]
    return out


def sq_norms(a: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Squared row norms (einsum: no [N, D] temporary), numpy or torch alike."""
    if is_tensor(a):
        import torch  # a tensor exists, so torch is loaded: this import is a lookup

        return torch.einsum("ij,ij->i", a, a)
    return np.einsum("ij,ij->i", a, a)


def _distance_block(rows, x, rows_sq, x_sq):
    """Squared L2 distances [c, M] of `rows` to `x`: one BLAS call, updated in place (float32).
    Not clipped at 0: callers clip what they keep."""
    out = rows @ x.T
    out *= -2.0
    out += rows_sq[:, None]
    out += x_sq[None]
    return out


def _block_max(block, axis: int) -> np.ndarray:
    return to_numpy(block.amax(axis) if is_tensor(block) else block.max(axis))


def _take_pairs(block, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    """block[r[p], c[p]] as numpy: only these scalars leave the device."""
    if is_tensor(block):
        return to_numpy(block[on_device(r, block.device), on_device(c, block.device)])
    return block[r, c]


def block_rows(n_cols: int, budget: int = BLOCK_PAIRS, cap: int = 1024) -> int:
    """Rows per block so that a [rows, n_cols] block holds about `budget` entries."""
    return int(min(cap, max(1, budget // max(n_cols, 1))))


def farthest_and_pair_distances(x: np.ndarray, rows: np.ndarray, cols: np.ndarray, step: int,
                                device: str = "auto", progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(max_j ||x_i - x_j||^2 for every row [N], ||x_rows[p] - x_cols[p]||^2 for every pair [P]), float32.

    One pass over the upper triangle of the symmetric [N, N] squared-distance matrix, a BLAS block
    [step, N - s] at a time: a block gives its rows' maxima over columns >= s and, by symmetry, its
    columns' maxima over its rows; each wanted pair is read from the block holding its smaller index.
    """
    n = len(x)
    lo, hi = np.minimum(rows, cols), np.maximum(rows, cols)
    order = np.argsort(lo, kind="stable")
    lo_sorted = lo[order]
    xd = on_device(x, blas_device(device))
    sq = sq_norms(xd)
    far = np.zeros(n, np.float32)
    pair_d = np.empty(len(rows), np.float32)
    for s in tqdm(range(0, n, step), desc="k-reciprocal", disable=not progress):
        e = min(s + step, n)
        block = _distance_block(xd[s:e], xd[s:], sq[s:e], sq[s:])
        far[s:e] = np.maximum(far[s:e], _block_max(block, 1))
        far[s:] = np.maximum(far[s:], _block_max(block, 0))
        a, b = np.searchsorted(lo_sorted, [s, e])
        sel = order[a:b]
        pair_d[sel] = _take_pairs(block, lo[sel] - s, hi[sel] - s)
    return np.maximum(far, 1e-12), np.maximum(pair_d, 0.0)


def k_reciprocal_weights(x: np.ndarray, k1: int = 20, chunk: int | None = None, progress: bool = False, *,
                         n_lists: int = 0, device: str = "auto") -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """(V, neighbour lists [N, max(k1+1, n_lists)], farthest squared distance per row) of the stacked
    query+gallery features `x`.

    Row i of the sparse float32 V [N, N] holds exp(-d(i, j) / max_j d(i, .)) over i's expanded
    k-reciprocal set, normalised (in float64) to sum to 1 (Zhong et al., Eq. 7 and §3.3). The lists
    come from one FAISS k-NN pass; the sets from the lists alone; the farthest distances and d(i, j)
    from one BLAS pass over half the pairs, `chunk` rows per block.
    """
    n = len(x)
    k = min(k1 + 1, n)
    lists = knn_lists(x, min(max(k, n_lists), n), progress=progress)
    lists_k = lists[:, :k]
    half = min(int(np.around(k1 / 2.0)) + 1, k)
    step = chunk or block_rows(n)
    recip_half = np.concatenate([_reciprocal(lists_k[:, :half], np.arange(s, min(s + step, n)))
                                 for s in range(0, n, step)])
    counts, indices = [], []  # V's sparsity pattern, as CSR (each row's members ascending)
    for s in range(0, n, step):
        members = expanded_sets(lists_k, recip_half, np.arange(s, min(s + step, n)))
        ok = members >= 0
        counts.append(ok.sum(1))
        indices.append(members[ok])
    counts, indices = np.concatenate(counts), np.concatenate(indices)
    rows = np.repeat(np.arange(n), counts)
    far, d = farthest_and_pair_distances(x, rows, indices, step, device, progress)
    w = np.exp(-d.astype(np.float64) / far[rows])
    w /= np.maximum(np.bincount(rows, weights=w, minlength=n), 1e-300)[rows]  # (> k1 duplicates of i: empty row)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    v = sp.csr_matrix((w.astype(np.float32), indices, indptr), shape=(n, n))
    return v, lists, far


def query_expansion(v: sp.csr_matrix, lists: np.ndarray, k2: int) -> sp.csr_matrix:
    """Local query expansion: each row of V replaced by the mean of its k2 nearest items' rows (self included)."""
    k2 = min(k2, lists.shape[1])
    if k2 <= 1:
        return v
    n = v.shape[0]
    a = sp.csr_matrix((np.full(n * k2, 1.0 / k2, np.float32), lists[:, :k2].reshape(-1), np.arange(0, n * k2 + 1, k2)),
                      shape=(n, n))
    return (a @ v).tocsr()


def min_overlap(vq: sp.csr_matrix, vg_csc: sp.csc_matrix) -> np.ndarray:
    """float32 [c, G] of sum_k min(vq[i, k], vg[j, k]): a sparse join over the shared columns k.

    Done in row groups of at most JOIN_ENTRIES joined entries and JOIN_PAIRS output cells, so its
    temporaries (~40 B per joined entry) stay bounded; accumulated in float64."""
    c, g = vq.shape[0], vg_csc.shape[0]
    out = np.empty((c, g), np.float32)
    col_counts = np.diff(vg_csc.indptr)
    joined = np.concatenate([[0], np.cumsum(col_counts[vq.indices])])
    per_row = joined[vq.indptr[1:]] - joined[vq.indptr[:-1]]
    max_rows = max(1, JOIN_PAIRS // g)
    start = 0
    while start < c:
        fit = int(np.searchsorted(np.cumsum(per_row[start:start + max_rows]), JOIN_ENTRIES, "right"))
        stop = start + max(1, fit)
        part = vq[start:stop]
        counts = col_counts[part.indices]
        q_rows = np.repeat(np.repeat(np.arange(stop - start), np.diff(part.indptr)), counts)
        q_vals = np.repeat(part.data, counts)
        pos = np.arange(len(q_vals)) + np.repeat(vg_csc.indptr[part.indices] - (np.cumsum(counts) - counts), counts)
        flat = q_rows * g + vg_csc.indices[pos]
        out[start:stop] = np.bincount(flat, weights=np.minimum(q_vals, vg_csc.data[pos]),
                                      minlength=(stop - start) * g).reshape(-1, g)
        start = stop
    return out


def _check_rerank_args(query, gallery, k1: int, k2: int, lambda_value: float, exclude
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query, gallery, indices of the gallery items kept) after the input checks."""
    query, gallery = check_features(query, "query features"), check_features(gallery, "gallery features")
    if query.shape[1] != gallery.shape[1]:
        raise ValueError(f"query features are {query.shape[1]}-d but gallery features are {gallery.shape[1]}-d")
    if k1 < 1 or k2 < 1 or not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"re-ranking needs k1 >= 1, k2 >= 1, 0 <= lambda <= 1; got {k1}, {k2}, {lambda_value}")
    if exclude is None:
        return query, gallery, np.arange(len(gallery))
    exclude = np.asarray(exclude, bool).reshape(-1)
    if len(exclude) != len(gallery):
        raise ValueError(f"exclude has {len(exclude)} entries for {len(gallery)} gallery items")
    keep = np.flatnonzero(~exclude)
    if len(keep) == 0:
        raise ValueError("every gallery item is excluded: nothing to re-rank")
    return query, gallery, keep


def _reranked_chunks(query: np.ndarray, gallery: np.ndarray, k1: int, k2: int, lambda_value: float,
                     chunk: int | None, device: str, progress: bool) -> Iterator[tuple[int, np.ndarray]]:
    """(first query row, float32 [c, G] final distances) per query chunk, for the given gallery."""
    nq, ng = len(query), len(gallery)
    x = np.concatenate([query, gallery])
    v, lists, far = k_reciprocal_weights(x, k1, chunk, progress, n_lists=k2, device=device)
    v = query_expansion(v, lists, k2)
    del lists
    vg = v[nq:].tocsc()  # gallery rows, by column: the join's inverted index
    dev = blas_device(device)
    qd, gd = on_device(x[:nq], dev), on_device(x[nq:], dev)
    q_sq, g_sq = sq_norms(qd), sq_norms(gd)
    step = chunk or block_rows(ng, FINAL_PAIRS)
    for s in tqdm(range(0, nq, step), desc="re-rank", disable=not progress):
        e = min(s + step, nq)
        final = min_overlap(v[s:e], vg)
        np.divide(final, 2.0 - final, out=final)  # overlap / union; Jaccard distance = 1 - that
        final *= -(1.0 - lambda_value)
        final += 1.0 - lambda_value
        d = to_numpy(_distance_block(qd[s:e], gd, q_sq[s:e], g_sq))
        np.maximum(d, 0.0, out=d)
        d *= lambda_value / far[s:e, None]
        final += d
        yield s, final


def rerank_distances(query: np.ndarray, gallery: np.ndarray, *, k1: int = 20, k2: int = 6,
                     lambda_value: float = 0.3, exclude: np.ndarray | None = None, chunk: int | None = None,
                     device: str = "auto", progress: bool = False) -> Iterator[tuple[int, np.ndarray]]:
    """k-reciprocal re-ranked distances streamed by query chunk: yields (first query index, float32 [c, G]).

    final = (1 - lambda) * Jaccard + lambda * d / max_row(d), d the squared L2 distance (Zhong et al.).
    Excluded gallery items (bool [G]) are dropped before re-ranking (see the module notes) and
    read +inf. `chunk` = rows per block (None: about BLOCK_PAIRS / FINAL_PAIRS entries per block);
    `device` = where the BLAS passes run (auto: CUDA when present). Feed the chunks to
    reid.metrics.ChunkScorer for exact metrics without a [Q, G] matrix. Inputs are checked at once.
    """
    query, gallery, keep = _check_rerank_args(query, gallery, k1, k2, lambda_value, exclude)
    kept = gallery if len(keep) == len(gallery) else gallery[keep]
    chunks = _reranked_chunks(query, kept, k1, k2, lambda_value, chunk, device, progress)
    return chunks if len(keep) == len(gallery) else _full_width(chunks, keep, len(gallery))


def _full_width(chunks: Iterator[tuple[int, np.ndarray]], keep: np.ndarray, n_gallery: int
                ) -> Iterator[tuple[int, np.ndarray]]:
    """The chunks over the kept gallery columns, widened to the full gallery with +inf elsewhere."""
    for s, final in chunks:
        full = np.full((len(final), n_gallery), np.inf, np.float32)
        full[:, keep] = final
        yield s, full


def top_k_stable(dist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(distances, column indices) [c, k] of each row's k smallest, sorted by (distance, index).

    A partition picks k candidates; rows whose k-th distance is shared beyond the list are fixed so
    that the lowest indices among the tied items make it in (rare for real features)."""
    dist = np.asarray(dist, np.float32)
    if k >= dist.shape[1]:
        idx = np.argsort(dist, axis=1, kind="stable")
    else:
        idx = np.argpartition(dist, k - 1, axis=1)[:, :k]
        kth = np.take_along_axis(dist, idx, 1).max(1)
        for r in np.flatnonzero((dist <= kth[:, None]).sum(1) > k):
            le = np.flatnonzero(dist[r] <= kth[r])  # ascending index
            below = dist[r, le] < kth[r]
            idx[r] = le[below | (np.cumsum(~below) <= k - below.sum())]
        idx = np.take_along_axis(idx, np.lexsort((idx, np.take_along_axis(dist, idx, 1)), axis=1), 1)
    return np.take_along_axis(dist, idx, 1), idx


def rerank(query: np.ndarray, gallery: np.ndarray, top_k: int | None = None, *, k1: int = 20, k2: int = 6,
           lambda_value: float = 0.3, exclude: np.ndarray | None = None, chunk: int | None = None,
           device: str = "auto", progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """k-reciprocal re-ranked (distances [Q, k], gallery indices [Q, k]); k = top_k or every kept gallery item.

    final = (1 - lambda) * Jaccard + lambda * d / max_row(d) with d the squared L2 distance, as in
    Zhong et al.; `exclude` (bool [G]) drops gallery items before re-ranking (junk: see the module
    notes), indices refer to the full gallery. Memory O(Q x k) for the output plus one chunk: with
    top_k=None that output is the whole [Q, G] ranking; use `rerank_distances` to stream instead.
    `chunk` and `device` as in `rerank_distances`.
    """
    query, gallery, keep = _check_rerank_args(query, gallery, k1, k2, lambda_value, exclude)
    kept = gallery if len(keep) == len(gallery) else gallery[keep]
    k = len(keep) if top_k is None else min(top_k, len(keep))
    if k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    dists, idxs = [], []
    for _, final in _reranked_chunks(query, kept, k1, k2, lambda_value, chunk, device, progress):
        d, i = top_k_stable(final, k)
        dists.append(d)
        idxs.append(keep[i])
    return np.concatenate(dists), np.concatenate(idxs)
