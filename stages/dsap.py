"""Stage `dsap`: data/iuv.parquet + crops -> data/dsap.parquet, data/dsap_samples.png (SPEC §6).

Run as ``python -m stages.dsap``; reads the ``dsap`` section of params.yaml.
"""

from __future__ import annotations

import numpy as np

from reid.data.manifest import read_manifest
from reid.dsap import DSAPConfig, run_dsap, sample_picture
from reid.io import write_image
from stages.common import load_config, run

MANIFEST = "data/manifest.parquet"
IUV = "data/iuv.parquet"
DSAP = "data/dsap.parquet"
SAMPLES = "data/dsap_samples.png"


def main() -> None:
    cfg = load_config(DSAPConfig, "dsap")
    table, root = read_manifest(MANIFEST)
    stats, samples = run_dsap(IUV, table, root, DSAP, cfg)
    # Always written (a blank picture for an empty dataset) so the stage's outputs are fixed.
    write_image(SAMPLES, sample_picture(samples) if samples else np.full((8, 8, 3), 255, np.uint8))
    print(f"dsap: S={cfg.grid}, collision {cfg.collision}: {stats['n_images']} crops "
          f"({stats['n_not_found']} without a person), mean part coverage {stats['mean_coverage']:.1%} -> {DSAP}")


if __name__ == "__main__":
    run(main)
