"""Stage `prepare`: dataset folder -> the manifest + the rejects list (SPEC §4).

Run as ``python -m stages.prepare --manifest PARQUET --rejects TXT --digest TXT`` (dvc.yaml passes the paths); reads
the ``prepare`` section of params.yaml (``prepare.root``: the dataset folder). The rejects list is always
written (empty when nothing was skipped) so the output set is fixed. The digest file is one sha256 over
the manifest's images: what the stages that read images only through the manifest depend on.
"""

from __future__ import annotations

from reid.data.manifest import (
    PrepareConfig,
    prepare_manifest,
    split_counts,
    write_images_digest,
    write_manifest,
    write_rejects,
)
from stages.common import load_config, run, stage_parser


def main(argv: list[str] | None = None) -> None:
    args = stage_parser(__doc__, manifest="manifest to write", rejects="rejected-images list to write",
                        digest="images digest to write (reid.data.manifest.images_digest)").parse_args(argv)
    cfg = load_config(PrepareConfig, "prepare")
    root = cfg.dataset_root
    table, all_rejects = prepare_manifest(cfg)  # fail mode: one error listing every bad file
    write_manifest(args.manifest, table, dataset=cfg.dataset, root=root)
    write_rejects(args.rejects, all_rejects)
    write_images_digest(args.digest, table, root)
    counts = ", ".join(f"{k} {v}" for k, v in split_counts(table).items())
    print(f"prepare: {cfg.dataset} at {root}: {counts}; {len(all_rejects)} rejected -> {args.manifest}, {args.rejects}")


if __name__ == "__main__":
    run(main)
