"""Engine tests with a tiny stand-in model that follows the model interface (no reid.modeling)."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reid.config import ConfigError, from_mapping
from reid.data.torch_dataset import ReidDataset, manifest_split
from reid.data.transforms import train_transform
from reid.engine.checkpoint import checkpoint_file, load_checkpoint
from reid.engine.optim import build_optimizer, build_scheduler, lr_factor
from reid.engine.trainer import TrainConfig, train
from reid.io import write_image, write_parquet_atomic


class TinyModel(nn.Module):
    """Conv + BN + GAP embedding, linear classifier; ID (label-smoothed) + batch-hard triplet losses."""

    inputs: tuple[str, ...] = ()
    feature_dim = 16

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, self.feature_dim, 3, padding=1), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten())
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def forward_features(self, image: torch.Tensor) -> torch.Tensor:
        return self.body(image)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        feat = self.body(batch["image"])
        return {"feat": feat, "logits": self.classifier(feat)}

    def losses(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        labels = batch["label"]
        dist = torch.cdist(outputs["feat"], outputs["feat"])
        same = labels[:, None] == labels[None, :]
        hardest_pos = (dist * same).max(1).values
        hardest_neg = dist.masked_fill(same, float("inf")).min(1).values
        return {"id": F.cross_entropy(outputs["logits"], labels, label_smoothing=0.1),
                "triplet": F.relu(hardest_pos - hardest_neg + 0.3).mean()}

    def inference_model(self) -> nn.Module:  # image -> embedding, as the real models' (reid.modeling.cost counts it)
        return self.body


def make_manifest(root, n_ids: int = 8, per_id: int = 3, size: tuple[int, int] = (24, 12)) -> pa.Table:
    """Tiny identity-coloured PNG crops + a manifest with relative paths and `root` metadata."""
    rng = np.random.default_rng(0)
    rows = []
    for pid in range(n_ids):
        colour = rng.integers(0, 256, 3)
        for j in range(per_id):
            image = np.clip(colour + rng.normal(0, 30, (*size, 3)), 0, 255).astype(np.uint8)
            name = f"{pid:04d}_c{j}_{j:02d}.png"
            write_image(root / "images" / name, image)
            rows.append({"image_id": name[:-4], "split": "train", "pid": pid, "camid": j, "path": f"images/{name}",
                         "height": size[0], "width": size[1], "label": pid})
    table = pa.Table.from_pylist(rows)
    write_parquet_atomic(root / "manifest.parquet", table, {"root": str(root)})
    return manifest_split(root / "manifest.parquet", ["train"])


def tiny_config(**overrides) -> TrainConfig:
    base = dict(epochs=4, p=4, k=2, lr=1e-2, warmup_epochs=2, step_epochs=3, height=16, width=8,
                num_workers=0, seed=3, device="cpu")
    return TrainConfig(**{**base, **overrides})


def new_model(seed: int = 0) -> TinyModel:
    torch.manual_seed(seed)
    return TinyModel(num_classes=8)


@pytest.fixture(autouse=True)
def _outside_the_repo(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # DVCLive looks for a DVC repo from the working directory


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> ReidDataset:
    manifest = make_manifest(tmp_path_factory.mktemp("data"))
    return ReidDataset(manifest, train_transform((16, 8)))


def test_lr_schedule_follows_the_paper() -> None:
    cfg = TrainConfig()  # paper defaults: 8e-4, warm-up 20 epochs from x0.01, x0.5 every 40
    model = nn.Linear(2, 2)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg)
    lrs = []
    for _ in range(130):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(8e-6)
    assert lrs[10] == pytest.approx(8e-6 + (8e-4 - 8e-6) * 10 / 20)
    assert lrs[20] == pytest.approx(8e-4) and lrs[39] == pytest.approx(8e-4)
    assert lrs[40] == pytest.approx(4e-4) and lrs[79] == pytest.approx(4e-4)
    assert lrs[80] == pytest.approx(2e-4) and lrs[120] == pytest.approx(1e-4)
    assert lr_factor(319, cfg) == pytest.approx(0.5 ** 7)
    assert opt.param_groups[0]["weight_decay"] == 5e-4 and isinstance(opt, torch.optim.Adam)


def test_head_lr_mult_gives_the_heads_their_own_scheduled_lr() -> None:
    """Two groups: the backbone at lr, the rest at lr x head_lr_mult, both following the schedule; at 1
    one group, as before."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    cfg = TrainConfig(lr=1e-3, warmup_epochs=1, warmup_factor=0.1, step_epochs=2, gamma=0.1)
    assert len(build_optimizer(model, cfg).param_groups) == 1
    opt = build_optimizer(model, cfg, head_lr_mult=10, backbone=model[0].parameters())
    sched = build_scheduler(opt, cfg)
    trunk, head = opt.param_groups
    assert {id(p) for p in trunk["params"]} == {id(p) for p in model[0].parameters()}
    assert len(head["params"]) == 2  # the linear layer's weight and bias
    lrs = []
    for _ in range(3):
        lrs.append((trunk["lr"], head["lr"]))
        opt.step()
        sched.step()
    assert lrs == [pytest.approx((1e-4, 1e-3)), pytest.approx((1e-3, 1e-2)), pytest.approx((1e-4, 1e-3))]
    with pytest.raises(ConfigError, match="train: head_lr_mult must lie in"):
        from_mapping(TrainConfig, {"head_lr_mult": 0}, "train")


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match="train: p must be >= 2"):
        from_mapping(TrainConfig, {"p": 0}, "train")
    with pytest.raises(ConfigError, match="train: epochs must be >= 1"):
        from_mapping(TrainConfig, {"epochs": 0}, "train")
    with pytest.raises(ConfigError, match="train.amp"):
        from_mapping(TrainConfig, {"amp": "fp8"}, "train")


@pytest.mark.parametrize("key,why", [("p", "2 identities per batch"), ("k", "2 images per identity")])
def test_config_rejects_a_batch_without_triplets(key, why) -> None:
    # P = 1 has no negatives, K = 1 no positives: the batch-hard triplet loss would be silently 0.
    with pytest.raises(ConfigError, match=f"train: {key} must be >= 2 \\(batch-hard triplet needs >= {why}\\), got 1"):
        from_mapping(TrainConfig, {key: 1}, "train")
    assert from_mapping(TrainConfig, {key: 2}, "train").size == (256, 128)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_finished_run_is_not_retrained_and_other_settings_restart(dataset, tmp_path) -> None:
    model = new_model()
    train(model, dataset, tiny_config(epochs=1), tmp_path)
    done = _state(model)
    again = new_model(seed=1)
    train(again, dataset, tiny_config(epochs=1), tmp_path)  # nothing left to do: weights come from the checkpoint
    assert all(torch.equal(v, done[k]) for k, v in _state(again).items())

    other = new_model()
    with pytest.warns(UserWarning, match="other settings"):
        train(other, dataset, tiny_config(epochs=1, lr=5e-3), tmp_path)
    assert any(not torch.equal(v, done[k]) for k, v in _state(other).items())
    rows = (tmp_path / "live" / "plots" / "metrics" / "loss.tsv").read_text().splitlines()
    assert len(rows) == 2  # the restarted run wiped the old curve


def test_max_batches_per_epoch_caps_the_epoch(dataset, tmp_path) -> None:
    result = train(new_model(), dataset, tiny_config(epochs=1, max_batches_per_epoch=1), tmp_path)
    assert result.metrics["images_per_s"] * result.metrics["epoch_time_s"] == pytest.approx(8)


TRAIN_ARGS = ["baseline", "--manifest", "data/manifest.parquet", "--dsap", "data/dsap.parquet",
              "--texture", "data/texture.parquet", "--out", "data/models/baseline", "--curves", "metrics/train/baseline"]


def test_train_stage_writes_outputs_and_continues(tmp_path, monkeypatch) -> None:
    import yaml

    import stages.train as stage

    make_manifest(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(stage, "build_model", lambda name, num_classes, cfg: TinyModel(num_classes))
    params = {"train": {"epochs": 1, "p": 4, "k": 2, "height": 32, "width": 16, "num_workers": 0, "device": "cpu"},
              "models": {"baseline": {"backbone": "resnet18", "pretrained": None}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    stage.main(TRAIN_ARGS)
    summary = json.loads((tmp_path / "metrics/train/baseline.json").read_text())
    assert summary["epochs"] == 1 and summary["steps"] > 0 and math.isfinite(summary["last_epoch_loss"])
    assert "images_per_s" not in summary  # timings live apart from the tracked metrics
    assert json.loads((tmp_path / "data/models/baseline/timing.json").read_text())["images_per_s"] > 0
    weights = torch.load(tmp_path / "data/models/baseline/model.pt", weights_only=True)
    assert set(weights) == set(TinyModel(8).state_dict())

    params["train"]["epochs"] = 2  # e.g. `dvc exp run -S train.epochs=2`: continues from epoch 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    stage.main(TRAIN_ARGS)
    rows = (tmp_path / "metrics/train/baseline/plots/metrics/loss.tsv").read_text().splitlines()
    assert [r.split("\t")[0] for r in rows[1:]] == ["0", "1"]
    resumed = json.loads((tmp_path / "metrics/train/baseline.json").read_text())
    assert resumed["steps"] == 2 * summary["steps"]  # counted across the resumption
    assert resumed["first_epoch_loss"] == summary["first_epoch_loss"]  # epoch 1's loss, kept by the checkpoint

    make_manifest(tmp_path / "data", n_ids=8, per_id=2)  # new data (e.g. another world seed): start over
    with pytest.warns(UserWarning, match="other settings"):
        stage.main(TRAIN_ARGS)


def test_checkpoint_past_the_requested_epochs_is_not_used(dataset, tmp_path) -> None:
    train(new_model(), dataset, tiny_config(epochs=2), tmp_path)
    with pytest.warns(UserWarning, match="past epochs=1"):
        result = train(new_model(), dataset, tiny_config(epochs=1), tmp_path)
    assert result.epochs == 1 and int(load_checkpoint(checkpoint_file(tmp_path / "checkpoint"))["epoch"]) == 1


def test_identical_trainings_write_identical_files(tmp_path, monkeypatch) -> None:
    """model.pt, the curves and the summary are byte-identical across two identical runs of the stage
    (in two folders: neither the path nor the run's timings leak into them)."""
    import hashlib

    import yaml

    import stages.train as stage

    monkeypatch.setattr(stage, "build_model", lambda name, num_classes, cfg: TinyModel(num_classes))
    params = {"train": {"epochs": 2, "p": 4, "k": 2, "height": 32, "width": 16, "num_workers": 0, "device": "cpu",
                        "seed": 5},
              "models": {"baseline": {"backbone": "resnet18", "pretrained": None}}}
    outputs = ["data/models/baseline/model.pt", "metrics/train/baseline.json",
               *[f"metrics/train/baseline/plots/metrics/{n}.tsv" for n in ("loss", "loss_id", "loss_triplet", "lr")],
               "metrics/train/baseline/metrics.json"]
    digests = []
    for run in ("a", "b"):
        folder = tmp_path / run
        make_manifest(folder / "data")
        (folder / "params.yaml").write_text(yaml.safe_dump(params))
        monkeypatch.chdir(folder)
        stage.main(TRAIN_ARGS)
        assert sorted(p.name for p in (folder / "metrics/train/baseline/plots/metrics").iterdir()) == [
            "loss.tsv", "loss_id.tsv", "loss_triplet.tsv", "lr.tsv"]  # no timing curves
        digests.append({name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in outputs})
    assert digests[0] == digests[1]
