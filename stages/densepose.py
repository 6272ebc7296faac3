"""Stage `densepose`: the manifest + crops -> the IUV cache and its metrics (SPEC §5).

Run as ``python -m stages.densepose --manifest PARQUET --lite-model DIR --out PARQUET --metrics JSON``
(dvc.yaml passes the paths); reads the ``densepose`` section of params.yaml. The backend (lite, oracle,
detectron2, precomputed) is a parameter, the output the same; ``--lite-model`` (the train_densepose
network folder) is read by the lite backend alone.
"""

from __future__ import annotations

import sys

from reid.data.manifest import read_manifest
from reid.densepose.build import DensePoseConfig, build_estimator, run_densepose
from reid.densepose.quality import quality_warnings
from reid.device import default_device
from reid.io import write_json_atomic
from stages.common import load_config, run, stage_parser


def main(argv: list[str] | None = None) -> None:
    args = stage_parser(__doc__, manifest="manifest to read", lite_model="lite DensePose network folder to read",
                        out="IUV cache to write", metrics="coverage and quality metrics to write").parse_args(argv)
    cfg = load_config(DensePoseConfig, "densepose")
    device = default_device(cfg.device)
    table, root = read_manifest(args.manifest)
    estimator = build_estimator(cfg, device, lite_model=args.lite_model)
    metrics = run_densepose(estimator, table, root, args.out, batch_size=cfg.batch_size,
                            num_workers=cfg.num_workers, backend=cfg.backend)
    write_json_atomic(args.metrics, metrics)
    quality = (f", test part mIoU (24 parts) {metrics['part_miou_fg']:.3f}, UV error {metrics['uv_error']:.4f}"
               if metrics["n_gt_images"] else "")
    print(f"densepose ({cfg.backend}, {device}): person found in {metrics['found_fraction']:.1%} of "
          f"{metrics['n_images']} crops, body pixels {metrics['body_pixel_fraction']:.1%}{quality} "
          f"-> {args.out}, {args.metrics}")
    for warning in quality_warnings(densepose=metrics):
        print(f"warning: {warning}", file=sys.stderr)


if __name__ == "__main__":
    run(main)
