"""Stage `dsap`: the IUV cache + crops -> the DSAP cache and its sample picture (SPEC §6).

Run as ``python -m stages.dsap --manifest PARQUET --iuv PARQUET --out PARQUET --samples PNG --metrics JSON``
(dvc.yaml passes the paths); reads the ``dsap`` section of params.yaml. The metrics (parts reached per crop,
cell coverage) come with a warning when they fall below reid.densepose.quality's floors.
"""

from __future__ import annotations

import sys

import numpy as np

from reid.data.manifest import read_manifest
from reid.densepose.quality import quality_warnings
from reid.dsap import DSAPConfig, run_dsap, sample_picture
from reid.io import write_image, write_json_atomic
from stages.common import load_config, run, stage_parser


def main(argv: list[str] | None = None) -> None:
    args = stage_parser(__doc__, manifest="manifest to read", iuv="IUV cache to read", out="DSAP cache to write",
                        samples="sample picture to write", metrics="coverage metrics to write").parse_args(argv)
    cfg = load_config(DSAPConfig, "dsap")
    table, root = read_manifest(args.manifest)
    stats, samples = run_dsap(args.iuv, table, root, args.out, cfg)
    # Always written (a blank picture for an empty dataset) so the stage's outputs are fixed.
    write_image(args.samples, sample_picture(samples) if samples else np.full((8, 8, 3), 255, np.uint8))
    write_json_atomic(args.metrics, stats)
    print(f"dsap: S={cfg.grid}, collision {cfg.collision}: {stats['n_images']} crops "
          f"({stats['n_not_found']} without a person), {stats['mean_parts_seen']:.1f} of 24 parts per crop, "
          f"mean part coverage {stats['mean_coverage']:.1%} -> {args.out}, {args.metrics}")
    for warning in quality_warnings(dsap=stats):
        print(f"warning: {warning}", file=sys.stderr)


if __name__ == "__main__":
    run(main)
