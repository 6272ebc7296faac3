"""Cross-dataset stage: a feature set trained on the source, embedded and evaluated on the target.

``python -m stages.cross_evaluate <name> --weights DIR --source-manifest PARQUET --manifest PARQUET
--features PARQUET --metrics JSON --cmc TSV --out DIR`` (dvc.yaml passes every path). ``<name>`` is a
trained model or ``pretrained``, ``--weights`` its network folder (as for the features stage);
``--manifest`` is the target's (prepare_target: query + gallery), ``--source-manifest`` the one it was
trained on, read for its dataset name and root alone. Reads params ``features`` (flip, batch size,
device) and ``evaluate`` (the protocol): the same embedding and protocol as on the source, so the two
numbers compare. Only the inference feature is embedded (for dsa and dsa_san the MF-Stream: no DSAP
or texture of the target is needed; their fused / guide diagnostics stay a source-only matter).
Writes ``--features`` (reid.features format), ``--metrics`` (the evaluate stage's JSON, opened by
``source`` and ``target``: {dataset, root} each), ``--cmc`` and ``--out`` (ranked_list.png,
per_query.parquet).
"""

from __future__ import annotations

from reid.engine.inference import FeaturesConfig, embed_feature_set
from reid.evaluation import EvaluateConfig, invalid_query_note, manifest_dataset, run_evaluation
from reid.features import feature_metadata, write_feature_table
from reid.modeling import FEATURE_SETS
from stages.common import PER_QUERY, RANKED_LIST, load_config, read_params, run, stage_parser


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(__doc__, weights="network folder to read (model.pt + model.json)",
                          source_manifest="manifest the network was trained on (read for its labels)",
                          manifest="target manifest to read (query + gallery)",
                          features="feature file to write", metrics="metrics JSON to write",
                          cmc="CMC TSV to write", out=f"folder to write {RANKED_LIST} and {PER_QUERY} in")
    parser.add_argument("name", choices=FEATURE_SETS, help="model name (e.g. baseline, dsa) or 'pretrained'")
    args = parser.parse_args(argv)
    params = read_params()
    features_cfg = load_config(FeaturesConfig, "features", params)
    evaluate_cfg = load_config(EvaluateConfig, "evaluate", params)
    labels = {"source": manifest_dataset(args.source_manifest), "target": manifest_dataset(args.manifest)}
    trained, tables = embed_feature_set(args.name, args.weights, features_cfg, args.manifest)  # no DSAP: f alone
    (table,) = tables.values()
    write_feature_table(args.features, table, feature_metadata(
        model=args.name, network=trained.info.name, weights=trained.weights, flip=features_cfg.flip,
        size=trained.info.input_size))
    result = run_evaluation(evaluate_cfg, args.features, args.manifest, args.metrics, args.cmc,
                            args.out / RANKED_LIST, args.out / PER_QUERY, labels=labels)
    pair = f"{labels['source']['dataset']} -> {labels['target']['dataset']} ({labels['target']['root']})"
    print(f"{args.name} {pair}: " + ", ".join(f"{k}={v}" for k, v in result.summary().items())
          + f" ({result.protocol})")
    if note := invalid_query_note(result):
        print(note)


if __name__ == "__main__":
    run(main)
