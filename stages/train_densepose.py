"""Stage train_densepose: train the lite DensePose network on synthetic renders of training identities.

data/synth/market (bounding_box_train and densepose_train, pid > 0) -> data/densepose_lite.pt (+ .json architecture),
metrics/densepose_lite.json (held-out part mIoU and UV error on test identities) and
data/densepose_lite_timing.json (training and evaluation seconds, kept out of the metrics: they differ
on every run). Per-epoch metrics go to data/dvclive/train_densepose; a killed run resumes from
data/train_densepose/checkpoint.pt.
"""

from __future__ import annotations

import time
from pathlib import Path

from dvclive import Live

from reid.densepose.lite import LiteEstimator, save_lite_model
from reid.densepose.lite_train import (
    EXTRA_TRAIN_SPLITS,
    HELD_OUT_SPLITS,
    TRAIN_SPLITS,
    TrainDensePoseConfig,
    evaluate_lite,
    labelled_crops,
    load_pairs,
    resumable_epoch,
    train_lite,
    training_arrays,
)
from reid.device import default_device
from reid.io import drop_live_steps_from, write_json_atomic
from stages.common import load_config, run

WORLD = Path("data/synth/market")
MODEL = Path("data/densepose_lite.pt")
CHECKPOINT = Path("data/train_densepose/checkpoint.pt")
LIVE_DIR = Path("data/dvclive/train_densepose")
METRICS = Path("metrics/densepose_lite.json")
TIMING = Path("data/densepose_lite_timing.json")


def main() -> None:
    config = load_config(TrainDensePoseConfig, "train_densepose")
    train_images, train_iuvs = load_pairs(labelled_crops(WORLD, TRAIN_SPLITS, config.max_train_images, EXTRA_TRAIN_SPLITS), "read train")
    data = training_arrays(train_images, train_iuvs, config.arch())
    del train_images, train_iuvs

    start_epoch = resumable_epoch(CHECKPOINT, config, data)
    if start_epoch > 0:  # the curves keep the epochs the checkpoint holds; later rows (a kill before it) go
        drop_live_steps_from(LIVE_DIR, start_epoch)
    with Live(str(LIVE_DIR), dvcyaml=False, resume=start_epoch > 0, save_dvc_exp=False) as live:
        def log_epoch(epoch: int, metrics: dict[str, float]) -> None:
            live.step = epoch
            for name, value in metrics.items():
                live.log_metric(name, value)
            live.next_step()

        model, train_seconds = train_lite(config, data, CHECKPOINT, on_epoch=log_epoch)
    save_lite_model(model, config.arch(), MODEL)

    test_images, test_iuvs = load_pairs(labelled_crops(WORLD, HELD_OUT_SPLITS, config.max_eval_images), "read held-out")
    estimator = LiteEstimator(model, config.arch(), default_device(config.device), config.eval_batch_size)
    t0 = time.perf_counter()
    metrics = evaluate_lite(estimator, test_images, test_iuvs)
    eval_seconds = time.perf_counter() - t0
    metrics.update(n_train_images=len(data["image"]), epochs=config.epochs)
    write_json_atomic(METRICS, metrics)
    write_json_atomic(TIMING, {"train_time_s": round(train_seconds, 1), "eval_time_s": round(eval_seconds, 1)})
    print(f"lite densepose: part mIoU {metrics['part_miou']:.3f}, UV error {metrics['uv_error']:.4f} "
          f"on {metrics['n_images']} held-out crops; trained {train_seconds:.0f} s")


if __name__ == "__main__":
    run(main)
