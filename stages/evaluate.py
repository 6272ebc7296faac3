"""Evaluate stage: `python -m stages.evaluate <name>`.

Reads params section ``evaluate``, ``data/features/<name>.parquet`` and ``data/manifest.parquet``;
writes ``metrics/<name>.json``, ``metrics/cmc/<name>.tsv``, ``data/eval/<name>/ranked_list.png``
and ``data/eval/<name>/per_query.parquet`` (one row per query, for the report's paired bootstrap).

``<name>`` is any feature set: a trained model, or ``pretrained`` (the pretrained trunk without
fine-tuning). When ``data/features/<name>_fused.parquet`` / ``<name>_guide.parquet`` exist (dsa and
dsa_san: the fused z = f + d and the DSAG-Stream guide d alone) they are evaluated with the same
config into the JSON's ``diagnostics``, beside ``mf`` (the main inference feature).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from reid.evaluation import EvaluateConfig, invalid_query_note, run_evaluation
from stages.common import load_config, run

DIAGNOSTIC_SUFFIXES = ("fused", "guide")  # data/features/<name>_<suffix>.parquet, evaluated when present


def diagnostic_feature_files(name: str, features_dir: Path = Path("data/features")) -> dict[str, Path]:
    """The extra feature sets of model `name` that exist, by diagnostic name."""
    files = {suffix: features_dir / f"{name}_{suffix}.parquet" for suffix in DIAGNOSTIC_SUFFIXES}
    return {suffix: path for suffix, path in files.items() if path.is_file()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="model / feature set name, e.g. baseline or pretrained")
    args = parser.parse_args(argv)
    cfg = load_config(EvaluateConfig, "evaluate")
    result = run_evaluation(cfg, f"data/features/{args.name}.parquet", "data/manifest.parquet",
                            f"metrics/{args.name}.json", f"metrics/cmc/{args.name}.tsv",
                            f"data/eval/{args.name}/ranked_list.png", f"data/eval/{args.name}/per_query.parquet",
                            diagnostic_feature_files(args.name))
    summary = result.summary()
    print(f"{args.name}: " + ", ".join(f"{k}={v}" for k, v in summary.items()) + f" ({result.protocol})")
    if note := invalid_query_note(result):
        print(note)


if __name__ == "__main__":
    run(main)
