"""Stage `densepose`: data/manifest.parquet + crops -> data/iuv.parquet, metrics/densepose.json (SPEC §5).

Run as ``python -m stages.densepose``; reads the ``densepose`` section of params.yaml.
The backend (lite, oracle, detectron2, precomputed) is a parameter, the output the same.
"""

from __future__ import annotations

from reid.data.manifest import read_manifest
from reid.densepose.build import DensePoseConfig, build_estimator, run_densepose
from reid.device import default_device
from reid.io import write_json_atomic
from stages.common import load_config, run

MANIFEST = "data/manifest.parquet"
IUV = "data/iuv.parquet"
METRICS = "metrics/densepose.json"


def main() -> None:
    cfg = load_config(DensePoseConfig, "densepose")
    device = default_device(cfg.device)
    table, root = read_manifest(MANIFEST)
    estimator = build_estimator(cfg, device)
    metrics = run_densepose(estimator, table, root, IUV, batch_size=cfg.batch_size,
                            num_workers=cfg.num_workers, backend=cfg.backend)
    write_json_atomic(METRICS, metrics)
    quality = (f", test part mIoU (24 parts) {metrics['part_miou_fg']:.3f}, UV error {metrics['uv_error']:.4f}"
               if metrics["n_gt_images"] else "")
    print(f"densepose ({cfg.backend}, {device}): person found in {metrics['found_fraction']:.1%} of "
          f"{metrics['n_images']} crops, body pixels {metrics['body_pixel_fraction']:.1%}{quality} -> {IUV}, {METRICS}")


if __name__ == "__main__":
    run(main)
