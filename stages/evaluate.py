"""Evaluate stage: `python -m stages.evaluate <name>`.

Reads params section ``evaluate``, ``data/features/<name>.parquet`` and ``data/manifest.parquet``;
writes ``metrics/<name>.json``, ``metrics/cmc/<name>.tsv`` and ``data/eval/<name>/ranked_list.png``.
"""

from __future__ import annotations

import argparse

from reid.evaluation import EvaluateConfig, invalid_query_note, run_evaluation
from stages.common import load_config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="model / feature set name, e.g. baseline")
    args = parser.parse_args(argv)
    cfg = load_config(EvaluateConfig, "evaluate")
    result = run_evaluation(cfg, f"data/features/{args.name}.parquet", "data/manifest.parquet",
                            f"metrics/{args.name}.json", f"metrics/cmc/{args.name}.tsv",
                            f"data/eval/{args.name}/ranked_list.png")
    summary = result.summary()
    print(f"{args.name}: " + ", ".join(f"{k}={v}" for k, v in summary.items()) + f" ({result.protocol})")
    if note := invalid_query_note(result):
        print(note)


if __name__ == "__main__":
    main()
