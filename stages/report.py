"""Report stage: metrics/summary.md and data/report/figures.png from what the other stages wrote.

Params: ``report.models`` (the models to tabulate, in order), ``prepare.dataset`` (to label the
papers' numbers) and ``densepose.backend`` (named beside the IUV quality). Reads metrics/<m>.json,
metrics/train/<m>.json, metrics/cmc/<m>.tsv, data/eval/<m>/ranked_list.png, and — when present —
metrics/densepose.json, metrics/sanpg.json, metrics/texture.json, data/dsap_samples.png,
data/texture_samples.png.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from reid.io import read_image, write_image, write_text_atomic
from reid.modeling import MODEL_NAMES
from reid.report import cmc_figure, figure_sheet, load_model_result, read_cmc, read_json, summary_markdown
from stages.common import load_config, read_params, section

SUMMARY = Path("metrics/summary.md")
FIGURES = Path("data/report/figures.png")


@dataclass
class ReportConfig:
    """params.yaml section ``report``."""

    models: list[str] = field(default_factory=lambda: list(MODEL_NAMES))

    def validate(self) -> None:
        if not self.models:
            raise ValueError("models must name at least one model")
        unknown = [m for m in self.models if m not in MODEL_NAMES]
        if unknown:
            raise ValueError(f"unknown models {unknown}; known: {', '.join(MODEL_NAMES)}")


def optional_json(path: str) -> dict | None:
    return read_json(path) if Path(path).is_file() else None


def main() -> None:
    params = read_params()
    cfg = load_config(ReportConfig, "report", params)
    dataset, backend = section("prepare.dataset", params), section("densepose.backend", params)
    results = [load_model_result(m) for m in cfg.models]
    text = summary_markdown(results, dataset, densepose=optional_json("metrics/densepose.json"),
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
    main()
