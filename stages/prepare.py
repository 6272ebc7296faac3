"""Stage `prepare`: dataset folder -> data/manifest.parquet + data/rejects.txt (SPEC §4).

Run as ``python -m stages.prepare``; reads the ``prepare`` section of params.yaml.
rejects.txt is always written (empty when nothing was skipped) so the output set is fixed.
"""

from __future__ import annotations

from reid.data.manifest import PrepareConfig, prepare_manifest, split_counts, write_manifest, write_rejects
from stages.common import load_config, run

MANIFEST = "data/manifest.parquet"
REJECTS = "data/rejects.txt"


def main() -> None:
    cfg = load_config(PrepareConfig, "prepare")
    root = cfg.dataset_root
    table, all_rejects = prepare_manifest(cfg)  # fail mode: one error listing every bad file
    write_manifest(MANIFEST, table, dataset=cfg.dataset, root=root)
    write_rejects(REJECTS, all_rejects)
    counts = ", ".join(f"{k} {v}" for k, v in split_counts(table).items())
    print(f"prepare: {cfg.dataset} at {root}: {counts}; {len(all_rejects)} rejected -> {MANIFEST}, {REJECTS}")


if __name__ == "__main__":
    run(main)
