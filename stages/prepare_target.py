"""Stage `prepare_target`: the cross-dataset target's query + gallery -> the target manifest + its rejects list.

Run as ``python -m stages.prepare_target --manifest PARQUET --rejects TXT --digest TXT`` (dvc.yaml passes the paths);
reads params ``target``, which takes the keys of ``prepare`` (dataset, root, on_bad_image, ...) and goes
through the same loaders and checks (reid.data.manifest.prepare_manifest). Only the query and gallery
rows are written: a target is evaluated on, never trained on, so a custom target needs no train rows
(any it has are dropped unread; a named dataset's loader still checks its whole folder). Its default is the synthetic target world (synthesize_target).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from reid.data.manifest import (
    EVAL_SPLITS,
    PrepareConfig,
    prepare_manifest,
    split_counts,
    write_images_digest,
    write_manifest,
    write_rejects,
)
from stages.common import load_config, run, stage_parser


def evaluation_rows(table: pa.Table) -> pa.Table:
    """The query and gallery rows of a manifest table (schema metadata kept)."""
    return table.filter(pc.is_in(table.column("split"), pa.array(EVAL_SPLITS)))


def main(argv: list[str] | None = None) -> None:
    args = stage_parser(__doc__, manifest="target manifest to write",
                        rejects="rejected-images list to write",
                        digest="images digest to write (reid.data.manifest.images_digest)").parse_args(argv)
    cfg = load_config(PrepareConfig, "target")
    table, rejects = prepare_manifest(cfg, evaluation_only=True)
    table = evaluation_rows(table)
    write_manifest(args.manifest, table, dataset=cfg.dataset, root=cfg.dataset_root)
    write_rejects(args.rejects, rejects)
    write_images_digest(args.digest, table, cfg.dataset_root)
    counts = ", ".join(f"{k} {v}" for k, v in split_counts(table).items() if not k.startswith("train"))
    print(f"prepare_target: {cfg.dataset} at {cfg.root}: {counts}; {len(rejects)} rejected -> {args.manifest}")


if __name__ == "__main__":
    run(main)
