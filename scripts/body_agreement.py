"""Score an IUV estimator against an independent body reference (reid.densepose.agreement).

    python scripts/body_agreement.py --reference /tmp/reference_test.parquet --root <manifest folder> \
        --densepose data/densepose --label lite --out results/cuhk03/body_agreement.json

`--reference` comes from `scripts/mediapipe_reference.py` (mediapipe's own environment); its paths are
relative to `--root`. `--densepose` is a lite network folder (model.pt + model.json), or `oracle` for the
synthetic world's ground-truth IUV (how good the reference itself is, where truth exists). The JSON gets
one entry per `--label`, beside the entries already in the file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tqdm import tqdm

from reid.densepose.agreement import BodyAgreement, read_reference, reference_crop
from reid.densepose.lite import load_lite_estimator
from reid.densepose.oracle import OracleEstimator
from reid.io import write_json_atomic
from reid.parts import decode_iuv

BATCH = 256


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True)
    parser.add_argument("--root", type=Path, required=True, help="folder the reference's paths are relative to")
    parser.add_argument("--densepose", required=True, help="lite network folder, or 'oracle'")
    parser.add_argument("--label", required=True, help="the entry's name in the JSON")
    parser.add_argument("--out", type=Path, default=None, help="JSON to add the entry to")
    args = parser.parse_args()

    references = read_reference(args.reference)
    if args.densepose == "oracle":
        estimator = OracleEstimator()
    else:
        estimator = load_lite_estimator(args.densepose)
        estimator.progress = False  # one bar, over the reference's batches
    agreement = BodyAgreement()
    for start in tqdm(range(0, len(references), BATCH), desc="body agreement", unit="batch"):
        chunk = references[start:start + BATCH]
        images = [reference_crop(ref, args.root) for ref in chunk]
        paths = [args.root / ref.path for ref in chunk]
        for ref, result in zip(chunk, estimator.predict(images, paths), strict=True):
            parts, _, _ = decode_iuv(result.iuv)
            agreement.update(parts, ref.mask, ref.landmarks)
    summary = agreement.summary()
    print(f"{args.label}: " + json.dumps({k: round(v, 4) for k, v in summary.items()}))
    if args.out is not None:
        document = json.loads(args.out.read_text()) if args.out.is_file() else {}
        write_json_atomic(args.out, {**document, args.label: {"reference": args.reference.name,
                                                              "densepose": args.densepose, **summary}})


if __name__ == "__main__":
    main()
