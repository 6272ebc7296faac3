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

from pathlib import Path

import pyarrow as pa

from reid.device import default_device
from reid.engine import distributed
from reid.engine.inference import FeaturesConfig, manifest_dsa_stream_features, manifest_features
from reid.export import INFO_FILE, WEIGHTS_FILE, TrainedModel, load_trained
from reid.features import feature_metadata, write_feature_table
from reid.modeling import MODEL_NAMES
from stages.common import load_config, run, stage_parser

PRETRAINED = "pretrained"  # the pretrain stage's network, without fine-tuning
FEATURE_SETS = (*MODEL_NAMES, PRETRAINED)
STREAM_MODELS = ("dsa", "dsa_san")  # with a DSAG-Stream: also the fused and guide diagnostics
DIAGNOSTICS = ("fused", "guide")  # <out>/<name>_<diagnostic>.parquet


def trained_network(name: str, folder: Path, *, streams: bool = True) -> TrainedModel:
    """Feature set `name`'s network as its `folder`'s model.json describes it: the whole model for dsa's
    streams (unless not `streams`), else the inference network."""
    for file in (WEIGHTS_FILE, INFO_FILE):
        if not (folder / file).is_file():
            stage = "pretrain" if name == PRETRAINED else f"train@{name}"
            raise FileNotFoundError(f"no {folder / file}: run `dvc repro {stage}` first")
    return load_trained(folder, whole=streams and name in STREAM_MODELS, name=None if name == PRETRAINED else name)


def feature_tables(name: str, trained: TrainedModel, cfg: FeaturesConfig, manifest: Path,
                   dsap: Path | None) -> dict[str, pa.Table]:
    """{output file stem: table}: <name>, plus <name>_fused and <name>_guide for the dsa models given their
    whole network and `dsap`; `dsap` None: the inference feature alone (trained_network(streams=False))."""
    device = default_device(cfg.device)
    device = distributed.rank_device(device, distributed.init_distributed(device))
    kwargs = dict(device=device, flip=cfg.flip, batch_size=cfg.batch_size, num_workers=cfg.num_workers, amp=cfg.amp)
    size = trained.info.input_size
    if name in STREAM_MODELS and dsap is not None:
        streams = manifest_dsa_stream_features(trained.network, manifest, dsap, size, **kwargs)
        return {name: streams["mf"], **{f"{name}_{d}": streams[d] for d in DIAGNOSTICS}}
    return {name: manifest_features(trained.network, manifest, size, **kwargs)}


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(__doc__, weights="network folder to read (model.pt + model.json)",
                          manifest="manifest to read", dsap="DSAP cache (read by dsa, dsa_san)",
                          out="feature folder to write <name>[_fused|_guide].parquet in")
    parser.add_argument("name", choices=FEATURE_SETS, help="model name (e.g. baseline, dsa) or 'pretrained'")
    args = parser.parse_args(argv)
    name = args.name
    cfg = load_config(FeaturesConfig, "features")
    trained = trained_network(name, args.weights)
    tables = feature_tables(name, trained, cfg, args.manifest, args.dsap)
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
