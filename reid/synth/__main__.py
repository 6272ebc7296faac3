"""CLI: ``python -m reid.synth market --out DIR [--identities N] [--seed S] [--size H W]`` and
``python -m reid.synth pit --out DIR [--textures N] [--poses K] [--seed S] [--size H W]``."""

from __future__ import annotations

import argparse
import dataclasses

from reid.synth.world import PitConfig, WorldConfig, export_market, export_pit


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m reid.synth", description=__doc__)
    sub = parser.add_subparsers(dest="world", required=True)
    market = sub.add_parser("market", help="Market-1501-layout reID world")
    market.add_argument("--identities", type=int, default=WorldConfig.n_train,
                        help="identities per split (train and test each)")
    market.add_argument("--cameras", type=int, default=WorldConfig.n_cameras)
    market.add_argument("--images", type=int, default=WorldConfig.images_per_identity, help="images per identity")
    pit = sub.add_parser("pit", help="Paired-Image-Texture world")
    pit.add_argument("--textures", type=int, default=PitConfig.n_textures)
    pit.add_argument("--poses", type=int, default=PitConfig.poses_per_texture)
    for p in (market, pit):
        p.add_argument("--out", required=True, help="output folder (replaced)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--size", type=int, nargs=2, default=(128, 64), metavar=("H", "W"))
        p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        if args.world == "market":
            cfg = WorldConfig(seed=args.seed, n_train=args.identities, n_test=args.identities, n_cameras=args.cameras,
                              images_per_identity=args.images, height=args.size[0], width=args.size[1],
                              cameras_per_identity=(2, min(WorldConfig.cameras_per_identity[1], args.cameras)))
            cfg.validate()
            counts = export_market(args.out, cfg, progress=not args.quiet)
        else:
            cfg = PitConfig(seed=args.seed, n_textures=args.textures, poses_per_texture=args.poses,
                            height=args.size[0], width=args.size[1])
            cfg.validate()
            counts = export_pit(args.out, cfg, progress=not args.quiet)
    except ValueError as err:
        parser.error(str(err))
    print(f"wrote {args.out}: {counts} ({dataclasses.asdict(cfg)})")


if __name__ == "__main__":
    main()
