"""Stage `prepare`: dataset folder -> the manifest + the rejects list (SPEC §4).

Run as ``python -m stages.prepare --manifest PARQUET --rejects TXT`` (dvc.yaml passes the paths); reads
the ``prepare`` section of params.yaml (``prepare.root``: the dataset folder). The rejects list is always
written (empty when nothing was skipped) so the output set is fixed.
"""

from __future__ import annotations

from reid.data.manifest import PrepareConfig, prepare_manifest, split_counts, write_manifest, write_rejects
from stages.common import load_config, run, stage_parser


def main(argv: list[str] | None = None) -> None:
    args = stage_parser(__doc__, manifest="manifest to write", rejects="rejected-images list to write").parse_args(argv)
    cfg = load_config(PrepareConfig, "prepare")
    root = cfg.dataset_root
    table, all_rejects = prepare_manifest(cfg)  # fail mode: one error listing every bad file
    write_manifest(args.manifest, table, dataset=cfg.dataset, root=root)
    write_rejects(args.rejects, all_rejects)
    counts = ", ".join(f"{k} {v}" for k, v in split_counts(table).items())
    print(f"prepare: {cfg.dataset} at {root}: {counts}; {len(all_rejects)} rejected -> {args.manifest}, {args.rejects}")


if __name__ == "__main__":
    run(main)
