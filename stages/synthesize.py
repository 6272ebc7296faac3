"""Stage `synthesize`: the synthetic world (SPEC §3) -> data/synth/market/ (+ contact sheet) and data/synth/pit/.

Run as ``python -m stages.synthesize [market|pit|pretrain]`` (default: all three). `market` reads params
``synthesize.world`` and writes data/synth/market/ and data/synth/contact_sheet.png; `pit` reads
``synthesize.pit`` and writes data/synth/pit/; `pretrain` reads ``synthesize.pretrain`` and writes the
pretraining pool data/synth/pretrain/ (identities disjoint from the world's). Folders are built in ``<out>.tmp`` and swapped in
at the end, so a killed stage leaves no half-written folder.
"""

from __future__ import annotations

import sys
import time

from reid.io import write_image
from reid.synth import PitConfig, PoolConfig, WorldConfig, contact_sheet, export_market, export_pit, export_pool
from stages.common import load_config, run

MARKET = "data/synth/market"
PIT = "data/synth/pit"
POOL = "data/synth/pretrain"
SHEET = "data/synth/contact_sheet.png"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    targets = argv or ["market", "pit", "pretrain"]
    unknown = sorted(set(targets) - {"market", "pit", "pretrain"})
    if unknown:
        raise SystemExit(f"usage: python -m stages.synthesize [market|pit|pretrain] (unknown: {', '.join(unknown)})")
    if "market" in targets:
        cfg = load_config(WorldConfig, "synthesize.world")
        t0 = time.perf_counter()
        counts = export_market(MARKET, cfg)
        write_image(SHEET, contact_sheet(MARKET))
        print(f"synthesize: {MARKET} {counts} in {time.perf_counter() - t0:.1f} s; {SHEET}")
    if "pit" in targets:
        cfg = load_config(PitConfig, "synthesize.pit")
        t0 = time.perf_counter()
        counts = export_pit(PIT, cfg)
        print(f"synthesize: {PIT} {counts} in {time.perf_counter() - t0:.1f} s")
    if "pretrain" in targets:
        cfg = load_config(PoolConfig, "synthesize.pretrain")
        t0 = time.perf_counter()
        counts = export_pool(POOL, cfg)
        print(f"synthesize: {POOL} {counts} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    run(main)
