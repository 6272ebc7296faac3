"""Stage train_densepose: train the lite DensePose network on synthetic renders of training identities.

``python -m stages.train_densepose --world DIR --out DIR --curves DIR --metrics JSON`` (dvc.yaml passes
the paths): the synthetic world ``--world`` (bounding_box_train and densepose_train, pid > 0) -> the
network folder ``--out`` (model.pt, model.json, checkpoint/ — a killed run resumes from its last epoch —,
timing.json: training and evaluation seconds, kept out of the metrics), the curves ``--curves`` and the
training record ``<curves>.json``, and ``--metrics`` (held-out part mIoU and UV error on test identities).
"""

from __future__ import annotations

import time

from reid.densepose.agreement import read_reference
from reid.densepose.lite import LiteEstimator, save_lite_model
from reid.densepose.lite_train import (
    EXTRA_TRAIN_SPLITS,
    HELD_OUT_SPLITS,
    TRAIN_SPLITS,
    TrainDensePoseConfig,
    evaluate_lite,
    labelled_crops,
    load_pairs,
    train_lite,
    training_arrays,
    weak_arrays,
)
from reid.device import default_device
from reid.engine.artifacts import NetworkFolder, timing_record, train_record, write_records
from reid.io import write_json_atomic
from stages.common import load_config, run, stage_parser


def main(argv: list[str] | None = None) -> None:
    args = stage_parser(__doc__, world="synthetic world folder to read", out="network folder to write",
                        curves="DVCLive folder to write (the record: <curves>.json)",
                        metrics="held-out quality metrics to write").parse_args(argv)
    network = NetworkFolder.at(args.out, args.curves)
    config = load_config(TrainDensePoseConfig, "train_densepose")
    train_crops = labelled_crops(args.world, TRAIN_SPLITS, config.max_train_images, EXTRA_TRAIN_SPLITS)
    train_images, train_iuvs = load_pairs(train_crops, "read train")
    data = training_arrays(train_images, train_iuvs, config.arch())
    del train_images, train_iuvs
    weak = None
    if config.weak_reference is not None:
        weak = weak_arrays(read_reference(config.weak_reference), config.weak_root, config.arch())

    model, result = train_lite(config, data, network, weak)
    save_lite_model(model, config.arch(), network.root)

    test_crops = labelled_crops(args.world, HELD_OUT_SPLITS, config.max_eval_images)
    test_images, test_iuvs = load_pairs(test_crops, "read held-out")
    estimator = LiteEstimator(model, config.arch(), default_device(config.device), config.eval_batch_size)
    t0 = time.perf_counter()
    metrics = evaluate_lite(estimator, test_images, test_iuvs)
    eval_seconds = time.perf_counter() - t0
    metrics.update(n_train_images=len(data["image"]), epochs=config.epochs)
    if weak is not None:
        metrics.update(n_weak_images=len(weak["image"]))
    write_json_atomic(args.metrics, metrics)
    write_records(network, train_record(result, images=len(data["image"])),
                  timing_record(result, eval_time_s=round(eval_seconds, 2)))
    print(f"lite densepose: part mIoU {metrics['part_miou']:.3f}, UV error {metrics['uv_error']:.4f} "
          f"on {metrics['n_images']} held-out crops; {result.steps} steps, {result.train_time_s:.0f} s")


if __name__ == "__main__":
    run(main)
