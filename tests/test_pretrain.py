"""Pretraining: the pool's identities are disjoint from the world's, and the trunk loads as torchvision weights."""

from pathlib import Path

import numpy as np
import pytest
import torch

from reid.config import ConfigError, from_mapping
from reid.engine.checkpoint import save_weights
from reid.engine.trainer import TrainResult, train_summary
from reid.io import read_image
from reid.modeling.backbone import ResNetTrunk
from reid.pretrain import pool_table
from reid.synth import PoolConfig, WorldConfig, export_market, export_pool
from stages.pretrain import PretrainConfig

WORLD = WorldConfig(seed=3, n_train=3, n_test=3, n_cameras=3, cameras_per_identity=(2, 2), images_per_identity=4,
                    n_distractors=0, n_junk=0, height=64, width=32, tile=8)
POOL = PoolConfig(seed=3, n_identities=5, images_per_identity=4, n_cameras=3, cameras_per_identity=(2, 2),
                  height=64, width=32, tile=8)  # the world's seed on purpose: the pool must still differ


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pool") / "pool"
    export_pool(out, POOL, progress=False, workers=1)
    return out


def test_pool_is_a_labelled_train_folder(pool):
    files = sorted((pool / "bounding_box_train").glob("*.jpg"))
    assert len(files) == POOL.n_identities * POOL.images_per_identity
    assert not (pool / "query").exists() and not (pool / "bounding_box_test").exists()
    table = pool_table(pool, num_workers=1)
    assert set(table["split"].to_pylist()) == {"train"}
    assert sorted(set(table["label"].to_pylist())) == list(range(POOL.n_identities))
    assert all(Path(p).is_file() for p in table["path"].to_pylist())


def test_pool_identities_differ_from_the_world_even_under_the_same_seed(pool, tmp_path):
    world = tmp_path / "world"
    export_market(world, WORLD, progress=False, workers=1)
    world_atlases = [read_image(p) for p in sorted((world / "textures").glob("*.png"))]
    pool_atlases = [read_image(p) for p in sorted((pool / "textures").glob("*.png"))]
    assert len(pool_atlases) == POOL.n_identities
    assert not any(np.array_equal(a, b) for a in pool_atlases for b in world_atlases)


def test_pool_export_is_deterministic(pool, tmp_path):
    again = tmp_path / "again"
    export_pool(again, POOL, progress=False, workers=2)
    for path in sorted(pool.rglob("*.jpg")):
        assert (again / path.relative_to(pool)).read_bytes() == path.read_bytes()


def test_pool_params_validate():
    with pytest.raises(ConfigError, match="n_identities"):
        from_mapping(PoolConfig, {"n_identities": 1}, "synthesize.pretrain")


def test_pretrain_params_reject_a_batch_without_triplets():
    with pytest.raises(ConfigError, match=r"pretrain.train: k must be >= 2 \(batch-hard triplet"):
        from_mapping(PretrainConfig, {"root": "pool", "train": {"k": 1}}, "pretrain")
    with pytest.raises(ConfigError, match=r"pretrain.train: p must be >= 2 \(batch-hard triplet"):
        from_mapping(PretrainConfig, {"root": "pool", "train": {"p": 1}}, "pretrain")


def test_trunk_round_trips_as_a_torchvision_state_dict(tmp_path):
    torch.manual_seed(0)
    trunk = ResNetTrunk("resnet18", None, last_stride=1, depth=4)
    path = tmp_path / "trunk.pt"
    save_weights(path, trunk.library_state())
    state = torch.load(path, weights_only=True)
    assert "conv1.weight" in state and "layer4.1.bn2.running_var" in state and not any(k.startswith("fc.") for k in state)
    loaded = ResNetTrunk("resnet18", str(path), last_stride=1, depth=4)
    for (name, a), b in zip(trunk.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    # the MF-Stream (conv1..conv4_x) takes the first three stages of the same file
    mf = ResNetTrunk("resnet18", str(path), depth=3)
    assert torch.equal(mf.layers[2][0].conv1.weight, trunk.layers[2][0].conv1.weight)


def test_identical_weights_save_to_identical_bytes(tmp_path):
    state = {"w": torch.arange(6.0).view(2, 3)}
    save_weights(tmp_path / "a.pt", state)
    save_weights(tmp_path / "b.pt", state)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


def test_train_summary_records_steps_losses_and_chance():
    result = TrainResult(epochs=3, train_time_s=9.0, images_per_s=10.0, final_loss=1.5,
                         metrics={"loss": 1.5, "loss_id": 1.2, "loss_triplet": 0.3, "lr": 1e-3},
                         first_metrics={"loss": 6.0, "loss_id": 4.6, "loss_triplet": 1.4}, steps=36)
    summary = train_summary(result, num_classes=100)
    assert summary["steps"] == 36 and summary["first_epoch_loss"] == 6.0 and summary["last_epoch_loss"] == 1.5
    assert summary["final_id_loss"] == 1.2 and summary["chance_id_loss"] == pytest.approx(np.log(100), abs=1e-6)
    assert summary["last_epoch_losses"] == {"id": 1.2, "triplet": 0.3}
    assert "train_time_s" not in summary
