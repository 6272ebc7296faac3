"""Report stage: metrics/summary.md, metrics/claims.json and data/report/figures.png from what the other
stages wrote.

Params: ``report.models`` (the models to tabulate, in order), ``report.bootstrap`` /
``report.bootstrap_seed`` (the claims' paired bootstrap: resamples, seed), ``prepare.dataset`` (to
label the papers' numbers) and ``densepose.backend`` (named beside the IUV quality). Reads
metrics/<m>.json, metrics/train/<m>.json, metrics/cmc/<m>.tsv, data/eval/<m>/ranked_list.png,
data/eval/<m>/per_query.parquet, and — when present — metrics/pretrained.json (the pretrained trunk
without fine-tuning: a first row, never a claim), metrics/densepose.json, metrics/sanpg.json,
metrics/texture.json, data/dsap_samples.png, data/texture_samples.png.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from reid.io import read_image, write_image, write_json_atomic, write_text_atomic
from reid.modeling import MODEL_NAMES
from reid.report import (
    PAPER_CLAIMS,
    PRETRAINED,
    ModelResult,
    claims_document,
    cmc_figure,
    figure_sheet,
    judge_claims,
    load_model_result,
    read_cmc,
    read_json,
    read_query_table,
    summary_markdown,
)
from stages.common import load_config, read_params, run, section

SUMMARY = Path("metrics/summary.md")
CLAIMS = Path("metrics/claims.json")
FIGURES = Path("data/report/figures.png")
MIN_BOOTSTRAP = 1000  # SPEC §13: B >= 1000


@dataclass
class ReportConfig:
    """params.yaml section ``report``."""

    models: list[str] = field(default_factory=lambda: list(MODEL_NAMES))
    bootstrap: int = 2000  # paired-bootstrap resamples for metrics/claims.json
    bootstrap_seed: int = 0

    def validate(self) -> None:
        if not self.models:
            raise ValueError("models must name at least one model")
        unknown = [m for m in self.models if m not in MODEL_NAMES]
        if unknown:
            raise ValueError(f"unknown models {unknown}; known: {', '.join(MODEL_NAMES)} "
                             f"({PRETRAINED!r} is added as a first row by itself when evaluated)")
        if self.bootstrap < MIN_BOOTSTRAP:
            raise ValueError(f"bootstrap must be >= {MIN_BOOTSTRAP} resamples, got {self.bootstrap}")


def optional_json(path: str) -> dict | None:
    return read_json(path) if Path(path).is_file() else None


def optional_pretrained(metrics_dir: Path = Path("metrics")) -> ModelResult | None:
    """The pretrained trunk's evaluation, when the evaluate stage has scored it."""
    return load_model_result(PRETRAINED, metrics_dir) if (metrics_dir / f"{PRETRAINED}.json").is_file() else None


def models_in_claims(models: list[str]) -> list[str]:
    """The models of `models` that some claim compares with another model of `models`."""
    pairs = [(a, b) for a, b, _ in PAPER_CLAIMS if a in models and b in models]
    return [m for m in models if any(m in pair for pair in pairs)]


def main() -> None:
    params = read_params()
    cfg = load_config(ReportConfig, "report", params)
    dataset, backend = section("prepare.dataset", params), section("densepose.backend", params)
    results = [load_model_result(m) for m in cfg.models]
    tables = {m: read_query_table(f"data/eval/{m}/per_query.parquet") for m in models_in_claims(cfg.models)}
    claims = judge_claims(tables, cfg.models, cfg.bootstrap, cfg.bootstrap_seed)
    document = claims_document(claims, cfg.bootstrap, cfg.bootstrap_seed)
    write_json_atomic(CLAIMS, document)
    text = summary_markdown(results, dataset, claims=claims, method=document["method"],
                            pretrained=optional_pretrained(), densepose=optional_json("metrics/densepose.json"),
                            sanpg=optional_json("metrics/sanpg.json"), texture=optional_json("metrics/texture.json"),
                            backend=backend)
    write_text_atomic(SUMMARY, text)

    sections = [("CMC", cmc_figure({m: read_cmc(f"metrics/cmc/{m}.tsv") for m in cfg.models}))]
    sections += [(f"ranked lists: {m} (green = same identity)", read_image(f"data/eval/{m}/ranked_list.png"))
                 for m in cfg.models]
    sections += [(title, read_image(path)) for title, path in
                 (("DSAP images: crop, IUV, 24 DSAP-images", "data/dsap_samples.png"),
                  ("pseudo textures: crop, SAN-PG atlas, true atlas", "data/texture_samples.png"))
                 if Path(path).is_file()]
    write_image(FIGURES, figure_sheet(sections))
    print(text)


if __name__ == "__main__":
    run(main)
