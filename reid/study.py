"""Seed study: the same models trained with several seeds, summarised as mean ± sd and per-seed claims.

Pure aggregation, no I/O: the driver (``python -m stages.study``) runs one DVC experiment per
training seed, reads each experiment's committed metrics/<model>.json and metrics/claims.json, and
hands them here as plain dicts. ``study_document`` builds metrics/study.json, ``study_markdown``
metrics/study.md.

A seed study measures run-to-run spread on one machine; float kernels differ across CPUs, so a
study on another machine can differ by more than its sd (see the README).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

# metrics/<model>.json keys summarised per model -> their names in metrics/study.json.
STUDY_METRICS = {"rank1_pct": "rank1_pct", "mAP_pct": "map_pct", "mINP_pct": "minp_pct"}
# The markdown table's columns: (header, study.json key).
MARKDOWN_METRICS = (("Rank-1", "rank1_pct"), ("mAP", "map_pct"))
# The pretrained trunk is evaluated without training: its numbers do not depend on train.seed.
SEED_INDEPENDENT_MODELS = frozenset({"pretrained"})


def _number(value: Any) -> float | None:
    """A finite float, or None for a missing / non-numeric / NaN value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def summarize(values: Sequence[float | None], digits: int = 4) -> dict[str, Any]:
    """``{"values", "mean", "sd", "n"}`` of per-seed values; None entries (a seed without the value)
    are kept in ``values`` and left out of the statistics. sd is the sample sd (ddof=1): None below
    two values."""
    present = [v for v in values if v is not None]
    mean = round(statistics.fmean(present), digits) if present else None
    sd = round(statistics.stdev(present), digits) if len(present) >= 2 else None
    return {"values": list(values), "mean": mean, "sd": sd, "n": len(present)}


def _ordered_union(keys: Sequence[Sequence[str]]) -> list[str]:
    seen: dict[str, None] = {}
    for group in keys:
        for k in group:
            seen.setdefault(k, None)
    return list(seen)


def aggregate_models(per_seed: Sequence[Mapping[str, Mapping[str, Any]]],
                     metrics: Mapping[str, str] = STUDY_METRICS) -> dict[str, dict[str, dict[str, Any]]]:
    """``{model: {name: summarize(per-seed values)}}`` from one ``{model: metrics dict}`` per seed, for
    each metrics-file key -> study name in `metrics`.

    Models keep their first-seen order; seed-independent models (``pretrained``) are skipped."""
    models = [m for m in _ordered_union([list(s) for s in per_seed]) if m not in SEED_INDEPENDENT_MODELS]
    return {m: {name: summarize([_number(s.get(m, {}).get(key)) for s in per_seed]) for key, name in metrics.items()}
            for m in models}


def aggregate_claims(per_seed: Sequence[Mapping[str, Any] | None]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{claim: {metric: {"delta", "verdicts", "mean_delta", "sd_delta", "n_holds"}}}`` from one
    metrics/claims.json document per seed (None: that seed has none). ``delta`` / ``verdicts`` hold
    one entry per seed, None where the seed lacks the claim; ``n_holds`` counts "holds" verdicts."""
    rows: list[dict[tuple[str, str], Mapping[str, Any]]] = []
    for doc in per_seed:
        by_key: dict[tuple[str, str], Mapping[str, Any]] = {}
        for c in (doc or {}).get("claims", []) or []:
            by_key.setdefault((str(c["claim"]), str(c["metric"])), c)
        rows.append(by_key)
    keys = _ordered_union([list(r) for r in rows])
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for claim, metric in keys:
        found = [r.get((claim, metric)) for r in rows]
        deltas = [_number(c.get("delta")) if c else None for c in found]
        verdicts = [c.get("verdict") if c else None for c in found]
        stats = summarize(deltas)
        out.setdefault(claim, {})[metric] = {
            "delta": deltas, "verdicts": verdicts, "mean_delta": stats["mean"], "sd_delta": stats["sd"],
            "n_holds": sum(v == "holds" for v in verdicts)}
    return out


def study_document(seeds: Sequence[int], experiments: Mapping[int, str],
                   model_metrics: Sequence[Mapping[str, Mapping[str, Any]]],
                   claims: Sequence[Mapping[str, Any] | None], **extra: Any) -> dict[str, Any]:
    """metrics/study.json. `model_metrics[i]` / `claims[i]` belong to `seeds[i]`; `experiments` maps a
    seed to its DVC experiment (name or rev); `extra` keys (e.g. ``baseline``) are added verbatim."""
    if not (len(seeds) == len(model_metrics) == len(claims)):
        raise ValueError(f"{len(seeds)} seeds but {len(model_metrics)} metrics and {len(claims)} claims entries")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"duplicate seeds in {list(seeds)}")
    doc = {"seeds": list(seeds), "experiments": {str(s): experiments[s] for s in seeds},
           "models": aggregate_models(model_metrics), "claims": aggregate_claims(claims)}
    doc.update(extra)
    return doc


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _fmt_mean_sd(stats: Mapping[str, Any]) -> str:
    if stats.get("mean") is None:
        return "—"
    return _fmt(stats["mean"]) if stats.get("sd") is None else f"{_fmt(stats['mean'])} ± {_fmt(stats['sd'])}"


def _fmt_delta(value: float | None) -> str:
    return "—" if value is None else f"{value:+.1f}"


def study_markdown(doc: Mapping[str, Any]) -> str:
    """metrics/study.md: per model mean ± sd over seeds, then every claim's Δ and verdict per seed."""
    seeds = doc["seeds"]
    lines = [f"Seed study over `train.seed` ∈ {{{', '.join(str(s) for s in seeds)}}} "
             f"({len(seeds)} runs; mean ± sample sd, in %).", "",
             "| model | " + " | ".join(f"{h} mean ± sd" for h, _ in MARKDOWN_METRICS) + " |",
             "|---|" + "---|" * len(MARKDOWN_METRICS)]
    for model, stats in doc["models"].items():
        lines.append(f"| `{model}` | " + " | ".join(_fmt_mean_sd(stats.get(k, {})) for _, k in MARKDOWN_METRICS)
                     + " |")
    if doc.get("claims"):
        lines += ["", f"Δ in points (A − B), seeds in the order {', '.join(str(s) for s in seeds)}.", "",
                  "| claim | metric | Δ per seed | mean Δ | verdicts per seed |", "|---|---|---|---|---|"]
        for claim, by_metric in doc["claims"].items():
            for metric, c in by_metric.items():
                deltas = ", ".join(_fmt_delta(d) for d in c["delta"])
                verdicts = ", ".join(v or "—" for v in c["verdicts"])
                lines.append(f"| {claim} | {metric} | {deltas} | {_fmt_delta(c['mean_delta'])} | {verdicts} |")
    return "\n".join(lines) + "\n"
