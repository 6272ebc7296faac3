"""Stage `synthesize`: one synthetic data set (SPEC §3): the reID world, the PIT pairs, the pretraining pool
or the cross-dataset target world.

Run as ``python -m stages.synthesize market --out DIR --sheet PNG`` (params ``synthesize.world``: the
Market-layout world and its contact sheet), ``... pit --out DIR`` (``synthesize.pit``),
``... pretrain --out DIR`` (``synthesize.pretrain``: the pretraining pool, identities disjoint from the
world's) or ``... target --out DIR --sheet PNG`` (``synthesize.target``: query + gallery of a
domain-shifted world, identities disjoint from the others'); dvc.yaml passes the paths. Folders are built in ``<out>.tmp`` and swapped in at the end, so a
killed stage leaves no half-written folder.
"""

from __future__ import annotations

import argparse
import time

from reid.io import write_image
from reid.synth import (
    PitConfig,
    PoolConfig,
    TargetConfig,
    WorldConfig,
    contact_sheet,
    export_market,
    export_pit,
    export_pool,
    export_target,
)
from stages.common import add_paths, load_config, run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    targets = parser.add_subparsers(dest="target", required=True, metavar="{market,pit,pretrain,target}")
    add_paths(targets.add_parser("market", help="the reID world"),
              out="world folder to write", sheet="contact sheet picture to write")
    add_paths(targets.add_parser("pit", help="the PIT pairs"), out="PIT folder to write")
    add_paths(targets.add_parser("pretrain", help="the pretraining pool"), out="pool folder to write")
    add_paths(targets.add_parser("target", help="the cross-dataset target world"),
              out="target folder to write", sheet="contact sheet picture to write")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    t0 = time.perf_counter()
    if args.target == "market":
        counts = export_market(args.out, load_config(WorldConfig, "synthesize.world"))
        write_image(args.sheet, contact_sheet(args.out))
        print(f"synthesize: {args.out} {counts} in {time.perf_counter() - t0:.1f} s; {args.sheet}")
    elif args.target == "target":
        counts = export_target(args.out, load_config(TargetConfig, "synthesize.target"))
        write_image(args.sheet, contact_sheet(args.out))
        print(f"synthesize: {args.out} {counts} in {time.perf_counter() - t0:.1f} s; {args.sheet}")
    elif args.target == "pit":
        counts = export_pit(args.out, load_config(PitConfig, "synthesize.pit"))
        print(f"synthesize: {args.out} {counts} in {time.perf_counter() - t0:.1f} s")
    else:
        counts = export_pool(args.out, load_config(PoolConfig, "synthesize.pretrain"))
        print(f"synthesize: {args.out} {counts} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    run(main)
