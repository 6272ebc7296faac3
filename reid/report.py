"""The run's report: metrics/summary.md (every model beside the papers' numbers) and a figure sheet.

Everything here reads files the earlier stages wrote (metrics JSON, CMC TSV, pictures); nothing is
recomputed, so the report can never disagree with `dvc metrics show`. The papers' numbers are
published results on real datasets (SPEC §12) and are always printed as such: on the synthetic
world they are context, never a target the run is compared against.

The papers' orderings (``PAPER_CLAIMS``, one list for metrics/claims.json and the summary) are
judged by a paired bootstrap over the valid queries of the two models' per-query files
(data/eval/<m>/per_query.parquet): the same resampled queries for both models, so the interval
reflects how the two models differ on the same queries rather than how hard the query set is.
`ReportConfig` is the report stage's params section (models, bootstrap resamples and seed).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import pyarrow.parquet as pq

from reid.densepose.quality import quality_warnings
from reid.modeling import MODEL_NAMES, PRETRAINED  # PRETRAINED: the trunk without fine-tuning (no training, no claims)

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
ClaimMetric = Literal["rank1", "mAP"]
CLAIM_METRICS: tuple[ClaimMetric, ...] = ("rank1", "mAP")
BOOTSTRAP_BLOCK = 1 << 22  # resampled indices drawn at once (32 MB of int64)

SCORE_COLUMNS = (("Rank-1", "rank1_pct"), ("Rank-5", "rank5_pct"), ("Rank-10", "rank10_pct"), ("mAP", "mAP_pct"),
                 ("mINP", "mINP_pct"), ("mAP_official", "mAP_official_pct"))
# metrics/train/<m>.json keys shown beside the scores (not timings: they make `dvc metrics diff` noisy)
TRAIN_COLUMNS = (("steps", "steps", 0), ("final ID loss", "final_id_loss", 3))
PRETRAINED_LABEL = "pretrained trunk, no fine-tuning"
MIN_BOOTSTRAP = 1000  # SPEC §13: B >= 1000 resamples
DIAGNOSTIC_LABELS = {"mf": "mf (inference feature)", "fused": "fused z = f + d", "guide": "guide d alone"}


@dataclass
class ReportConfig:
    """What the report tabulates and how it judges the claims (params ``report``)."""

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


@dataclass
class ModelResult:
    """One model's evaluation (metrics/<name>.json) and training summary (metrics/train/<name>.json)."""

    name: str
    scores: dict[str, float]
    train: dict[str, float] = field(default_factory=dict)
    diagnostics: dict[str, dict[str, float]] = field(default_factory=dict)  # metrics JSON "diagnostics"


@dataclass
class QueryTable:
    """A model's per-query file: image ids, validity and the two values the claims test."""

    image_id: np.ndarray  # str
    valid: np.ndarray  # bool
    ap: np.ndarray  # float64, NaN when not valid
    first_hit: np.ndarray  # int64, -1 when none

    def values(self, metric: ClaimMetric) -> np.ndarray:
        """Per-query value in [0, 1] whose mean over valid queries is the metric: rank-1 hit or AP."""
        return (self.first_hit == 0).astype(np.float64) if metric == "rank1" else self.ap


@dataclass
class ClaimResult:
    """One row of metrics/claims.json: an ordering A > B on one metric, in percentage points."""

    claim: str
    source: str
    metric: ClaimMetric
    delta: float
    ci95: list[float]
    verdict: Literal["holds", "reversed", "inconclusive"]


def read_json(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (run the stage that writes it first)")
    with path.open() as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None


def load_model_result(name: str, scores_dir: str | os.PathLike, records_dir: str | os.PathLike) -> ModelResult:
    """Feature set `name`'s scores (``<scores_dir>/<name>.json``, the evaluate stage's) and, when present,
    its training record (``<records_dir>/<name>.json``, the train stage's)."""
    scores_file = Path(scores_dir) / f"{name}.json"
    scores = read_json(scores_file)
    missing = [key for _, key in SCORE_COLUMNS if key not in scores]
    if missing:
        raise ValueError(f"{scores_file}: lacks {', '.join(missing)}")
    train_file = Path(records_dir) / f"{name}.json"
    diagnostics = scores.pop("diagnostics", {})
    return ModelResult(name, scores, read_json(train_file) if train_file.is_file() else {}, diagnostics)


def read_query_table(path: str | os.PathLike) -> QueryTable:
    """A per-query file written by reid.evaluation.run_evaluation; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (run the evaluate stage first)")
    table = pq.read_table(path)
    missing = [c for c in ("image_id", "valid", "ap", "first_hit") if c not in table.column_names]
    if missing:
        raise ValueError(f"{path}: lacks column(s) {', '.join(missing)}")
    return QueryTable(np.asarray(table.column("image_id").to_pylist(), dtype=object),
                      table.column("valid").to_numpy().astype(bool),
                      table.column("ap").to_numpy().astype(np.float64),
                      table.column("first_hit").to_numpy().astype(np.int64))


def paired_query_values(a: QueryTable, b: QueryTable, metric: ClaimMetric, names: tuple[str, str] = ("a", "b")
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(a's values, b's values) on the valid queries, joined on image_id (a's order).

    The two models must have been scored on the same queries with the same valid ones; otherwise
    the pairing is meaningless, so it is an error naming both models.
    """
    a_ids, b_ids = a.image_id[a.valid], b.image_id[b.valid]
    for label, a_set, b_set in (("query", set(a.image_id), set(b.image_id)), ("valid query", set(a_ids), set(b_ids))):
        if a_set != b_set:
            differ = sorted(a_set ^ b_set)
            raise ValueError(f"{names[0]} and {names[1]} have different {label} sets ({len(differ)} image ids in "
                             f"one only, first: {', '.join(differ[:3])}); re-run evaluate for both on one manifest")
    row_of = {image_id: i for i, image_id in enumerate(b.image_id)}
    b_rows = np.fromiter((row_of[i] for i in a_ids), np.int64, len(a_ids))
    return a.values(metric)[a.valid], b.values(metric)[b_rows]


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0
                     ) -> tuple[float, float, float]:
    """(delta, lo, hi) in percentage points: mean(a) - mean(b) and its 95 % percentile interval.

    `a`, `b` are per-query values in [0, 1] of the same queries, aligned. Each resample draws
    query indices with replacement and uses the SAME indices for both models (resampling the
    per-query differences), so what the two models share cancels out.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values must be two aligned 1-D arrays, got shapes {a.shape} and {b.shape}")
    if len(a) == 0:
        raise ValueError("no valid query to bootstrap over")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    diff = 100.0 * (a - b)
    rng = np.random.default_rng(seed)
    rows = max(1, BOOTSTRAP_BLOCK // len(diff))
    stats = np.concatenate([diff[rng.integers(0, len(diff), (min(rows, n_boot - s), len(diff)))].mean(1)
                            for s in range(0, n_boot, rows)])
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return float(diff.mean()), float(lo), float(hi)


def claim_verdict(lo: float, hi: float) -> Literal["holds", "reversed", "inconclusive"]:
    """From the interval alone: entirely above 0 holds, entirely below 0 reversed."""
    return "holds" if lo > 0 else "reversed" if hi < 0 else "inconclusive"


def judge_claims(tables: dict[str, QueryTable], models: Sequence[str], n_boot: int = 2000,
                 seed: int = 0) -> list[ClaimResult]:
    """One ClaimResult per PAPER_CLAIMS ordering x CLAIM_METRICS whose two models are in `models`
    (`tables` must hold theirs). Values are rounded to 4 decimals, and the verdict read from the
    rounded interval, so that the file agrees with itself."""
    out = []
    for better, worse, source in PAPER_CLAIMS:
        if better not in models or worse not in models:
            continue
        for metric in CLAIM_METRICS:
            a, b = paired_query_values(tables[better], tables[worse], metric, (better, worse))
            delta, lo, hi = (round(v, 4) for v in paired_bootstrap(a, b, n_boot, seed))
            out.append(ClaimResult(f"{better} > {worse}", source, metric, delta, [lo, hi], claim_verdict(lo, hi)))
    return out


def claims_document(claims: Sequence[ClaimResult], n_boot: int, seed: int) -> dict:
    """metrics/claims.json."""
    return {"method": f"paired bootstrap over valid queries, B={n_boot}, seed={seed}, 95% percentile interval",
            "claims": [asdict(c) for c in claims]}


def read_cmc(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(ranks, accuracy_pct) from a CMC TSV written by reid.evaluation.write_cmc."""
    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows or not {"rank", "accuracy_pct"} <= set(rows[0]):
        raise ValueError(f"{path}: expected a TSV with columns rank, accuracy_pct")
    return (np.array([int(r["rank"]) for r in rows]), np.array([float(r["accuracy_pct"]) for r in rows]))


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def results_table(results: Sequence[ModelResult], pretrained: ModelResult | None = None) -> str:
    """Markdown table of this run: scores, queries scored, optimiser steps and final ID loss; the
    pretrained trunk without fine-tuning first, when evaluated."""
    header = ["model", *[label for label, _ in SCORE_COLUMNS], "queries", *[label for label, _, _ in TRAIN_COLUMNS]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows = [(PRETRAINED_LABEL, pretrained)] if pretrained is not None else []
    for label, r in rows + [(f"`{r.name}`", r) for r in results]:
        cells = [label, *[_fmt(r.scores[key]) for _, key in SCORE_COLUMNS], str(r.scores.get("n_query_valid", "—")),
                 *[_fmt(r.train.get(key), digits) for _, key, digits in TRAIN_COLUMNS]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def diagnostics_table(results: Sequence[ModelResult]) -> str:
    """Markdown table of each model's extra feature sets (mf / fused / guide); empty when none has any."""
    rows = [(r.name, variant, scores) for r in results for variant, scores in r.diagnostics.items()]
    if not rows:
        return ""
    lines = ["| model | feature | Rank-1 | mAP |", "|---|---|---|---|"]
    for name, variant, scores in rows:
        lines.append(f"| `{name}` | {DIAGNOSTIC_LABELS.get(variant, variant)} | {_fmt(scores.get('rank1_pct'))} | "
                     f"{_fmt(scores.get('mAP_pct'))} |")
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


def _fmt_interval(c: ClaimResult) -> str:
    return f"{c.delta:+.1f} [{c.ci95[0]:+.1f}, {c.ci95[1]:+.1f}]"


def claims_table(claims: Sequence[ClaimResult]) -> str:
    """Each ordering (A > B) with its Rank-1 and mAP Δ [95 % interval] in points and the verdicts."""
    by_claim: dict[tuple[str, str], dict[str, ClaimResult]] = {}
    for c in claims:
        by_claim.setdefault((c.claim, c.source), {})[c.metric] = c
    lines = ["| claim | source | ΔRank-1 [95% CI] | Rank-1 verdict | ΔmAP [95% CI] | mAP verdict |",
             "|---|---|---|---|---|---|"]
    for (claim, source), by_metric in by_claim.items():
        cells = [" > ".join(f"`{m}`" for m in claim.split(" > ")), source]
        for metric in CLAIM_METRICS:
            c = by_metric.get(metric)
            cells += [_fmt_interval(c), c.verdict] if c else ["—", "—"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def dense_semantics_lines(densepose: dict | None, sanpg: dict | None, texture: dict | None,
                          backend: str = "?", dsap: dict | None = None) -> list[str]:
    """Bullet lines on the regulators' inputs: IUV quality, DSAP coverage, SAN-PG and pseudo-texture L1, then
    a warning per figure below its floor (reid.densepose.quality.QUALITY_FLOORS)."""
    lines = []
    if densepose and densepose.get("part_miou") is not None:
        lines.append(f"- DensePose (`{backend}` backend) on test identities: part mIoU "
                     f"{densepose['part_miou']:.3f}, mean UV error {densepose.get('uv_error', float('nan')):.3f}, "
                     f"person found in {100 * densepose.get('found_fraction', float('nan')):.1f}% of crops")
    elif densepose:
        lines.append(f"- DensePose: person found in {100 * densepose.get('found_fraction', float('nan')):.1f}% of "
                     "crops (no ground truth to score part mIoU)")
    if dsap and dsap.get("mean_parts_seen") is not None:
        lines.append(f"- DSAP images: {dsap['mean_parts_seen']:.1f} of the 24 parts per crop reached by a pixel, "
                     f"{100 * dsap['mean_coverage']:.1f}% of the part grids' cells covered")
    if sanpg:
        lines.append(f"- SAN-PG, held-out PIT textures: L1 {sanpg['heldout_l1']:.3f} vs "
                     f"{sanpg['heldout_l1_mean_texture']:.3f} for the mean texture ([-1, 1] units)")
    if texture and texture.get("l1_pseudo") is not None:
        lines.append(f"- Pseudo textures of test identities vs their true atlases: L1 {texture['l1_pseudo']:.3f} "
                     f"vs {texture['l1_mean_texture']:.3f} for the mean texture")
    return lines + [f"- **Warning**: {w}" for w in quality_warnings(densepose, dsap)]


# --- model cost (each model.json's ``cost``, written by the train stage: reid.modeling.cost) ---

MODEL_INFO_FILE = "model.json"  # reid.export.INFO_FILE, not imported: it would pull torch into the report
COST_GRAPHS = ("training", "inference")
# (model, the model whose inference graph it keeps): the regulator is dropped at inference.
INFERENCE_TWINS = (("dsa", "baseline2b"), ("san", "baseline"), ("dsa_san", "baseline2b"))


def read_model_cost(path: str | os.PathLike) -> dict[str, dict[str, int]] | None:
    """The ``cost`` of a model.json (``{"training"|"inference": {"params", "flops"}}``), None when the
    file has none (written before costs were recorded); errors name the file."""
    cost = read_json(path).get("cost")
    if cost is None:
        return None
    for graph in COST_GRAPHS:
        entry = cost.get(graph) if isinstance(cost, dict) else None
        for key in ("params", "flops"):
            value = entry.get(key) if isinstance(entry, dict) else None
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{path}: cost.{graph}.{key} must be a count, got {value!r}")
    return cost


def cost_section(costs: Mapping[str, dict[str, dict[str, int]] | None]) -> list[str]:
    """The summary's "Model cost" section: parameters (M) and GFLOPs per image of each model's training
    and inference graphs, and whether each regulated model infers at its twin's cost (compared, not
    assumed). Empty when no model has a recorded cost."""
    if not any(costs.values()):
        return []
    lines = ["## Model cost", "",
             "Per image at the training input size (model.json `cost`, torch.utils.flop_counter: a multiply-add "
             "counts 2, convolutions and matmuls only). Training graph: the whole training forward (every stream, "
             "head and decoder; no loss, no backward); inference graph: `forward_features`, what retrieval runs.",
             "", "| model | params (M), training | GFLOPs, training | params (M), inference | GFLOPs, inference |",
             "|---|---|---|---|---|"]
    for name, cost in costs.items():
        cells = [f"{cost[g]['params'] / 1e6:.3f} | {cost[g]['flops'] / 1e9:.3f}" for g in COST_GRAPHS] if cost \
            else ["— | —"] * 2
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    lines.append("")
    for model, twin in INFERENCE_TWINS:
        a, b = costs.get(model), costs.get(twin)
        if not a or not b:
            continue
        extra = (f"{(a['training']['params'] - b['training']['params']) / 1e6:+.3f} M parameters and "
                 f"{(a['training']['flops'] - b['training']['flops']) / 1e9:+.3f} GFLOPs at training")
        if a["inference"] == b["inference"]:
            lines.append(f"- `{model}` infers at exactly `{twin}`'s cost (same parameters and FLOPs), with {extra}.")
        else:
            lines.append(f"- `{model}` does **not** infer at `{twin}`'s cost: "
                         f"{(a['inference']['params'] - b['inference']['params']) / 1e6:+.3f} M parameters, "
                         f"{(a['inference']['flops'] - b['inference']['flops']) / 1e9:+.3f} GFLOPs at inference.")
    return lines + [""]


def summary_markdown(results: Sequence[ModelResult], dataset: str, *, claims: Sequence[ClaimResult] = (),
                     method: str = "", pretrained: ModelResult | None = None, densepose: dict | None = None,
                     sanpg: dict | None = None, texture: dict | None = None, backend: str = "?",
                     dsap: dict | None = None, costs: Mapping[str, dict[str, dict[str, int]] | None] | None = None) -> str:
    """The whole metrics/summary.md (`method`: how the claims' intervals were made, claims.json's;
    `costs`: each model's model.json cost, read_model_cost)."""
    if not results:
        raise ValueError("the report needs at least one model")
    published = (f"published on **{dataset}** itself — same dataset, but other backbones, input sizes and "
                 "training lengths unless you ran profiles/paper.yaml" if dataset in PAPER_DATASETS else
                 f"published on **real datasets**, not on `{dataset}`: a different dataset, so context only, "
                 "never a target")
    parts = [f"# Results on `{dataset}`", "",
             "Query/gallery protocol of SPEC §10 (same pid + same camera removed, junk ignored). "
             "mAP is over valid queries (torchreid/fast-reid); mAP_official is Market-1501's trapezoid AP.", "",
             results_table(results, pretrained), ""]
    diagnostics = diagnostics_table(results)
    if diagnostics:
        parts += ["### Feature diagnostics", "", "Rank-1 / mAP of each model's other feature sets, "
                  "same protocol; mf is the feature the model is evaluated with.", "", diagnostics, ""]
    parts += ["## The papers' orderings on this run", ""]
    if claims:
        parts += [f"Δ in points with a {method or 'paired bootstrap 95% interval'}; "
                  "verdict from the interval alone (above 0 holds, below 0 reversed, else inconclusive).", "",
                  claims_table(claims), ""]
    else:
        parts += ["No ordering has both its models in this run.", ""]
    dense = dense_semantics_lines(densepose, sanpg, texture, backend, dsap)
    if dense:
        parts += ["## Regulator inputs", "", *dense, ""]
    parts += cost_section(costs or {})
    parts += ["## Published Rank-1 / mAP (%)", "", f"These are {published}.", "", paper_table([r.name for r in results]),
              ""]
    return "\n".join(parts)


# --- cross-dataset evaluation ---


@dataclass
class CrossResult:
    """One feature set's cross-dataset evaluation (metrics/cross/<name>.json, the cross_evaluate stage's):
    trained on `source`, scored on `target` (each {dataset, root}), and its per-query file when read."""

    name: str
    source: dict[str, str]
    target: dict[str, str]
    scores: dict[str, float]
    queries: QueryTable | None = None


def load_cross_result(name: str, cross_dir: str | os.PathLike, eval_dir: str | os.PathLike | None = None
                      ) -> CrossResult:
    """`<cross_dir>/<name>.json` and, with `eval_dir`, `<eval_dir>/<name>/per_query.parquet` (for intervals)."""
    path = Path(cross_dir) / f"{name}.json"
    scores = read_json(path)
    labels = {key: scores.pop(key, None) for key in ("source", "target")}
    bad = [key for key, label in labels.items() if not (isinstance(label, dict) and {"dataset", "root"} <= set(label))]
    missing = [key for _, key in SCORE_COLUMNS if key not in scores] + bad
    if missing:
        raise ValueError(f"{path}: lacks {', '.join(missing)} (source / target: {{dataset, root}})")
    queries = read_query_table(Path(eval_dir) / name / "per_query.parquet") if eval_dir is not None else None
    return CrossResult(name, labels["source"], labels["target"], scores, queries)


def dataset_label(label: dict[str, str]) -> str:
    """`dataset` (root): a dataset name alone does not tell the synthetic world from the synthetic target."""
    return f"`{label['dataset']}` ({label['root']})"


def mean_interval(values: np.ndarray, n_boot: int, seed: int) -> tuple[float, float, float]:
    """(mean, lo, hi) in points of per-query values in [0, 1]: a bootstrap over queries, 95 % percentiles."""
    values = np.asarray(values, np.float64)
    return paired_bootstrap(values, np.zeros_like(values), n_boot, seed)  # minus zero: the mean's own interval


def cross_dataset_markdown(source: Sequence[ModelResult], cross: Sequence[CrossResult], *, n_boot: int = 2000,
                           seed: int = 0) -> str:
    """The summary's "Cross-dataset" section: per feature set Rank-1 / mAP on the source (its evaluate
    scores) and on the target, with a bootstrap 95 % interval over the target's queries when its
    per-query file was read, and the drop. Empty when `cross` is. Every row must name one source →
    target pair: scores of different pairs side by side would read as one comparison."""
    if not cross:
        return ""
    pairs = {(dataset_label(c.source), dataset_label(c.target)) for c in cross}
    if len(pairs) != 1:
        raise ValueError(f"cross-dataset results of different source -> target pairs: {sorted(pairs)}; "
                         "re-run cross_evaluate for every model")
    (src, tgt), = pairs
    by_name = {r.name: r for r in source}
    if missing := [c.name for c in cross if c.name not in by_name]:
        raise ValueError(f"cross-dataset results without source scores: {', '.join(missing)}")
    header = ["model", "source Rank-1", "source mAP", "target Rank-1 [95% CI]", "target mAP [95% CI]",
              "ΔRank-1", "ΔmAP", "target queries"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for c in cross:
        s = by_name[c.name].scores
        cells = [PRETRAINED_LABEL if c.name == PRETRAINED else f"`{c.name}`", _fmt(s["rank1_pct"]), _fmt(s["mAP_pct"])]
        for metric, key in (("rank1", "rank1_pct"), ("mAP", "mAP_pct")):
            interval = ""
            if c.queries is not None and c.queries.valid.any():
                _, lo, hi = mean_interval(c.queries.values(metric)[c.queries.valid], n_boot, seed)
                interval = f" [{lo:.1f}, {hi:.1f}]"
            cells.append(_fmt(c.scores[key]) + interval)
        cells += [f"{c.scores[key] - s[key]:+.1f}" for key in ("rank1_pct", "mAP_pct")]
        cells.append(str(c.scores.get("n_query_valid", "—")))
        lines.append("| " + " | ".join(cells) + " |")
    intro = ("Trained on the source, evaluated on the target's query/gallery with the same features and "
             "protocol (no target image is trained on); Δ = target − source, in points. The interval is a "
             f"bootstrap over the target's valid queries, B={n_boot}, seed={seed}.")
    return "\n".join(["", f"## Cross-dataset: {src} → {tgt}", "", intro, "", *lines, ""])  # after a blank line


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
