"""Evaluate stage: ``python -m stages.evaluate <name> --features DIR --manifest ... --out DIR``.

dvc.yaml passes the paths. Reads params section ``evaluate``, ``<features>/<name>.parquet`` and the
manifest; writes ``--metrics`` (JSON), ``--cmc`` (TSV) and the folder ``--out`` with ranked_list.png and
per_query.parquet (one row per query, for the report's paired bootstrap).

``<name>`` is any feature set: a trained model, or ``pretrained`` (the pretrained trunk without
fine-tuning). When ``<features>/<name>_fused.parquet`` / ``<name>_guide.parquet`` exist (dsa and
dsa_san: the fused z = f + d and the DSAG-Stream guide d alone) they are evaluated with the same
config into the JSON's ``diagnostics``, beside ``mf`` (the main inference feature).
"""

from __future__ import annotations

from pathlib import Path

from reid.evaluation import EvaluateConfig, invalid_query_note, run_evaluation
from stages.common import PER_QUERY, RANKED_LIST, load_config, run, stage_parser

DIAGNOSTIC_SUFFIXES = ("fused", "guide")  # <features>/<name>_<suffix>.parquet, evaluated when present


def diagnostic_feature_files(name: str, features_dir: Path) -> dict[str, Path]:
    """The extra feature sets of model `name` that exist, by diagnostic name."""
    files = {suffix: features_dir / f"{name}_{suffix}.parquet" for suffix in DIAGNOSTIC_SUFFIXES}
    return {suffix: path for suffix, path in files.items() if path.is_file()}


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(__doc__, features="feature folder to read <name>[_fused|_guide].parquet from",
                          manifest="manifest to read", metrics="metrics JSON to write", cmc="CMC TSV to write",
                          out=f"folder to write {RANKED_LIST} and {PER_QUERY} in")
    parser.add_argument("name", help="model / feature set name, e.g. baseline or pretrained")
    args = parser.parse_args(argv)
    cfg = load_config(EvaluateConfig, "evaluate")
    result = run_evaluation(cfg, args.features / f"{args.name}.parquet", args.manifest, args.metrics, args.cmc,
                            args.out / RANKED_LIST, args.out / PER_QUERY,
                            diagnostic_feature_files(args.name, args.features))
    summary = result.summary()
    print(f"{args.name}: " + ", ".join(f"{k}={v}" for k, v in summary.items()) + f" ({result.protocol})")
    if note := invalid_query_note(result):
        print(note)


if __name__ == "__main__":
    run(main)
