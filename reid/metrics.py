"""Re-identification metrics: CMC, mAP, mINP and the official Market-1501 AP (SPEC §10).

Protocol (Market-1501 / torchreid / fast-reid): for each query, gallery items with the same
pid AND the same camera are removed, gallery pid -1 is junk (ignored), pid 0 stays as a
negative. A query left with no true match is skipped (not in CMC/mAP/mINP) and counted
(``n_query - n_query_valid``). Ties in distance are broken by gallery index: the item that
comes first in the gallery ranks first (a stable sort).

* ``mAP``: mean over valid queries of the non-interpolated AP (mean of the precision at each hit).
* ``mINP``: mean over valid queries of n_pos / (rank of the hardest positive) (Ye et al. 2021).
* ``mAP_official``: the Market-1501 evaluation code's AP, a trapezoid over the precision/recall
  steps (``ap += d_recall * (old_precision + precision) / 2``), averaged over ALL queries
  (a query without a true match scores 0). It reads a little lower than ``mAP``.

Distances are scored query chunk by query chunk (memory O(chunk x gallery)), with no
[query, gallery] masks: each query's same-pid gallery items come from a pid lookup, junk gets
distance +inf, and the filtered rank of each positive is a binary search among the items no
farther than the query's hardest positive, the only ones that can precede a positive (plus an
exact tie count by gallery index, only where a positive's distance is shared). The scoring runs
on the host; distances may come from any device.

Distances are compared in float32: float64 input is cast. The tie rule's sort keys pack the
float32 order bits and the gallery index into one int64 (``sort_keys``), every distance made in
this package (FAISS, the BLAS passes, re-ranking) is float32 already, and a float32 chunk is half
the memory. So distances that differ only beyond float32 precision tie, and the earlier gallery
item ranks first.

Ranked lists truncated at ``top_k`` (``evaluate_ranked``): positives beyond the list count as
not retrieved: they add nothing to AP (whose denominator stays the true positive count), a
query whose hardest positive is not in the list has INP 0, and CMC is exact for every rank the
list covers.

Per-query values (``EvalResult.per_query``, for paired tests between models) are kept for
every query, valid or not, in query order: ``valid``, ``ap`` (the non-interpolated AP; NaN for
an invalid query, so that it cannot be averaged in by mistake), ``first_hit`` (0-based filtered
rank of the first true match; -1 for an invalid query or when no true match is in a truncated
list) and ``inp`` (NaN when invalid). They are O(queries) and always the all-gallery ones: with
``single_gallery_shot`` only the aggregate CMC switches protocol, ``first_hit`` does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reid.device import to_numpy

INT64_MAX = np.iinfo(np.int64).max
DEFAULT_RANKS = (1, 5, 10, 20)


@dataclass
class PerQuery:
    """One value per query, in query order (see the module notes for the invalid-query values)."""

    valid: np.ndarray  # bool: has a true match in the gallery
    ap: np.ndarray  # float64 non-interpolated AP in [0, 1]; NaN when not valid
    first_hit: np.ndarray  # int64 0-based filtered rank of the first true match; -1 when none
    inp: np.ndarray  # float64 INP in [0, 1]; NaN when not valid

    def columns(self) -> dict[str, np.ndarray]:
        return {"valid": self.valid, "ap": self.ap, "first_hit": self.first_hit, "inp": self.inp}


@dataclass
class EvalResult:
    """Metrics as fractions in [0, 1]; ``cmc[r]`` = share of valid queries matched within the top r + 1."""

    cmc: np.ndarray
    mAP: float
    mINP: float
    mAP_official: float
    n_query_valid: int
    n_query: int
    n_gallery: int = 0
    protocol: str = "market1501"
    per_query: PerQuery | None = None

    def rank(self, r: int) -> float:
        """CMC at 1-based rank r (1 <= r <= max_rank)."""
        if not 1 <= r <= len(self.cmc):
            raise ValueError(f"rank must be in 1..{len(self.cmc)} (max_rank), got {r}")
        return float(self.cmc[r - 1])

    def summary(self, ranks: tuple[int, ...] = DEFAULT_RANKS) -> dict[str, float | int]:
        """Flat dict in percent (keys end in ``_pct``) plus the counts: what metrics/<name>.json holds.
        Ranks beyond max_rank are left out rather than guessed."""
        out: dict[str, float | int] = {f"rank{r}_pct": round(100 * self.rank(r), 4) for r in ranks
                                       if r <= len(self.cmc)}
        out.update(mAP_pct=round(100 * self.mAP, 4), mINP_pct=round(100 * self.mINP, 4),
                   mAP_official_pct=round(100 * self.mAP_official, 4),
                   n_query=self.n_query, n_query_valid=self.n_query_valid, n_gallery=self.n_gallery)
        return out


class Accumulator:
    """Sums per-query statistics over query chunks and keeps the per-query values (O(queries))."""

    def __init__(self, max_rank: int):
        self.max_rank = max_rank
        self.cmc = np.zeros(max_rank, dtype=np.float64)
        self.ap = self.inp = self.ap_official = 0.0
        self.n_valid = self.n_query = 0
        self.chunks: list[PerQuery] = []

    def add(self, positions: np.ndarray, found: np.ndarray, n_pos: np.ndarray) -> None:
        """positions [c, P]: 0-based filtered ranks of each query's hits, ascending, left-aligned
        (``found`` marks real ones); n_pos [c]: true positives per query in the full gallery."""
        c, p = positions.shape
        self.n_query += c
        valid = n_pos > 0
        self.n_valid += int(valid.sum())
        # a valid query without any hit in its (truncated) list scores AP 0, INP 0 and no first hit
        chunk = PerQuery(valid=valid.copy(), ap=np.where(valid, 0.0, np.nan), first_hit=np.full(c, -1, np.int64),
                         inp=np.where(valid, 0.0, np.nan))
        self.chunks.append(chunk)
        if p == 0 or not valid.any():
            return
        positions, found, n_pos = positions[valid], found[valid], n_pos[valid]
        pos = positions.astype(np.float64)
        hit_no = np.arange(p, dtype=np.float64)
        precision = (hit_no + 1) / (pos + 1)
        ap = (precision * found).sum(1) / n_pos
        self.ap += float(ap.sum())
        # Official Market-1501 code: precision just before this hit (1 at the top of the list).
        old_precision = np.where(pos > 0, hit_no / np.maximum(pos, 1), 1.0)
        self.ap_official += float((((old_precision + precision) / 2 * found).sum(1) / n_pos).sum())
        first = np.where(found[:, 0], positions[:, 0], INT64_MAX)
        self.cmc += (first[:, None] <= np.arange(self.max_rank)[None]).sum(0)
        last = np.take_along_axis(positions, (np.minimum(n_pos, p) - 1)[:, None], 1)[:, 0]
        all_found = found.sum(1) == n_pos
        inp = np.where(all_found, n_pos / (last + 1.0), 0.0)
        self.inp += float(inp.sum())
        chunk.ap[valid], chunk.inp[valid] = ap, inp
        chunk.first_hit[valid] = np.where(found[:, 0], positions[:, 0], -1)

    def per_query(self) -> PerQuery:
        """The per-query values of every chunk added so far, in query order."""
        return PerQuery(*(np.concatenate([getattr(ch, name) for ch in self.chunks]) if self.chunks
                          else np.zeros(0, dtype) for name, dtype in
                          (("valid", bool), ("ap", np.float64), ("first_hit", np.int64), ("inp", np.float64))))

    def result(self, n_gallery: int, protocol: str = "market1501") -> EvalResult:
        nv = max(self.n_valid, 1)
        return EvalResult(cmc=self.cmc / nv, mAP=self.ap / nv, mINP=self.inp / nv,
                          mAP_official=self.ap_official / max(self.n_query, 1),
                          n_query_valid=self.n_valid, n_query=self.n_query, n_gallery=n_gallery, protocol=protocol,
                          per_query=self.per_query())


def check_labels(n_query: int, n_gallery: int, q_pids, g_pids, q_camids, g_camids) -> tuple[np.ndarray, ...]:
    """The four label arrays as int64 numpy arrays, with a clear error on any length mismatch."""
    out = []
    for name, arr, n in (("q_pids", q_pids, n_query), ("g_pids", g_pids, n_gallery),
                         ("q_camids", q_camids, n_query), ("g_camids", g_camids, n_gallery)):
        a = to_numpy(arr).astype(np.int64).reshape(-1)
        if a.size != n:
            raise ValueError(f"{name} has {a.size} entries, expected {n}")
        out.append(a)
    if n_query == 0:
        raise ValueError("empty query set: nothing to evaluate")
    if n_gallery == 0:
        raise ValueError("empty gallery: nothing to evaluate")
    return tuple(out)


def ordered_bits(dist: np.ndarray) -> np.ndarray:
    """int64 values in [0, 2**32) whose order is the float32 order of `dist` (-0.0 == +0.0)."""
    bits = (np.asarray(dist, dtype=np.float32) + np.float32(0.0)).view(np.int32)  # + 0.0 turns -0.0 into +0.0
    bits ^= (bits >> 31) & 0x7FFFFFFF  # negative floats: reverse their order
    return (bits ^ np.int32(-(1 << 31))).view(np.uint32).astype(np.int64)  # unsigned, order-preserving


def sort_keys(dist: np.ndarray) -> np.ndarray:
    """int64 keys [c, G] whose order within a row is (distance, gallery index): the stable tie order."""
    dist = np.asarray(dist, dtype=np.float32)
    if np.isnan(dist).any():
        raise ValueError("distances contain NaN")
    keys = ordered_bits(dist)
    keys <<= 31
    keys += np.arange(dist.shape[1], dtype=np.int64)[None]
    return keys


def masks(q_pids: np.ndarray, q_camids: np.ndarray, g_pids: np.ndarray, g_camids: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray]:
    """(positive, negative) masks [c, G]: junk (pid -1, same pid + same camera) is neither."""
    match = g_pids[None] == q_pids[:, None]
    junk = (g_pids == -1)[None] | (match & (g_camids[None] == q_camids[:, None]))
    return match & ~junk, ~(match | junk)


def _left_align(rows: np.ndarray, values: np.ndarray, n_rows: int, fill: int) -> tuple[np.ndarray, np.ndarray]:
    """Scatter (row, value) pairs, grouped by row, into a left-aligned [n_rows, max count] array."""
    counts = np.bincount(rows, minlength=n_rows)
    out = np.full((n_rows, int(counts.max()) if len(rows) else 0), fill, dtype=np.int64)
    slot = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    out[rows, slot] = values
    return out, counts


def count_closer(valid_d: np.ndarray, d_pos: np.ndarray, found: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(closer, equal) [c, P]: per row, the items of valid_d [c, G] strictly closer than / as close as
    each d_pos [c, P] (only where ``found``).

    Only items no farther than the row's hardest positive can count, so only those are sorted:
    one 1-D sort of (row, distance) keys. For trained features they are a small share of the
    gallery; in the worst case (the hardest positive last) it is one full sort.
    """
    c = len(valid_d)
    hardest = np.where(found, d_pos, -np.inf).max(1, initial=-np.inf)
    candidate = valid_d <= hardest[:, None].astype(np.float32)
    row_of = np.repeat(np.arange(c, dtype=np.int64), candidate.sum(1))
    keys = (row_of << 32) | ordered_bits(valid_d[candidate])
    keys.sort()
    pos_keys = (np.arange(c, dtype=np.int64)[:, None] << 32) | ordered_bits(d_pos)
    row_start = np.searchsorted(keys, np.arange(c, dtype=np.int64) << 32)[:, None]
    below = np.searchsorted(keys, pos_keys.ravel()).reshape(d_pos.shape)
    upto = np.searchsorted(keys, pos_keys.ravel(), "right").reshape(d_pos.shape)
    return np.where(found, below - row_start, 0), np.where(found, upto - below, 0)


class PidLookup:
    """Gallery indices grouped by pid (junk pid -1 left out), to list each query's same-pid items
    without building a [queries, gallery] mask."""

    def __init__(self, g_pids: np.ndarray, g_camids: np.ndarray):
        self.g_pids, self.g_camids = g_pids, g_camids
        keep = np.flatnonzero(g_pids != -1)
        self.by_pid = keep[np.argsort(g_pids[keep], kind="stable")]  # ascending index within a pid
        self.pids, self.starts, self.counts = np.unique(g_pids[self.by_pid], return_index=True, return_counts=True)
        self.junk_penalty = np.where(g_pids == -1, np.inf, 0.0).astype(np.float32)

    def same_pid(self, q_pids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, gallery index) of every gallery item sharing the query's pid, grouped by row, index ascending."""
        if len(self.pids) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        at = np.searchsorted(self.pids, q_pids).clip(max=len(self.pids) - 1)
        counts = np.where(self.pids[at] == q_pids, self.counts[at], 0)
        rows = np.repeat(np.arange(len(q_pids)), counts)
        within = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
        return rows, self.by_pid[np.repeat(self.starts[at], counts) + within]


def hit_positions_dense(dist: np.ndarray, q_pids: np.ndarray, q_camids: np.ndarray, lookup: PidLookup
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(positions [c, P], found [c, P], n_pos [c]) from a distance chunk [c, G].

    Junk gets distance +inf (behind every valid item); a positive's filtered rank is the number
    of valid items strictly closer (``count_closer``: a sort of only the items up to the row's
    hardest positive) plus, only where its distance is shared, the tied valid items of lower
    gallery index (the documented stable order).
    """
    c, g = dist.shape
    dist = np.asarray(dist, dtype=np.float32)
    if np.isnan(dist).any():
        raise ValueError("distances contain NaN")
    rows, cols = lookup.same_pid(q_pids)
    own_cam = lookup.g_camids[cols] == q_camids[rows]
    valid_d = dist + lookup.junk_penalty[None]  # a broadcast add: much faster than np.where on [c, G]
    valid_d[rows[own_cam], cols[own_cam]] = np.inf
    rows, cols = rows[~own_cam], cols[~own_cam]
    if len(rows) == 0:
        return np.zeros((c, 0), np.int64), np.zeros((c, 0), bool), np.zeros(c, np.int64)
    cols_al, n_pos = _left_align(rows, cols, c, g)  # positives' gallery indices, padded with g
    found = cols_al < g
    d_pos = np.where(found, np.take_along_axis(valid_d, np.minimum(cols_al, g - 1), 1), np.float32(np.inf))
    closer, equal = count_closer(valid_d, d_pos, found)
    tied = (equal > 1) & found
    if tied.any():  # rare for real features: count equal-distance valid items of lower gallery index
        tr, tc = np.nonzero(tied)
        for s in range(0, len(tr), 256):
            r, j = tr[s:s + 256], tc[s:s + 256]
            valid = np.logical_or(*masks(q_pids[r], q_camids[r], lookup.g_pids, lookup.g_camids))
            same = (dist[r] == d_pos[r, j][:, None]) & valid & (np.arange(g)[None] < cols_al[r, j][:, None])
            closer[r, j] += same.sum(1)
    # positives in filtered-rank order (left-aligned: found ones first)
    positions = np.sort(np.where(found, closer, INT64_MAX), axis=1)
    return np.where(found, positions, 0), found, n_pos


def hit_positions_ranked(indices: np.ndarray, q_pids: np.ndarray, q_camids: np.ndarray,
                         g_pids: np.ndarray, g_camids: np.ndarray, depth: int | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
    """(positions, found) of the hits in ranked gallery lists [c, K] (-1 = no item), junk filtered out;
    only the first `depth` valid items of each list count when `depth` is set."""
    present = indices >= 0
    safe = np.maximum(indices, 0)
    gp, gc = g_pids[safe], g_camids[safe]
    match = gp == q_pids[:, None]
    keep = present & (gp != -1) & ~(match & (gc == q_camids[:, None]))
    fpos = keep.cumsum(1) - 1
    if depth is not None:
        keep &= fpos < depth
    rows, cols = np.nonzero(keep & match)  # row-major: each row's hits in rank order
    positions, counts = _left_align(rows, fpos[rows, cols], len(indices), 0)
    found = np.arange(positions.shape[1])[None] < counts[:, None]
    return positions, found


def _occurrences(g_keys: np.ndarray, q_keys: np.ndarray) -> np.ndarray:
    """How often each query key occurs among the gallery keys."""
    uniq, cnt = np.unique(g_keys, return_counts=True)
    if len(uniq) == 0:
        return np.zeros(len(q_keys), np.int64)
    at = np.searchsorted(uniq, q_keys).clip(max=len(uniq) - 1)
    return np.where(uniq[at] == q_keys, cnt[at], 0)


def _pid_cam_key(pids: np.ndarray, camids: np.ndarray) -> np.ndarray:
    return np.asarray(pids, np.int64) * (1 << 32) + np.asarray(camids, np.int64)


def count_positives(q_pids, q_camids, g_pids, g_camids) -> np.ndarray:
    """True matches per query in the whole gallery (same pid, other camera, pid != -1), without a Q x G matrix."""
    q_pids, g_pids = np.asarray(q_pids, np.int64), np.asarray(g_pids, np.int64)
    keep = g_pids != -1
    same_pid = _occurrences(g_pids[keep], q_pids)
    return np.where(q_pids == -1, 0, same_pid - count_same_camera(q_pids, q_camids, g_pids, g_camids))


def count_same_camera(q_pids, q_camids, g_pids, g_camids) -> np.ndarray:
    """Gallery items per query with the same pid and camera (removed by the protocol)."""
    g_pids, g_camids = np.asarray(g_pids, np.int64), np.asarray(g_camids, np.int64)
    keep = g_pids != -1
    return _occurrences(_pid_cam_key(g_pids[keep], g_camids[keep]), _pid_cam_key(q_pids, q_camids))


def chunk_rows(n_gallery: int, budget: int = 1 << 20) -> int:
    """Queries per chunk so a chunk holds about `budget` (query, gallery) pairs."""
    return max(1, budget // max(n_gallery, 1))


def evaluate(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50, *,
             single_gallery_shot: int = 0, seed: int = 0) -> EvalResult:
    """Metrics from a [Q, G] distance matrix (numpy or torch, any device; smaller = closer; compared
    in float32, see the module notes).

    ``single_gallery_shot=N > 0`` switches CMC to the CUHK03 single-gallery-shot protocol
    (N seeded repeats, each sampling one valid gallery image per identity); mAP/mINP stay
    the all-gallery ones, as in torchreid's ``eval_cuhk03``.
    """
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    if distmat.ndim != 2:
        raise ValueError(f"distmat must be 2-D [queries, gallery], got shape {tuple(distmat.shape)}")
    qp, gp, qc, gc = check_labels(distmat.shape[0], distmat.shape[1], q_pids, g_pids, q_camids, g_camids)
    scorer = ChunkScorer(gp, gc, max_rank, single_gallery_shot, seed)
    step = chunk_rows(distmat.shape[1])
    for s in range(0, distmat.shape[0], step):
        scorer.add(to_numpy(distmat[s:s + step]), qp[s:s + step], qc[s:s + step])
    return scorer.result()


class ChunkScorer:
    """Scores distance chunks [c, G] against a fixed gallery; CUHK03 single-shot CMC when repeats > 0."""

    def __init__(self, g_pids: np.ndarray, g_camids: np.ndarray, max_rank: int = 50,
                 single_gallery_shot: int = 0, seed: int = 0):
        if single_gallery_shot < 0:
            raise ValueError(f"single_gallery_shot repeats must be >= 0, got {single_gallery_shot}")
        self.g_pids, self.g_camids = g_pids, g_camids
        self.lookup = PidLookup(g_pids, g_camids)
        self.acc = Accumulator(max_rank)
        self.repeats = single_gallery_shot
        if self.repeats:
            self.sgs_cmc = np.zeros(max_rank)
            self.rng = np.random.default_rng(seed)
            # gallery grouped by identity, for one random pick per identity
            self.by_id = np.argsort(g_pids, kind="stable")
            _, starts, sizes = np.unique(g_pids[self.by_id], return_index=True, return_counts=True)
            self.starts, self.sizes = starts, sizes

    def add(self, dist: np.ndarray, q_pids: np.ndarray, q_camids: np.ndarray) -> None:
        """Score the queries of one distance block [c, G] (split further to bound memory)."""
        step = chunk_rows(dist.shape[1])
        for s in range(0, len(dist), step):
            d, qp, qc = dist[s:s + step], q_pids[s:s + step], q_camids[s:s + step]
            self.acc.add(*hit_positions_dense(d, qp, qc, self.lookup))
            if self.repeats:
                self._add_single_shot(d, *masks(qp, qc, self.g_pids, self.g_camids))

    def _add_single_shot(self, dist: np.ndarray, pos_mask: np.ndarray, neg_mask: np.ndarray) -> None:
        keys = sort_keys(dist)[:, self.by_id]
        pos, neg = pos_mask[:, self.by_id], neg_mask[:, self.by_id]
        usable, valid_q = pos | neg, pos.any(1)
        for _ in range(self.repeats):
            r = np.where(usable, self.rng.random(keys.shape), -1.0)
            best = np.repeat(np.maximum.reduceat(r, self.starts, axis=1), self.sizes, axis=1)
            chosen = usable & (r == best)
            pos_key = np.where(chosen & pos, keys, INT64_MAX).min(1)
            rank = (chosen & neg & (keys < pos_key[:, None])).sum(1)
            self.sgs_cmc += ((rank[:, None] <= np.arange(len(self.sgs_cmc))[None]) & valid_q[:, None]).sum(0)

    def result(self) -> EvalResult:
        result = self.acc.result(len(self.g_pids))
        if self.repeats:
            result.cmc = self.sgs_cmc / (self.repeats * max(result.n_query_valid, 1))
            result.protocol = f"cuhk03_single_gallery_shot_x{self.repeats}"
        return result


def evaluate_ranked(indices, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50, *,
                    depth: int | None = None) -> EvalResult:
    """Metrics from ranked gallery lists [Q, K] (gallery indices, best first, -1 = empty slot).

    Junk is filtered out of each list first; `depth` then keeps only the first `depth` valid
    items. Positives beyond the list count as not retrieved (see the module notes); the true
    positive counts come from the labels, not from the lists.
    """
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    idx = to_numpy(indices).astype(np.int64)
    if idx.ndim != 2:
        raise ValueError(f"indices must be 2-D [queries, k], got shape {tuple(idx.shape)}")
    n_gallery = len(g_pids)
    qp, gp, qc, gc = check_labels(idx.shape[0], n_gallery, q_pids, g_pids, q_camids, g_camids)
    if idx.size and int(idx.max()) >= n_gallery:
        raise ValueError(f"ranked lists refer to gallery index {int(idx.max())} >= gallery size {n_gallery}")
    n_pos = count_positives(qp, qc, gp, gc)
    acc = Accumulator(max_rank)
    step = max(1, (1 << 22) // max(idx.shape[1], 1))
    for s in range(0, idx.shape[0], step):
        positions, found = hit_positions_ranked(idx[s:s + step], qp[s:s + step], qc[s:s + step], gp, gc, depth)
        acc.add(positions, found, n_pos[s:s + step])
    return acc.result(n_gallery)
