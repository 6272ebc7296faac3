"""k-reciprocal re-ranking speed and peak memory: ours vs a dense reference, on planted features.

    .venv/bin/python bench/bench_rerank.py           # 300 x 1,500, 1,000 x 5,000 and Market-1501 size 3,368 x 15,913
    .venv/bin/python bench/bench_rerank.py --msmt    # MSMT17 size: 11,659 x 82,161 (ours only; must fit in 8 GB)
    .venv/bin/python bench/bench_rerank.py --sizes small mid   # a subset

All sizes are 2,048-d. Every method runs in its own subprocess that loads the same features, so
peak memory is the process's peak RSS (VmHWM) minus its RSS after loading ("peak MB"; "total MB"
is the whole VmHWM). Methods:
  reference  dense re-ranking written here from the paper (Zhong et al., CVPR 2017): the (N, N)
             squared-distance matrix, full argsort, k1-reciprocal sets with the 1/2 expansion rule,
             Gaussian-kernel V as a dense matrix, k2 query expansion, Jaccard distance through an
             inverted index, lambda blend; float32 throughout, as the widely used code
  ours       reid.retrieval.rerank(top_k=100): one FAISS k-NN pass, a BLAS pass over half the pairs,
             sparse V, the final distance by query chunks
Agreement: ours' top-100 lists against the reference's final distances. "same" = share of queries
whose list is identical; "ties" = share whose list is a valid order of the reference's distances up
to TIE_TOL (float32 ties, or near-ties that a float32 GEMM may order either way); "max |d|" = the
largest |ours - reference| final distance along our lists; "k-NN rows that differ" = items whose
neighbour sets differ between our FAISS lists and the reference's argsort, with the largest relative
(float64) gap between the items swapped: float32 near-ties, ordered either way by two float32 GEMMs.
One such flip changes that item's V row and so the lists of every query near it. The targets
apply at 1,000 x 5,000.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZES = {"small": (300, 1500), "mid": (1000, 5000), "market": (3368, 15913), "msmt": (11659, 82161)}
DIM = 2048
TOP = 100  # ranked-list depth compared and scored
TIE_TOL = 1e-5
K1, K2, LAMBDA = 20, 6, 0.3


def make_data(out: Path, n_query: int, n_gallery: int, seed: int = 0, noise: float = 4.2) -> None:
    """Planted features: identities are random unit centres, each image its centre plus isotropic noise
    of norm ~`noise`, L2-normalised; ~4 queries and n_gallery / n_ids gallery images per identity, 6 cameras."""
    rng = np.random.default_rng(seed)
    n_ids = max(1, n_query // 4)
    centres = rng.standard_normal((n_ids, DIM), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    q_pids, g_pids = np.arange(n_query) % n_ids, np.arange(n_gallery) % n_ids

    def features(pids: np.ndarray) -> np.ndarray:
        x = np.empty((len(pids), DIM), np.float32)
        for s in range(0, len(pids), 8192):  # in blocks: no float64 temporaries at MSMT size
            p = pids[s:s + 8192]
            x[s:s + 8192] = centres[p] + rng.standard_normal((len(p), DIM), dtype=np.float32) * (noise / DIM ** 0.5)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x

    np.save(out / "qf.npy", features(q_pids))
    np.save(out / "gf.npy", features(g_pids))
    np.save(out / "q_labels.npy", np.stack([q_pids, rng.integers(0, 6, n_query)]))
    np.save(out / "g_labels.npy", np.stack([g_pids, rng.integers(0, 6, n_gallery)]))


def full_ranking(dist: np.ndarray, head: int) -> np.ndarray:
    """int32 [N, N] argsort of every row; equal float32 distances in the first `head` columns (the
    part re-ranking reads) ordered by index, as ours do (quicksort alone leaves their order open)."""
    n = len(dist)
    rank = np.empty((n, n), np.int32)
    for s in range(0, n, 1024):  # row blocks: no (N, N) int64 temporary
        block = dist[s:s + 1024]
        order = np.argsort(block, axis=1)
        rank[s:s + 1024] = order
        top = order[:, :head]
        d_top = np.take_along_axis(block, top, 1)
        rank[s:s + 1024, :head] = np.take_along_axis(top, np.lexsort((top, d_top), axis=1), 1)
        if head < n:  # a tie across the head's end: the whole row stably
            for r in np.flatnonzero(d_top[:, -1] == np.take_along_axis(block, order[:, head:head + 1], 1)[:, 0]):
                rank[s + r] = np.argsort(block[r], kind="stable")
    return rank


def reciprocal_set(rank: np.ndarray, i: int, k: int) -> np.ndarray:
    """R(i, k): i's k nearest (self included: the first k + 1 of its ranking) that have i among theirs."""
    forward = rank[i, :k + 1]
    return forward[(rank[forward, :k + 1] == i).any(1)]


def reference_rerank(qf: np.ndarray, gf: np.ndarray, k1: int = K1, k2: int = K2, lam: float = LAMBDA
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Dense k-reciprocal re-ranking written from the paper: (final [Q, G] distances, float32;
    the (k1+1)-NN lists [N, k1+1] it used)."""
    x = np.concatenate([qf, gf])
    nq, n = len(qf), len(x)
    # original distance: squared Euclidean over query + gallery, each row scaled by its farthest item
    sq = np.einsum("ij,ij->i", x, x)
    dist = x @ x.T
    dist *= -2.0
    dist += sq[:, None]
    dist += sq[None]
    np.maximum(dist, 0.0, out=dist)
    dist /= dist.max(1, keepdims=True)
    rank = full_ranking(dist, min(max(k1 + 1, k2) + 1, n))

    half = int(np.around(k1 / 2.0))
    r_k1 = [reciprocal_set(rank, i, k1) for i in range(n)]
    r_half = [reciprocal_set(rank, i, half) for i in range(n)]
    v = np.zeros((n, n), np.float32)
    for i in range(n):
        # expansion: add R(c, k1/2) of a member c when more than 2/3 of it lies inside R(i, k1)
        parts = [r_k1[i]] + [r_half[c] for c in r_k1[i] if np.isin(r_half[c], r_k1[i]).sum() > 2.0 / 3.0 * len(r_half[c])]
        members = np.unique(np.concatenate(parts))
        w = np.exp(-dist[i, members])  # Gaussian kernel of the (scaled) distance
        v[i, members] = w / w.sum()
    d_qg = dist[:nq, nq:].copy()
    del dist
    if k2 > 1:  # local query expansion: mean of the k2 nearest items' rows
        v_qe = np.empty_like(v)
        for i in range(n):
            v_qe[i] = v[rank[i, :k2]].mean(0)
        v = v_qe
    lists = rank[:, :k1 + 1].copy()
    del rank
    # Jaccard distance: for each column, the gallery rows where V is non-zero (inverted index)
    g_rows, g_cols = np.nonzero(v[nq:])
    by_col = np.argsort(g_cols, kind="stable")
    g_rows, g_cols = g_rows[by_col], g_cols[by_col]
    col_start = np.searchsorted(g_cols, np.arange(n + 1))
    final = np.empty((nq, n - nq), np.float32)
    for i in range(nq):
        overlap = np.zeros(n - nq, np.float32)
        for c in np.flatnonzero(v[i]):
            rows = g_rows[col_start[c]:col_start[c + 1]]
            overlap[rows] += np.minimum(v[i, c], v[nq + rows, c])
        jaccard = 1.0 - overlap / (2.0 - overlap)
        final[i] = (1.0 - lam) * jaccard + lam * d_qg[i]
    return final, lists


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(method: str, data: Path) -> dict:
    import faiss  # noqa: F401  (imported before the baseline, by both methods)
    import torch  # noqa: F401

    from reid.retrieval import rerank

    qf, gf = np.load(data / "qf.npy"), np.load(data / "gf.npy")
    base = _rss_mb("VmRSS")
    t = time.perf_counter()
    if method == "reference":
        final, lists = reference_rerank(qf, gf)
        seconds = time.perf_counter() - t
        peak = _rss_mb("VmHWM")
        np.save(data / "reference_final.npy", final)
        np.save(data / "reference_lists.npy", lists)
    else:
        dist, idx = rerank(qf, gf, TOP, k1=K1, k2=K2, lambda_value=LAMBDA, progress=len(gf) > 50_000)
        seconds = time.perf_counter() - t
        peak = _rss_mb("VmHWM")
        np.save(data / "ours_dist.npy", dist)
        np.save(data / "ours_idx.npy", idx)
    return {"method": method, "seconds": seconds, "peak_delta_mb": peak - base, "peak_total_mb": peak}


def run(method: str, data: Path) -> dict:
    # stderr passes through: the MSMT-size run shows its progress bars
    out = subprocess.run([sys.executable, __file__, "--worker", method, "--data", str(data)],
                         stdout=subprocess.PIPE, text=True)
    if out.returncode:
        raise RuntimeError(f"{method} worker failed (exit code {out.returncode})")
    return json.loads(out.stdout.strip().splitlines()[-1])


def agreement(data: Path) -> dict:
    """Ours' top lists against the reference's final distances (see the module notes)."""
    from reid.retrieval import top_k_stable

    ref = np.load(data / "reference_final.npy")
    dist, idx = np.load(data / "ours_dist.npy"), np.load(data / "ours_idx.npy")
    ref_d, ref_idx = top_k_stable(ref, idx.shape[1])
    ref_along_ours = np.take_along_axis(ref, idx, 1)
    return {"same": float((idx == ref_idx).all(1).mean()),
            "ties": float((np.abs(ref_along_ours - ref_d) <= TIE_TOL).all(1).mean()),
            "max_abs": float(np.abs(dist - ref_along_ours).max()), "ref_idx": ref_idx, **list_flips(data)}


def list_flips(data: Path) -> dict:
    """Rows whose k-NN sets (the k2, round(k1/2)+1 and k1+1 prefixes re-ranking reads) differ between
    our FAISS lists and the reference's argsort, and the largest relative float64 distance gap among
    the items swapped: ~1e-7 means float32 near-ties, which either order is right for."""
    from reid.retrieval import knn_lists

    x = np.concatenate([np.load(data / "qf.npy"), np.load(data / "gf.npy")])
    ref = np.load(data / "reference_lists.npy")
    ours = knn_lists(x, ref.shape[1])
    flipped, gap = set(), 0.0
    for n in sorted({K2, int(np.around(K1 / 2.0)) + 1, K1 + 1}):
        for i in np.flatnonzero((np.sort(ref[:, :n], 1) != np.sort(ours[:, :n], 1)).any(1)):
            swapped = np.setxor1d(ref[i, :n], ours[i, :n])
            d = ((x[swapped].astype(np.float64) - x[i]) ** 2).sum(1)
            gap = max(gap, float((d.max() - d.min()) / d.min()))
            flipped.add(int(i))
    return {"flips": len(flipped), "flip_gap": gap}


def scores(data: Path, idx: np.ndarray) -> tuple[float, float]:
    """(rank-1, mAP) of top-TOP ranked lists (positives beyond the list count as missed)."""
    from reid.metrics import evaluate_ranked

    (q_pids, q_cams), (g_pids, g_cams) = np.load(data / "q_labels.npy"), np.load(data / "g_labels.npy")
    r = evaluate_ranked(idx, q_pids, g_pids, q_cams, g_cams, max_rank=10)
    return r.rank(1), r.mAP


def plain_lists(data: Path) -> np.ndarray:
    from reid.retrieval import search

    return search(np.load(data / "qf.npy"), np.load(data / "gf.npy"), TOP)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--msmt", action="store_true", help="MSMT17 size, ours only (10-20 minutes on 2 shared cores)")
    parser.add_argument("--sizes", nargs="+", choices=[s for s in SIZES if s != "msmt"],
                        default=["small", "mid", "market"])
    parser.add_argument("--repeats", type=int, default=1, help="runs per method; the fastest is kept")
    parser.add_argument("--worker")
    parser.add_argument("--data", type=Path)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.data)))
        return
    sizes = ["msmt"] if args.msmt else args.sizes
    print(f"k-reciprocal re-ranking (k1={K1}, k2={K2}, lambda={LAMBDA}), {DIM}-d planted features; "
          f"ours returns top-{TOP} lists")
    print(f"{'size':>16} {'method':>9} {'seconds':>8} {'peak MB':>8} {'total MB':>8} {'rank1':>6} {'mAP':>6}  "
          f"(plain search: rank1 / mAP)")
    summary = []
    for name in sizes:
        n_query, n_gallery = SIZES[name]
        label = f"{n_query}x{n_gallery}"
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp)
            make_data(data, n_query, n_gallery)
            plain = scores(data, plain_lists(data))
            methods = ["ours"] if name == "msmt" else ["reference", "ours"]
            results = {m: min((run(m, data) for _ in range(args.repeats)), key=lambda r: r["seconds"])
                       for m in methods}
            results["ours"]["scores"] = scores(data, np.load(data / "ours_idx.npy"))
            if "reference" in results:
                agree = agreement(data)
                results["reference"]["scores"] = scores(data, agree.pop("ref_idx"))
        for r in results.values():
            print(f"{label:>16} {r['method']:>9} {r['seconds']:8.2f} {r['peak_delta_mb']:8.0f} {r['peak_total_mb']:8.0f} "
                  f"{r['scores'][0]:6.3f} {r['scores'][1]:6.3f}  ({plain[0]:.3f} / {plain[1]:.3f})")
        ours = results["ours"]
        if "reference" in results:
            ref = results["reference"]
            summary.append(f"{label}: ours/reference time {ours['seconds'] / ref['seconds']:.3f}, "
                           f"peak memory {ours['peak_delta_mb'] / ref['peak_delta_mb']:.3f}"
                           f"{' (targets <= 0.5, <= 0.5)' if name == 'mid' else ''}; "
                           f"top-{TOP} lists same {agree['same']:.1%}, same up to ties {agree['ties']:.1%}, "
                           f"max |d| {agree['max_abs']:.1e}; k-NN rows that differ {agree['flips']} "
                           f"(max relative gap {agree['flip_gap']:.0e})")
        else:
            summary.append(f"{label}: ours {ours['seconds']:.0f} s, peak RSS {ours['peak_total_mb'] / 1024:.2f} GB "
                           f"(target < 8)")
    print("\n".join(summary))


if __name__ == "__main__":
    main()
