"""Stage train_sanpg: SAN-PG (SA-Enc + SA-Dec, L1 only) on the PIT pairs (SPEC §7).

``python -m stages.train_sanpg --out DIR --curves DIR --samples PNG --metrics JSON`` (dvc.yaml passes
the paths): the PIT folder train_sanpg.pit_root (a param) -> the network folder ``--out`` in the layout
of reid.engine.artifacts: model.pt (state dict, tensors only), model.json (format reid-sanpg/v1, the
architecture), mean_texture.pt (the mean training texture: the texture stage's floor),
checkpoint/last.pt (persist: a killed run resumes from its last epoch), timing.json (wall-clock
figures); ``--samples`` (held-out input / predicted / true atlas); DVCLive curves in ``--curves``, the
training record ``<curves>.json``, and ``--metrics`` (held-out L1 in [-1, 1] units beside the
mean-texture floor).
"""

from __future__ import annotations

from reid.engine.artifacts import NetworkFolder, timing_record, train_record, write_records
from reid.io import write_image, write_json_atomic
from reid.sanpg.config import SanPGConfig
from reid.sanpg.data import load_pit, mean_texture, split_by_texture
from reid.sanpg.model import save_sanpg
from reid.sanpg.pictures import sample_grid
from reid.sanpg.train import heldout_summary, initial_model, train_sanpg
from stages.common import load_config, run, stage_parser


def main(argv: list[str] | None = None) -> None:
    args = stage_parser(__doc__, out="network folder to write", curves="DVCLive folder to write (the record: "
                        "<curves>.json)", samples="sample picture to write",
                        metrics="held-out metrics to write").parse_args(argv)
    folder = NetworkFolder.at(args.out, args.curves)
    cfg = load_config(SanPGConfig, "train_sanpg")
    data = load_pit(cfg.pit_root, cfg.tile)
    train_idx, held_idx = split_by_texture(data.texture_of, cfg.val_fraction, cfg.seed)
    model = initial_model(cfg)
    result = train_sanpg(model, data, train_idx, held_idx, cfg, folder.checkpoint, live_dir=folder.curves)
    mean = mean_texture(data, train_idx)
    save_sanpg(folder, model, cfg.arch(), mean)
    summary = heldout_summary(model, data, train_idx, held_idx, cfg, mean, result)
    write_json_atomic(args.metrics, summary)
    write_records(folder, train_record(result), timing_record(result))
    write_image(args.samples, sample_grid(model, data, held_idx, cfg))
    print(f"train_sanpg: held-out L1 {summary['heldout_l1']:.4f} (mean texture {summary['heldout_l1_mean_texture']:.4f}) "
          f"on {len(held_idx)} pairs of {summary['n_heldout_textures']} unseen textures; "
          f"{result.train_time_s:.0f} s -> {folder.model}")


if __name__ == "__main__":
    run(main)
