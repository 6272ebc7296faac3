"""Stage texture: SAN-PG on every reID crop of the manifest (all splits) -> the pseudo-texture cache.

``python -m stages.texture --manifest PARQUET --sanpg DIR --out PARQUET --samples PNG --timing JSON
--metrics JSON`` (dvc.yaml passes the paths): the manifest + the SAN-PG network folder (model.json,
model.pt, mean_texture.pt; reid.sanpg.model) -> the cache ``--out`` (``image_id``, ``texture`` = the raw
bytes of the uint8 RGB atlas, reid.sanpg.cache.texture_schema; what reid.data.torch_dataset reads), ``--samples``
(crop / pseudo texture / true atlas when the dataset has one) and ``--metrics``: when the dataset root
has textures/<pid>.png (the synthetic world), the L1 ([-1, 1] units, all atlas pixels) of the pseudo
textures of test images (query + gallery, pid > 0) against their identity's true atlas, beside the mean
training-PIT texture's L1 (the floor to beat); ``--timing`` (seconds and images/s, kept out of the
metrics: they differ on every run).
"""

from __future__ import annotations

from reid.data.manifest import read_manifest
from reid.data.torch_dataset import ReidDataset, manifest_split
from reid.data.transforms import eval_transform
from reid.device import default_device
from reid.io import write_image, write_json_atomic
from reid.sanpg.cache import build_texture_cache, true_atlas_reader
from reid.sanpg.config import TextureConfig
from reid.sanpg.model import load_sanpg
from reid.sanpg.pictures import cache_sample_grid
from stages.common import load_config, run, stage_parser


def main(argv: list[str] | None = None) -> None:
    args = stage_parser(__doc__, manifest="manifest to read", sanpg="SAN-PG network folder to read",
                        out="pseudo-texture cache to write", samples="sample picture to write",
                        timing="timing record to write", metrics="texture metrics to write").parse_args(argv)
    cfg = load_config(TextureConfig, "texture")
    model, arch, mean = load_sanpg(args.sanpg)
    _, root = read_manifest(args.manifest)
    manifest = manifest_split(args.manifest)  # all splits, paths joined to the root
    truth = true_atlas_reader(root)
    dataset = ReidDataset(manifest, eval_transform(arch.size))
    cache = build_texture_cache(model, dataset, manifest, cfg, args.out, tile=arch.tile,
                                metadata={"model": str(args.sanpg)}, device=default_device(cfg.device),
                                truth=truth, mean=mean)
    if cache.samples:
        write_image(args.samples, cache_sample_grid(cache.samples, manifest, truth))
    metrics = cache.metrics()
    write_json_atomic(args.metrics, metrics)
    write_json_atomic(args.timing, cache.timing())
    scored = (f"; test L1 {metrics['l1_pseudo']} vs mean texture {metrics['l1_mean_texture']}"
              if cache.score is not None and cache.score.n else "")
    print(f"texture: {cache.n_cached} pseudo textures in {cache.seconds:.1f} s -> {args.out}{scored}")


if __name__ == "__main__":
    run(main)
