"""scripts/tune_validation.py: the held-out identities are training identities, disjoint from the fit set."""

import importlib.util
from pathlib import Path

import numpy as np
import pyarrow as pa

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "tune_validation.py"
spec = importlib.util.spec_from_file_location("tune_validation", SCRIPT)
tune = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tune)


def test_validation_holds_out_the_last_training_pids_and_relabels_the_rest():
    pids = [3, 3, 5, 5, 8, 8, 9, 9, 11, 11]
    table = pa.table({"pid": pids, "camid": [0, 1] * 5, "label": [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]})
    fit, held = tune.split_train_identities(table, val_share=0.4)
    assert set(held["pid"].to_pylist()) == {9, 11}
    assert set(fit["pid"].to_pylist()) == {3, 5, 8} and sorted(set(fit["label"].to_pylist())) == [0, 1, 2]


def test_first_image_of_each_identity_and_camera_is_the_query():
    q = tune.first_per_camera(np.array([1, 1, 1, 2, 2]), np.array([0, 0, 1, 0, 0]))
    assert q.tolist() == [True, False, True, True, False]


def test_random_pick_holds_out_a_seeded_draw_of_training_pids():
    pids = [p for p in range(20) for _ in range(2)]
    table = pa.table({"pid": pids, "camid": [0, 1] * 20, "label": pids})
    fit, held = tune.split_train_identities(table, val_share=0.25, pick="random")
    again, _ = tune.split_train_identities(table, val_share=0.25, pick="random")
    held_pids = set(held["pid"].to_pylist())
    assert len(held_pids) == 5 and held_pids != set(range(15, 20))  # not simply the last ones
    assert held_pids.isdisjoint(fit["pid"].to_pylist()) and fit.equals(again)
    assert sorted(set(fit["label"].to_pylist())) == list(range(15))
