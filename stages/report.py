"""Report stage: the summary, the claims and the figure sheet from what the other stages wrote.

``python -m stages.report --scores DIR --train-metrics DIR --cmc DIR --eval DIR ...`` (dvc.yaml passes
every path). Params: ``report.models`` (the models to tabulate, in order), ``report.bootstrap`` /
``report.bootstrap_seed`` (the claims' paired bootstrap: resamples, seed), ``prepare.dataset`` (to
label the papers' numbers) and ``densepose.backend`` (named beside the IUV quality). Reads per model m
``<scores>/<m>.json``, ``<train-metrics>/<m>.json``, ``<cmc>/<m>.tsv``, ``<eval>/<m>/ranked_list.png``,
``<eval>/<m>/per_query.parquet`` and ``<models>/<m>/model.json`` (its cost), ``<cross>/<m>.json`` and
``<cross-eval>/<m>/per_query.parquet`` (the cross-dataset evaluation, pretrained included when present:
the summary's "Cross-dataset" section), and — when present —
``<scores>/pretrained.json`` (the pretrained trunk without fine-tuning: a first row, never a claim), the
DensePose, SAN-PG and texture metrics and the DSAP and texture sample pictures. Writes ``--summary``
(Markdown), ``--claims`` (JSON) and ``--figures``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from reid.io import read_image, write_image, write_json_atomic, write_text_atomic
from reid.report import (
    MODEL_INFO_FILE,
    PAPER_CLAIMS,
    PRETRAINED,
    ModelResult,
    ReportConfig,
    claims_document,
    cmc_figure,
    cross_dataset_markdown,
    figure_sheet,
    judge_claims,
    load_cross_result,
    load_model_result,
    read_cmc,
    read_json,
    read_model_cost,
    read_query_table,
    summary_markdown,
)
from stages.common import PER_QUERY, RANKED_LIST, load_config, read_params, run, section, stage_parser


def optional_json(path: Path) -> dict | None:
    return read_json(path) if path.is_file() else None


def optional_pretrained(scores_dir: Path, records_dir: Path) -> ModelResult | None:
    """The pretrained trunk's evaluation, when the evaluate stage has scored it."""
    if not (scores_dir / f"{PRETRAINED}.json").is_file():
        return None
    return load_model_result(PRETRAINED, scores_dir, records_dir)


def models_in_claims(models: list[str]) -> list[str]:
    """The models of `models` that some claim compares with another model of `models`."""
    pairs = [(a, b) for a, b, _ in PAPER_CLAIMS if a in models and b in models]
    return [m for m in models if any(m in pair for pair in pairs)]


def cross_section(args: argparse.Namespace, results: list[ModelResult], pretrained: ModelResult | None,
                  cfg: ReportConfig) -> str:
    """The "Cross-dataset" section of the models (and the pretrained trunk) that cross_evaluate scored:
    all of cfg.models or, in a run without cross-dataset stages, none. `results` and `pretrained` are
    their scores on the source."""
    names = [n for n in [PRETRAINED, *cfg.models] if (args.cross / f"{n}.json").is_file()]
    missing = [m for m in cfg.models if m not in names]
    if names and missing:
        raise FileNotFoundError(f"{args.cross}: no cross-dataset metrics of {', '.join(missing)} "
                                "(run the cross_evaluate stage first)")
    cross = [load_cross_result(n, args.cross, args.cross_eval) for n in names]
    return cross_dataset_markdown(results + ([pretrained] if pretrained else []), cross, n_boot=cfg.bootstrap,
                                  seed=cfg.bootstrap_seed)


def parse_args(argv: list[str] | None):
    return stage_parser(__doc__, scores="folder of the evaluation metrics <m>.json",
                        train_metrics="folder of the training records <m>.json",
                        cmc="folder of the CMC curves <m>.tsv", eval="folder of the evaluation folders <m>/",
                        models="folder of the trained network folders <m>/ (model.json: the cost)",
                        densepose_metrics="DensePose metrics, read when present",
                        dsap_metrics="DSAP metrics, read when present",
                        sanpg_metrics="SAN-PG metrics, read when present",
                        texture_metrics="texture metrics, read when present",
                        dsap_samples="DSAP sample picture, read when present",
                        texture_samples="texture sample picture, read when present",
                        cross="folder of the cross-dataset metrics <m>.json",
                        cross_eval="folder of the cross-dataset evaluation folders <m>/",
                        summary="summary Markdown to write", claims="claims JSON to write",
                        figures="figure sheet to write").parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    params = read_params()
    cfg = load_config(ReportConfig, "report", params)
    dataset, backend = section("prepare.dataset", params), section("densepose.backend", params)
    results = [load_model_result(m, args.scores, args.train_metrics) for m in cfg.models]
    tables = {m: read_query_table(args.eval / m / PER_QUERY) for m in models_in_claims(cfg.models)}
    claims = judge_claims(tables, cfg.models, cfg.bootstrap, cfg.bootstrap_seed)
    document = claims_document(claims, cfg.bootstrap, cfg.bootstrap_seed)
    write_json_atomic(args.claims, document)
    pretrained = optional_pretrained(args.scores, args.train_metrics)
    text = summary_markdown(results, dataset, claims=claims, method=document["method"], pretrained=pretrained,
                            densepose=optional_json(args.densepose_metrics), dsap=optional_json(args.dsap_metrics),
                            sanpg=optional_json(args.sanpg_metrics), texture=optional_json(args.texture_metrics),
                            backend=backend,
                            costs={m: read_model_cost(args.models / m / MODEL_INFO_FILE) for m in cfg.models})
    text += cross_section(args, results, pretrained, cfg)
    write_text_atomic(args.summary, text)

    sections = [("CMC", cmc_figure({m: read_cmc(args.cmc / f"{m}.tsv") for m in cfg.models}))]
    sections += [(f"ranked lists: {m} (green = same identity)", read_image(args.eval / m / RANKED_LIST))
                 for m in cfg.models]
    sections += [(title, read_image(path)) for title, path in
                 (("DSAP images: crop, IUV, 24 DSAP-images", args.dsap_samples),
                  ("pseudo textures: crop, SAN-PG atlas, true atlas", args.texture_samples))
                 if path.is_file()]
    write_image(args.figures, figure_sheet(sections))
    print(text)


if __name__ == "__main__":
    run(main)
