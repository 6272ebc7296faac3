"""Features stage: ``python -m stages.features <name> --weights DIR ...`` (or under ``torchrun``, sharded over ranks).

``<name>`` is a trained model or ``pretrained`` (the pretrain stage's network); ``--weights`` is its
network folder (dvc.yaml passes every path). Reads params ``features`` (flip averaging, batch size,
device) and the folder's model.pt + model.json, the network's one description (reid.export.load_trained;
never the models' params). Keeps only the inference network (for dsa: the MF-Stream; the DSAG-Stream is
dropped) and embeds the query and gallery rows of ``--manifest`` -> ``<out>/<name>.parquet``
(format: reid.features).

dsa and dsa_san also write two diagnostics from the whole model and the DSAP cache ``--dsap``, in the
same pass and format: ``<out>/<name>_fused.parquet`` ([z_G, z_L] = f + d) and
``<out>/<name>_guide.parquet`` ([d_G, d_L], the DSAG-Stream alone). Flip averaging mirrors only
the crop, never its DSAP.
"""

from __future__ import annotations

from reid.engine import distributed
from reid.engine.inference import FeaturesConfig, embed_feature_set
from reid.features import feature_metadata, write_feature_table
from reid.modeling import FEATURE_SETS
from stages.common import load_config, run, stage_parser


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(__doc__, weights="network folder to read (model.pt + model.json)",
                          manifest="manifest to read", dsap="DSAP cache (read by dsa, dsa_san)",
                          out="feature folder to write <name>[_fused|_guide].parquet in")
    parser.add_argument("name", choices=FEATURE_SETS, help="model name (e.g. baseline, dsa) or 'pretrained'")
    args = parser.parse_args(argv)
    name = args.name
    cfg = load_config(FeaturesConfig, "features")
    trained, tables = embed_feature_set(name, args.weights, cfg, args.manifest, args.dsap)
    if distributed.current().is_main:
        # The weights' path and sha256 let `reid search` refuse a query model other than this one.
        meta = feature_metadata(model=name, network=trained.info.name, weights=trained.weights, flip=cfg.flip,
                                size=trained.info.input_size)
        for stem, table in tables.items():
            out = args.out / f"{stem}.parquet"
            write_feature_table(out, table, meta)
            dim = table.schema.field("feature").type.list_size
            print(f"features {stem}: {table.num_rows} query+gallery images, dim {dim} -> {out}")
    distributed.cleanup()


if __name__ == "__main__":
    run(main)
