"""The run's report: metrics/summary.md (every model beside the papers' numbers) and a figure sheet.

Everything here reads files the earlier stages wrote (metrics JSON, CMC TSV, pictures); nothing is
recomputed, so the report can never disagree with `dvc metrics show`. The papers' numbers are
published results on real datasets (SPEC §12) and are always printed as such: on the synthetic
world they are context, never a target the run is compared against.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

# Rank-1 / mAP (%) published per dataset (SPEC §12). Keys are prepare.dataset names.
PAPER_DATASETS = ("market1501", "dukemtmc", "cuhk03_labeled", "cuhk03_detected")
PAPER_NUMBERS: dict[str, dict[str, tuple[float, float]]] = {
    "DSA-reID (CVPR19, Table 2)": {"market1501": (95.7, 87.6), "dukemtmc": (86.2, 74.3),
                                   "cuhk03_labeled": (78.9, 75.2), "cuhk03_detected": (78.2, 73.1)},
    "SAN (AAAI20)": {"market1501": (96.1, 88.0), "dukemtmc": (87.9, 75.5)},
    "DSA Table 3: Baseline (RE+LS)": {"market1501": (93.4, 81.2)},
    "DSA Table 3: Two branches": {"market1501": (94.0, 83.4)},
    "BoT R50 (reid-strong-baseline)": {"market1501": (94.5, 85.9), "dukemtmc": (86.4, 76.4)},
    "fast-reid SBS R50": {"market1501": (95.4, 88.2), "dukemtmc": (90.3, 80.3)},
}
# Which published row each of our models reproduces (dsa_san has none: it is our extension).
PAPER_ROW_OF_MODEL = {"baseline": "DSA Table 3: Baseline (RE+LS)", "baseline2b": "DSA Table 3: Two branches",
                      "dsa": "DSA-reID (CVPR19, Table 2)", "san": "SAN (AAAI20)"}
# The papers' orderings, checked on this run's numbers: (better, worse, source).
PAPER_CLAIMS = (("dsa", "baseline2b", "DSA Table 3"), ("baseline2b", "baseline", "DSA Table 3"),
                ("san", "baseline", "SAN Table 4"), ("dsa_san", "dsa", "our extension"),
                ("dsa_san", "san", "our extension"))

SCORE_COLUMNS = (("Rank-1", "rank1_pct"), ("Rank-5", "rank5_pct"), ("Rank-10", "rank10_pct"), ("mAP", "mAP_pct"),
                 ("mINP", "mINP_pct"), ("mAP_official", "mAP_official_pct"))


@dataclass
class ModelResult:
    """One model's evaluation (metrics/<name>.json) and training summary (metrics/train/<name>.json)."""

    name: str
    scores: dict[str, float]
    train: dict[str, float] = field(default_factory=dict)


def read_json(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (run the stage that writes it first)")
    with path.open() as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None


def load_model_result(name: str, metrics_dir: str | os.PathLike = "metrics") -> ModelResult:
    metrics_dir = Path(metrics_dir)
    scores = read_json(metrics_dir / f"{name}.json")
    missing = [key for _, key in SCORE_COLUMNS if key not in scores]
    if missing:
        raise ValueError(f"{metrics_dir / f'{name}.json'}: lacks {', '.join(missing)}")
    train_file = metrics_dir / "train" / f"{name}.json"
    return ModelResult(name, scores, read_json(train_file) if train_file.is_file() else {})


def read_cmc(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(ranks, accuracy_pct) from a CMC TSV written by reid.evaluation.write_cmc."""
    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows or not {"rank", "accuracy_pct"} <= set(rows[0]):
        raise ValueError(f"{path}: expected a TSV with columns rank, accuracy_pct")
    return (np.array([int(r["rank"]) for r in rows]), np.array([float(r["accuracy_pct"]) for r in rows]))


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def results_table(results: Sequence[ModelResult]) -> str:
    """Markdown table of this run: scores, queries scored, training time."""
    header = ["model", *[label for label, _ in SCORE_COLUMNS], "queries", "train time (s)", "train images/s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        cells = [f"`{r.name}`", *[_fmt(r.scores[key]) for _, key in SCORE_COLUMNS],
                 str(r.scores.get("n_query_valid", "—")), _fmt(r.train.get("train_time_s"), 0),
                 _fmt(r.train.get("images_per_s"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paper_table(models: Sequence[str]) -> str:
    """Markdown table of the published Rank-1 / mAP, with the model of ours that reproduces each row."""
    ours = {row: name for name, row in PAPER_ROW_OF_MODEL.items() if name in models}
    header = ["published result", "our model", *PAPER_DATASETS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row, numbers in PAPER_NUMBERS.items():
        cells = [row, f"`{ours[row]}`" if row in ours else "—"]
        cells += [f"{numbers[d][0]:.1f} / {numbers[d][1]:.1f}" if d in numbers else "—" for d in PAPER_DATASETS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def claims_table(results: Sequence[ModelResult]) -> str:
    """Each paper ordering (A > B) with this run's Rank-1 and mAP differences and whether it holds."""
    by_name = {r.name: r for r in results}
    lines = ["| claim | source | ΔRank-1 | ΔmAP | holds here |", "|---|---|---|---|---|"]
    for better, worse, source in PAPER_CLAIMS:
        if better not in by_name or worse not in by_name:
            continue
        a, b = by_name[better].scores, by_name[worse].scores
        d_rank1, d_map = a["rank1_pct"] - b["rank1_pct"], a["mAP_pct"] - b["mAP_pct"]
        verdict = "yes" if d_rank1 > 0 and d_map > 0 else "no" if d_rank1 <= 0 and d_map <= 0 else "mixed"
        lines.append(f"| `{better}` > `{worse}` | {source} | {d_rank1:+.1f} | {d_map:+.1f} | {verdict} |")
    return "\n".join(lines)


def dense_semantics_lines(densepose: dict | None, sanpg: dict | None, texture: dict | None,
                          backend: str = "?") -> list[str]:
    """Bullet lines on the regulators' inputs: IUV quality, SAN-PG and pseudo-texture L1."""
    lines = []
    if densepose and densepose.get("part_miou") is not None:
        lines.append(f"- DensePose (`{backend}` backend) on test identities: part mIoU "
                     f"{densepose['part_miou']:.3f}, mean UV error {densepose.get('uv_error', float('nan')):.3f}, "
                     f"person found in {100 * densepose.get('found_fraction', float('nan')):.1f}% of crops")
    elif densepose:
        lines.append(f"- DensePose: person found in {100 * densepose.get('found_fraction', float('nan')):.1f}% of "
                     "crops (no ground truth to score part mIoU)")
    if sanpg:
        lines.append(f"- SAN-PG, held-out PIT textures: L1 {sanpg['heldout_l1']:.3f} vs "
                     f"{sanpg['heldout_l1_mean_texture']:.3f} for the mean texture ([-1, 1] units)")
    if texture and texture.get("l1_pseudo") is not None:
        lines.append(f"- Pseudo textures of test identities vs their true atlases: L1 {texture['l1_pseudo']:.3f} "
                     f"vs {texture['l1_mean_texture']:.3f} for the mean texture")
    return lines


def summary_markdown(results: Sequence[ModelResult], dataset: str, *, densepose: dict | None = None,
                     sanpg: dict | None = None, texture: dict | None = None, backend: str = "?") -> str:
    """The whole metrics/summary.md."""
    if not results:
        raise ValueError("the report needs at least one model")
    published = (f"published on **{dataset}** itself — same dataset, but other backbones, input sizes and "
                 "training lengths unless you ran profiles/paper.yaml" if dataset in PAPER_DATASETS else
                 f"published on **real datasets**, not on `{dataset}`: a different dataset, so context only, "
                 "never a target")
    parts = [f"# Results on `{dataset}`", "",
             "Query/gallery protocol of SPEC §10 (same pid + same camera removed, junk ignored). "
             "mAP is over valid queries (torchreid/fast-reid); mAP_official is Market-1501's trapezoid AP.", "",
             results_table(results), "", "## The papers' orderings on this run", "", claims_table(results), ""]
    dense = dense_semantics_lines(densepose, sanpg, texture, backend)
    if dense:
        parts += ["## Regulator inputs", "", *dense, ""]
    parts += ["## Published Rank-1 / mAP (%)", "", f"These are {published}.", "", paper_table([r.name for r in results]),
              ""]
    return "\n".join(parts)


# --- the figure sheet ---


def cmc_figure(curves: dict[str, tuple[np.ndarray, np.ndarray]], *, max_rank: int = 20) -> np.ndarray:
    """RGB picture of the CMC curves (accuracy % against rank), one line per model."""
    import matplotlib

    matplotlib.use("Agg")  # no display on CI machines
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for name, (ranks, acc) in curves.items():
        keep = ranks <= max_rank
        ax.plot(ranks[keep], acc[keep], marker=".", label=name)
    ax.set_xlabel("rank")
    ax.set_ylabel("matching accuracy (%)")
    ax.set_title("CMC")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return image


def figure_sheet(sections: Sequence[tuple[str, np.ndarray]], width: int = 900) -> np.ndarray:
    """Titled pictures stacked top to bottom, each scaled to `width` (aspect kept), on white."""
    if not sections:
        raise ValueError("figure_sheet needs at least one picture")
    blocks = []
    for title, image in sections:
        h, w = image.shape[:2]
        scaled = cv2.resize(image, (width, max(1, round(h * width / w))),
                            interpolation=cv2.INTER_AREA if w > width else cv2.INTER_NEAREST)
        band = np.full((28, width, 3), 255, np.uint8)
        cv2.putText(band, title, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
        blocks += [band, scaled]
    return np.concatenate(blocks, axis=0)
