"""How much identity the regulators' inputs carry on a pipeline run's test split (reid.consistency).

    python scripts/consistency.py --run DIR --label cuhk03 --out results/cuhk03/consistency.json \
        [--sheet /tmp/cuhk03_sheet.png]

`--run` is a repository copy after `dvc repro dsap texture` (data/manifest.parquet, iuv, dsap and texture
caches). The JSON gets one entry per `--label` (a second run's label is added beside the first), each
{"crop" | "dsap" | "texture": {rank1_pct, mAP_pct, n_query_valid}} plus the run's DSAP coverage and
DensePose metrics. The contact sheet shows real crops: look at it, never commit it (it is made of them).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from reid.consistency import contact_sheet, regulator_consistency
from reid.io import write_image, write_json_atomic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="repository copy the pipeline ran in")
    parser.add_argument("--label", required=True, help="the run's name in the JSON (e.g. cuhk03, synthetic)")
    parser.add_argument("--out", type=Path, required=True, help="JSON to write (entries of other labels are kept)")
    parser.add_argument("--sheet", type=Path, default=None, help="contact sheet PNG to write")
    args = parser.parse_args()
    data = args.run / "data"
    scores = regulator_consistency(data / "manifest.parquet", dsap=data / "dsap.parquet",
                                   texture=data / "texture.parquet")
    densepose = json.loads((args.run / "metrics" / "densepose.json").read_text())
    entry = {**scores, "densepose": {k: densepose[k] for k in ("found_fraction", "body_pixel_fraction",
                                                                "part_miou_fg") if k in densepose}}
    document = json.loads(args.out.read_text()) if args.out.is_file() else {}
    write_json_atomic(args.out, {**document, args.label: entry})
    print(f"{args.label}: " + ", ".join(f"{k} {v['rank1_pct']:.1f} / {v['mAP_pct']:.1f}" for k, v in scores.items())
          + f" (Rank-1 / mAP %) -> {args.out}")
    if args.sheet is not None:
        write_image(args.sheet, contact_sheet(data / "manifest.parquet", data / "iuv.parquet", data / "dsap.parquet",
                                              data / "texture.parquet"))


if __name__ == "__main__":
    main()
