"""Stage texture: SAN-PG on every reID crop of the manifest (all splits) -> the pseudo-texture cache.

data/manifest.parquet + data/sanpg/model.pt -> data/texture.parquet (``image_id``, ``texture`` = PNG
bytes of the uint8 RGB atlas, reid.io.encode_png; what reid.data.torch_dataset reads),
data/texture_samples.png (crop / pseudo texture / true atlas when the dataset has one) and
metrics/texture.json: when the dataset root has textures/<pid>.png (the synthetic world), the L1
([-1, 1] units, all atlas pixels) of the pseudo textures of test images (query + gallery, pid > 0)
against their identity's true atlas, beside the mean training-PIT texture's L1 (the floor to beat);
data/texture_timing.json (seconds and images/s, kept out of the metrics: they differ on every run).
"""

from __future__ import annotations

from pathlib import Path

from reid.data.manifest import read_manifest
from reid.data.torch_dataset import ReidDataset, manifest_split
from reid.data.transforms import eval_transform
from reid.device import default_device
from reid.io import read_image, write_image, write_json_atomic, write_parquet_atomic
from reid.sanpg import TextureConfig, build_texture_cache, load_sanpg, triplet_grid, true_atlas_reader
from stages.common import load_config, run

MANIFEST = Path("data/manifest.parquet")
MODEL = Path("data/sanpg/model.pt")
CACHE = Path("data/texture.parquet")
SAMPLES = Path("data/texture_samples.png")
METRICS = Path("metrics/texture.json")
TIMING = Path("data/texture_timing.json")


def main() -> None:
    cfg = load_config(TextureConfig, "texture")
    model, arch, mean = load_sanpg(MODEL)
    _, root = read_manifest(MANIFEST)
    manifest = manifest_split(MANIFEST)  # all splits, paths joined to the root
    truth = true_atlas_reader(root)
    dataset = ReidDataset(manifest, eval_transform(arch.size))
    cache = build_texture_cache(model, dataset, manifest, cfg, device=default_device(cfg.device), truth=truth,
                                mean=mean)
    write_parquet_atomic(CACHE, cache.table, {"tile": arch.tile, "model": str(MODEL), "format": "png rgb uint8"})

    paths, pids = manifest["path"].to_pylist(), manifest["pid"].to_pylist()
    if cache.samples:
        rows = [(read_image(paths[r]), atlas, truth(pids[r]) if truth is not None and pids[r] > 0 else None)
                for r, atlas in sorted(cache.samples.items())]
        write_image(SAMPLES, triplet_grid(rows, [f"pid {pids[r]}" for r in sorted(cache.samples)]))
    n = cache.table.num_rows
    metrics = {"units": "mean |x - y| over all atlas pixels and channels, textures in [-1, 1] (x / 127.5 - 1)",
               "scored": "query + gallery rows with pid > 0 vs textures/<pid>.png" if truth else "no true textures",
               "n_cached": n, **(cache.score.summary() if cache.score is not None else {})}
    write_json_atomic(METRICS, metrics)
    write_json_atomic(TIMING, {"time_s": round(cache.seconds, 1), "images_per_s": round(n / max(cache.seconds, 1e-9), 1)})
    scored = (f"; test L1 {metrics['l1_pseudo']} vs mean texture {metrics['l1_mean_texture']}"
              if cache.score is not None and cache.score.n else "")
    print(f"texture: {n} pseudo textures in {cache.seconds:.1f} s -> {CACHE}{scored}")


if __name__ == "__main__":
    run(main)
