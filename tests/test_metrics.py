import numpy as np
import pytest

from reid.metrics import count_closer, count_positives, evaluate, evaluate_ranked

# Gallery of the hand-worked case: index -> (pid, camid)
#   0: (1, 0)  same pid + camera as query 0 -> junk for it
#   1: (2, 1)
#   2: (1, 1)
#   3: (-1, 1) junk for everyone
#   4: (0, 1)  distractor: a plain negative
#   5: (1, 2)
G_PIDS = np.array([1, 2, 1, -1, 0, 1])
G_CAMS = np.array([0, 1, 1, 1, 1, 2])
Q_PIDS = np.array([1, 2, 1, 2])
Q_CAMS = np.array([0, 1, 2, 0])
DIST = np.array([
    [0.1, 0.2, 0.3, 0.05, 0.4, 0.5],  # filtered list: 1(-) 2(+) 4(-) 5(+)
    [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],   # pid 2 only on its own camera -> no valid match
    [0.2, 0.2, 0.2, 0.9, 0.3, 0.2],   # ties: 0(+) 1(-) 2(+) by index, then 4(-); 5 same camera
    [0.5, 0.1, 0.4, 0.0, 0.3, 0.6],   # 1(+) first; 5 valid items
], dtype=np.float32)


def test_hand_computed_case():
    r = evaluate(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=50)
    assert (r.n_query, r.n_query_valid, r.n_gallery) == (4, 3, 6)
    ap = [(1 / 2 + 2 / 4) / 2, (1 + 2 / 3) / 2, 1.0]
    assert r.mAP == pytest.approx(np.mean(ap))
    assert r.mINP == pytest.approx(np.mean([2 / 4, 2 / 3, 1.0]))
    # official trapezoid AP: sum over hits of (old_precision + precision) / 2 / n_pos, over ALL 4 queries
    official = [(0 + 1 / 2) / 4 + (1 / 3 + 2 / 4) / 4, 0.0, (1 + 1) / 4 + (1 / 2 + 2 / 3) / 4, 1.0]
    assert r.mAP_official == pytest.approx(np.mean(official))
    # gallery (6) smaller than max_rank (50): CMC is defined up to 50 and flat after the last item
    assert r.cmc.shape == (50,)
    np.testing.assert_allclose(r.cmc[:3], [2 / 3, 1, 1])
    assert np.all(r.cmc[2:] == 1)
    s = r.summary()
    assert s["rank1_pct"] == pytest.approx(100 * 2 / 3, abs=1e-3) and s["n_query_valid"] == 3


def test_tie_order_is_gallery_index():
    g_pids, g_cams = np.array([5, 7]), np.array([1, 1])
    tie = np.zeros((1, 2), np.float32)
    first_pos = evaluate(tie, [7], g_pids[::-1].copy(), [0], g_cams)  # positive at index 0
    first_neg = evaluate(tie, [7], g_pids, [0], g_cams)  # positive at index 1
    assert first_pos.cmc[0] == 1 and first_pos.mAP == 1
    assert first_neg.cmc[0] == 0 and first_neg.mAP == pytest.approx(0.5)


def _naive(distmat, q_pids, g_pids, q_cams, g_cams, max_rank):
    """torchreid-style loop (stable argsort) plus the Market-1501 official AP loop."""
    cmcs, aps, inps, official = [], [], [], []
    for i in range(len(distmat)):
        order = np.argsort(distmat[i], kind="stable")
        gp, gc = g_pids[order], g_cams[order]
        junk = (gp == -1) | ((gp == q_pids[i]) & (gc == q_cams[i]))
        hits = np.flatnonzero(gp[~junk] == q_pids[i])
        if len(hits) == 0:
            official.append(0.0)
            continue
        cmcs.append(np.arange(max_rank) >= hits[0])
        aps.append(np.mean([(j + 1) / (p + 1) for j, p in enumerate(hits)]))
        inps.append(len(hits) / (hits[-1] + 1))
        official.append(sum(((j / p if p else 1.0) + (j + 1) / (p + 1)) / 2 / len(hits) for j, p in enumerate(hits)))
    return np.mean(cmcs, 0), np.mean(aps), np.mean(inps), np.mean(official), len(aps)


@pytest.mark.parametrize("seed", range(8))
def test_matches_naive_loop_with_ties_junk_and_distractors(seed):
    rng = np.random.default_rng(seed)
    nq, ng = rng.integers(5, 30), rng.integers(3, 90)
    dist = rng.integers(0, 5, (nq, ng)).astype(np.float32)  # many ties
    g_pids, g_cams = rng.integers(-1, 6, ng), rng.integers(0, 3, ng)
    q_pids, q_cams = rng.integers(0, 6, nq), rng.integers(0, 3, nq)
    r = evaluate(dist, q_pids, g_pids, q_cams, g_cams, max_rank=20)
    cmc, m_ap, m_inp, official, n_valid = _naive(dist, q_pids, g_pids, q_cams, g_cams, 20)
    assert r.n_query_valid == n_valid and r.n_query == nq
    np.testing.assert_allclose(r.cmc, cmc)
    assert (r.mAP, r.mINP, r.mAP_official) == pytest.approx((m_ap, m_inp, official))
    # the same metrics from full ranked lists
    ranked = evaluate_ranked(np.argsort(dist, axis=1, kind="stable"), q_pids, g_pids, q_cams, g_cams, max_rank=20)
    np.testing.assert_allclose(ranked.cmc, r.cmc)
    assert (ranked.mAP, ranked.mINP, ranked.mAP_official) == pytest.approx((r.mAP, r.mINP, r.mAP_official))


def test_truncated_ranked_lists():
    order = np.argsort(DIST, axis=1, kind="stable")
    full = evaluate(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=3)
    # depth 2: only the first two VALID items count; query 0 finds 1 of its 2 positives at rank 2
    cut = evaluate_ranked(order, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=3, depth=2)
    np.testing.assert_allclose(cut.cmc[:2], full.cmc[:2])
    assert cut.mAP == pytest.approx(np.mean([(1 / 2) / 2, 1 / 2, 1.0]))
    assert cut.mINP == pytest.approx(np.mean([0, 0, 1.0]))  # hardest positive not retrieved -> INP 0
    assert cut.mAP <= full.mAP


def test_count_positives():
    np.testing.assert_array_equal(count_positives(Q_PIDS, Q_CAMS, G_PIDS, G_CAMS), [2, 0, 2, 1])


def test_single_gallery_shot():
    # one valid image per identity: single-shot CMC equals the ordinary CMC
    dist = np.array([[0.3, 0.1, 0.2], [0.1, 0.3, 0.2]], np.float32)
    args = ([1, 2], np.array([1, 2, 3]), [0, 0], np.array([1, 1, 1]))
    plain = evaluate(dist, *args, max_rank=3)
    sgs = evaluate(dist, *args, max_rank=3, single_gallery_shot=5)
    np.testing.assert_allclose(sgs.cmc, plain.cmc)
    assert sgs.protocol.startswith("cuhk03")
    # identity 2 has one image before and one after the positive: rank-1 in half the draws
    dist = np.array([[0.5, 0.1, 0.9]], np.float32)
    r = evaluate(dist, [1], np.array([1, 2, 2]), [0], np.array([1, 1, 1]), max_rank=2, single_gallery_shot=400)
    assert r.cmc[0] == pytest.approx(0.5, abs=0.08) and r.cmc[1] == 1
    assert r.mAP == pytest.approx(0.5)  # mAP stays the all-gallery one


def test_bad_input():
    with pytest.raises(ValueError, match="g_pids has 5 entries"):
        evaluate(DIST, Q_PIDS, G_PIDS[:5], Q_CAMS, G_CAMS)
    with pytest.raises(ValueError, match="q_camids"):
        evaluate(DIST, Q_PIDS, G_PIDS, Q_CAMS[:2], G_CAMS)
    with pytest.raises(ValueError, match="empty query set"):
        evaluate(np.zeros((0, 6), np.float32), [], G_PIDS, [], G_CAMS)
    bad = DIST.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate(bad, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS)
    with pytest.raises(ValueError, match="max_rank"):
        evaluate(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=0)
    with pytest.raises(ValueError, match="gallery index"):
        evaluate_ranked(np.array([[7]]), [1], G_PIDS, [0], G_CAMS)


def test_negative_distances_rank_like_shifted_ones():
    # e.g. a negated similarity used as the distance: only the order matters
    rng = np.random.default_rng(5)
    sim = rng.normal(size=(9, 40)).astype(np.float32)
    g_pids, g_cams = rng.integers(0, 5, 40), rng.integers(0, 2, 40)
    q_pids, q_cams = rng.integers(0, 5, 9), rng.integers(0, 2, 9)
    a = evaluate(-sim, q_pids, g_pids, q_cams, g_cams, max_rank=10)
    b = evaluate(3 - sim, q_pids, g_pids, q_cams, g_cams, max_rank=10)
    np.testing.assert_allclose(a.cmc, b.cmc)
    assert (a.mAP, a.mINP) == pytest.approx((b.mAP, b.mINP))


@pytest.mark.parametrize("seed", range(4))
def test_count_closer_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    valid_d = rng.integers(-3, 6, (7, 40)).astype(np.float32)  # many ties, negatives, -0.0 vs 0.0
    valid_d[rng.random(valid_d.shape) < 0.1] = np.inf  # removed items
    valid_d[0, :3] = -0.0
    d_pos = rng.integers(-3, 6, (7, 5)).astype(np.float32)
    found = rng.random((7, 5)) < 0.7
    found[6] = False  # a row without positives
    closer, equal = count_closer(valid_d, np.where(found, d_pos, np.inf).astype(np.float32), found)
    want_closer = (valid_d[:, None, :] < d_pos[:, :, None]).sum(2) * found
    want_equal = (valid_d[:, None, :] == d_pos[:, :, None]).sum(2) * found
    np.testing.assert_array_equal(closer, want_closer)
    np.testing.assert_array_equal(equal, want_equal)


def _agrees_with_aggregates(r):
    """Per-query values reproduce the aggregates: mean AP over valid = mAP, share of first_hit 0 = rank-1."""
    pq = r.per_query
    assert len(pq.valid) == r.n_query and int(pq.valid.sum()) == r.n_query_valid
    assert pq.ap.dtype == np.float64 and pq.first_hit.dtype == np.int64 and pq.valid.dtype == bool
    assert np.isnan(pq.ap[~pq.valid]).all() and np.isnan(pq.inp[~pq.valid]).all()
    assert (pq.first_hit[~pq.valid] == -1).all()
    assert pq.ap[pq.valid].mean() == pytest.approx(r.mAP)
    assert pq.inp[pq.valid].mean() == pytest.approx(r.mINP)
    assert (pq.first_hit[pq.valid] == 0).mean() == pytest.approx(r.cmc[0])


def test_per_query_values_of_the_hand_computed_case():
    pq = evaluate(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS).per_query
    np.testing.assert_array_equal(pq.valid, [True, False, True, True])
    np.testing.assert_array_equal(pq.first_hit, [1, -1, 0, 0])
    np.testing.assert_allclose(pq.ap[[0, 2, 3]], [(1 / 2 + 2 / 4) / 2, (1 + 2 / 3) / 2, 1.0])
    np.testing.assert_allclose(pq.inp[[0, 2, 3]], [2 / 4, 2 / 3, 1.0])
    # a truncated list: query 0's first hit is still in the list, its hardest positive is not
    cut = evaluate_ranked(np.argsort(DIST, axis=1, kind="stable"), Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, depth=2).per_query
    np.testing.assert_array_equal(cut.first_hit, [1, -1, 0, 0])
    assert cut.inp[0] == 0 and cut.ap[0] == pytest.approx(1 / 4)
    # depth 1: query 0 has no hit in its list at all -> valid, AP 0, first_hit -1
    top1 = evaluate_ranked(np.argsort(DIST, axis=1, kind="stable"), Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, depth=1)
    assert top1.per_query.valid[0] and top1.per_query.ap[0] == 0 and top1.per_query.first_hit[0] == -1
    _agrees_with_aggregates(top1)


@pytest.mark.parametrize("seed", range(4))
def test_per_query_values_agree_with_aggregates_on_every_path(seed):
    rng = np.random.default_rng(seed)
    nq, ng = rng.integers(5, 30), rng.integers(3, 90)
    dist = rng.integers(0, 5, (nq, ng)).astype(np.float32)
    g_pids, g_cams = rng.integers(-1, 6, ng), rng.integers(0, 3, ng)
    q_pids, q_cams = rng.integers(0, 6, nq), rng.integers(0, 3, nq)
    exact = evaluate(dist, q_pids, g_pids, q_cams, g_cams, max_rank=20)
    _agrees_with_aggregates(exact)
    order = np.argsort(dist, axis=1, kind="stable")
    full = evaluate_ranked(order, q_pids, g_pids, q_cams, g_cams, max_rank=20)
    for name in ("valid", "ap", "first_hit", "inp"):
        np.testing.assert_allclose(getattr(full.per_query, name), getattr(exact.per_query, name))
    _agrees_with_aggregates(evaluate_ranked(order, q_pids, g_pids, q_cams, g_cams, max_rank=20, depth=3))
    # single-gallery-shot: the per-query values stay the all-gallery ones
    sgs = evaluate(dist, q_pids, g_pids, q_cams, g_cams, max_rank=20, single_gallery_shot=3)
    np.testing.assert_array_equal(sgs.per_query.first_hit, exact.per_query.first_hit)
