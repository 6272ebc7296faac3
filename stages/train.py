"""Train stage: ``python -m stages.train <name> --manifest ... --out DIR --curves DIR`` (or under ``torchrun``).

dvc.yaml passes the paths: ``--manifest`` (its train rows are read), ``--dsap`` / ``--texture`` (the DSAP
and pseudo-texture caches, read when the model needs them: their metadata give the network's DSAP side
S and texture tile T, no params repeat them). Reads params ``train`` (engine knobs) and
``models.<name>`` (the model's config). Writes the network folder ``--out``: model.pt (final weights,
tensors only) + model.json (the network's one description: config, input size, S / T; what the
features stage and `reid` rebuild it from; and its ``cost``, the parameters and FLOPs per image of the
training and inference graphs at the training input size, reid.modeling.cost), checkpoint/ (resume
state; a killed run continues from its last epoch), timing.json; the DVCLive dir ``--curves`` and the
summary ``<curves>.json``.
Multi-GPU: ``torchrun --nproc_per_node N -m stages.train <name> ...`` with the same arguments.
"""

from __future__ import annotations

import torch

from reid.config import ConfigError
from reid.data.torch_dataset import ReidDataset, cache_shapes, manifest_split
from reid.data.transforms import train_transform
from reid.engine import distributed
from reid.engine.artifacts import NetworkFolder, write_records
from reid.engine.checkpoint import save_weights
from reid.engine.trainer import TrainConfig, train, train_summary, train_timing
from reid.export import model_info, write_model_info
from reid.io import file_sha256
from reid.modeling import MODEL_INPUTS, MODEL_NAMES
from reid.modeling.backbone import pretrained_file
from reid.modeling.build import build_model
from reid.modeling.config import ModelConfig, check_input_size
from reid.modeling.cost import model_cost
from stages.common import PARAMS_FILE, load_config, read_params, run, stage_parser


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(__doc__, manifest="manifest to read", dsap="DSAP cache (read by dsa, dsa_san)",
                          texture="pseudo-texture cache (read by san, dsa_san)", out="network folder to write",
                          curves="DVCLive folder to write (the summary: <curves>.json)")
    parser.add_argument("name", choices=MODEL_NAMES, help="model name, e.g. baseline, baseline2b, dsa")
    args = parser.parse_args(argv)
    name, network = args.name, NetworkFolder.at(args.out, args.curves)
    params = read_params()
    cfg = load_config(TrainConfig, "train", params)
    try:
        check_input_size(cfg.height, cfg.width, "train.")
    except ValueError as err:
        raise ConfigError(f"{PARAMS_FILE}: {err}") from None
    model_cfg = load_config(ModelConfig, f"models.{name}", params)

    manifest = manifest_split(args.manifest, ["train"])
    num_classes = len(set(manifest["label"].to_pylist()))
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank and every (re)start
    shapes = cache_shapes(MODEL_INPUTS[name], args.dsap, args.texture)  # S / T as the caches hold them
    model = build_model(name, num_classes, model_cfg, **shapes)
    caches = {"dsap_path": args.dsap if "dsap" in model.inputs else None,
              "texture_path": args.texture if "texture" in model.inputs else None}
    dataset = ReidDataset(manifest, train_transform(cfg.size, crop_scale=cfg.crop_scale), **caches)
    # A checkpoint left by a run on other data or another model config must not be resumed.
    trunk = [f] if (f := pretrained_file(model_cfg.backbone, model_cfg.pretrained)) is not None else []  # its initial weights
    data_key = [file_sha256(p) for p in (args.manifest, *caches.values(), *trunk) if p is not None]
    result = train(model, dataset, cfg, network.root, live_dir=network.curves,
                   run_id=f"{name}|{num_classes}|{model_cfg}|{data_key}")

    if distributed.current().is_main:
        save_weights(network.model, model.state_dict())
        # After the weights are saved, on a CPU copy: counting cannot touch what was trained.
        cost = model_cost(model, cfg.size, **shapes)
        write_model_info(network.root, model_info(name, model_cfg, cfg.size, **shapes, cost=cost))
        write_records(network, train_summary(result, num_classes),
                      train_timing(result, distributed.current().world_size))
        print(f"train {name}: {result.steps} steps, {result.train_time_s:.1f} s, {result.images_per_s:.1f} images/s, "
              f"loss {result.metrics.get('loss', float('nan')):.4f} (first epoch "
              f"{result.first_metrics.get('loss', float('nan')):.4f}) -> {network.model}")
    distributed.cleanup()


if __name__ == "__main__":
    run(main)
