"""Stage train_sanpg: SAN-PG (SA-Enc + SA-Dec, L1 only) on the PIT pairs (SPEC §7).

train_sanpg.pit_root (default data/synth/pit) -> data/sanpg/model.pt (weights + architecture + mean training texture, tensors only),
data/sanpg/checkpoint/last.pt (persist: a killed run resumes from its last epoch),
metrics/sanpg.json (held-out L1 in [-1, 1] units beside the mean-texture floor), DVCLive curves in
metrics/train/sanpg/, data/sanpg/samples.png (held-out input / predicted / true atlas) and
data/sanpg/timing.json (wall-clock figures, kept out of the metrics: they differ on every run).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from dvclive import Live

from reid.data.transforms import eval_transform
from reid.device import default_device
from reid.io import drop_live_steps_from, write_image, write_json_atomic
from reid.sanpg import (
    SanPGConfig,
    build_sanpg,
    evaluate_l1,
    load_pit,
    mean_texture,
    predict_textures,
    save_sanpg,
    split_by_texture,
    textures_tensor,
    to_uint8,
    train_sanpg,
    triplet_grid,
)
from stages.common import load_config, run

OUT = Path("data/sanpg")
LIVE_DIR = Path("metrics/train/sanpg")
METRICS = Path("metrics/sanpg.json")
TIMING = OUT / "timing.json"


def main() -> None:
    cfg = load_config(SanPGConfig, "train_sanpg")
    data = load_pit(cfg.pit_root, cfg.tile)
    train_idx, held_idx = split_by_texture(data.texture_of, cfg.val_fraction, cfg.seed)
    torch.manual_seed(cfg.seed)  # the same initial weights on every (re)start
    model = build_sanpg(cfg.arch(), cfg.pretrained, cfg.decoder_init)

    live: Live | None = None

    def log_epoch(epoch: int, metrics: dict[str, float]) -> None:
        nonlocal live
        if live is None:  # a resumed run (first logged epoch > 0) keeps the earlier curves, up to its checkpoint
            if epoch > 0:
                drop_live_steps_from(LIVE_DIR, epoch)
            live = Live(str(LIVE_DIR), dvcyaml=False, save_dvc_exp=False, resume=epoch > 0)
            live.step = epoch
        for name, value in metrics.items():
            live.log_metric(name, value)
        live.next_step()

    outcome = train_sanpg(model, data, train_idx, held_idx, cfg, OUT / "checkpoint", on_epoch=log_epoch)
    if live is not None:
        live.end()
    mean = mean_texture(data, train_idx)
    save_sanpg(OUT / "model.pt", model, cfg.arch(), mean)

    # Held-out PIT: SAN-PG vs the mean training texture (the floor to beat), all atlas pixels.
    held_targets = textures_tensor(data.textures[data.texture_of[held_idx]])
    floor = float((mean[None] - held_targets).abs().mean())
    final = evaluate_l1(model, data, held_idx, cfg)
    metrics = {
        "units": "mean |x - y| over all atlas pixels and channels, textures in [-1, 1] (x / 127.5 - 1)",
        "heldout_l1": round(final["l1"], 5), "heldout_l1_mean_texture": round(floor, 5),
        "heldout_gain_over_mean_texture": round(1 - final["l1"] / floor, 4),
        "train_l1": round(outcome.history[-1]["train_l1"], 5) if outcome.history else None,
        "n_train_pairs": len(train_idx), "n_heldout_pairs": len(held_idx),
        "n_train_textures": len(np.unique(data.texture_of[train_idx])),
        "n_heldout_textures": len(np.unique(data.texture_of[held_idx])),
        "epochs": cfg.epochs,
    }
    write_json_atomic(METRICS, metrics)
    write_json_atomic(TIMING, {"train_time_s": round(outcome.train_time_s, 1),
                               "images_per_s": round(outcome.images_per_s, 2)})

    shown = held_idx[np.linspace(0, len(held_idx) - 1, min(cfg.n_samples, len(held_idx))).round().astype(int)]
    if len(shown):
        images = torch.stack([eval_transform(cfg.arch().size)(data.images[i]) for i in shown])
        pred = to_uint8(torch.cat(list(predict_textures(model, images, default_device(cfg.device)))))
        rows = [(data.images[i], pred[k], data.textures[data.texture_of[i]]) for k, i in enumerate(shown)]
        write_image(OUT / "samples.png", triplet_grid(rows, [data.stems[i] for i in shown]))
    print(f"train_sanpg: held-out L1 {final['l1']:.4f} (mean texture {floor:.4f}) on {len(held_idx)} pairs of "
          f"{metrics['n_heldout_textures']} unseen textures; {outcome.train_time_s:.0f} s -> {OUT}/model.pt")


if __name__ == "__main__":
    run(main)
