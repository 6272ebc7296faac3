"""SAN-PG: PIT data and texture normalisation, held-out split, training, resume, the texture cache, metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from killutil import Killed, kill_on_call, live_steps

import reid.engine.loop
from reid.config import ConfigError, from_mapping
from reid.data.manifest import SCHEMA, write_manifest
from reid.data.transforms import model_inputs, normalised_images
from reid.engine.artifacts import NetworkFolder
from reid.io import parquet_metadata, write_image
from reid.parts import atlas_shape
from reid.sanpg.cache import TextureScore, build_texture_cache, read_texture
from reid.sanpg.config import SanPGConfig, TextureConfig
from reid.sanpg.data import load_pit, mean_texture, split_by_texture, textures_tensor, to_uint8
from reid.sanpg.inference import mean_texture_l1, texture_l1
from reid.sanpg.model import FORMAT, build_sanpg, load_sanpg, save_sanpg
from reid.sanpg.train import SanPGTask, train_sanpg

TILE = 4  # atlas 24 x 16
TINY = dict(backbone="resnet18", pretrained=None, tile=TILE, width_mult=0.125, height=32, width=16, epochs=3,
            batch_size=4, lr=3e-3, crop_scale=1.0, val_fraction=0.25, device="cpu", eval_batch_size=8, n_samples=2)


def tiny_config(**overrides) -> SanPGConfig:
    return from_mapping(SanPGConfig, {**TINY, **overrides}, "train_sanpg")


def make_pit(root: Path, n_textures: int = 4, poses: int = 3, seed: int = 0) -> Path:
    """A PIT folder: each texture a few flat colour blocks; its 'person images' show the colours, shifted."""
    rng = np.random.default_rng(seed)
    for t in range(n_textures):
        texture = np.repeat(np.repeat(rng.integers(0, 256, size=(6, 4, 3)), TILE, 0), TILE, 1).astype(np.uint8)
        for k in range(poses):
            image = np.roll(np.repeat(np.repeat(texture[::TILE, ::TILE], 8, 0), 4, 1), k, axis=0)[:32, :16]
            stem = f"t{t:02d}_{k:02d}"
            write_image(root / "images" / f"{stem}.png", np.ascontiguousarray(image))
            write_image(root / "textures" / f"{stem}.png", texture)
    return root


def test_texture_normalisation_is_exactly_invertible():
    atlas = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    x = textures_tensor(atlas[None])
    assert x.shape == (1, 3, 16, 16) and x.min() == -1.0 and x.max() == 1.0
    # the engine's mapping of the datasets' uint8 atlases
    assert torch.equal(x[0], model_inputs({"texture": torch.from_numpy(atlas)[None]})["texture"][0])
    assert np.array_equal(to_uint8(x)[0], atlas)
    # rounding, not truncation; out-of-range values clip
    assert to_uint8(torch.tensor([[[-2.0]], [[0.0]], [[2.0]]]))[0, 0].tolist() == [0, 128, 255]
    assert to_uint8(torch.full((3, 1, 1), 10.4 / 127.5 - 1))[0, 0, 0] == 10


def test_load_pit_pairs_images_with_their_textures(tmp_path):
    data = load_pit(make_pit(tmp_path), TILE, progress=False)
    assert len(data) == 12 and data.textures.shape == (4, *atlas_shape(TILE))
    assert data.texture_of.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert data.images[0].shape == (32, 16, 3) and data.stems[4] == "t01_01"
    with pytest.raises(ValueError, match=r"textures/t00_00.png.*train_sanpg.tile"):
        load_pit(tmp_path, 8, progress=False)


def test_held_out_split_is_disjoint_by_texture():
    texture_of = np.repeat(np.arange(10), 5)
    train, held = split_by_texture(texture_of, 0.2, seed=3)
    assert len(held) == 10 and len(train) == 40 and not set(train) & set(held)
    assert not set(texture_of[train]) & set(texture_of[held])  # no held-out texture seen in training
    assert sorted(np.concatenate([train, held])) == list(range(50))
    again, _ = split_by_texture(texture_of, 0.2, seed=3)
    assert np.array_equal(train, again)
    assert any(not np.array_equal(held, split_by_texture(texture_of, 0.2, seed=s)[1]) for s in range(4, 8))
    with pytest.raises(ValueError, match="at least 2"):
        split_by_texture(np.zeros(5, np.int64), 0.2, seed=0)


def test_mean_texture_floor_hand_checked(tmp_path):
    data = load_pit(make_pit(tmp_path), TILE, progress=False)
    data.textures[0], data.textures[1] = 0, 255  # one black, one white texture
    idx = np.array([0, 3, 4, 5])  # 1 pair of black, 3 of white: mean grey level 191.25 -> 0.5
    mean = mean_texture(data, idx)
    assert mean.shape == (3, 24, 16) and torch.allclose(mean, torch.full_like(mean, 0.5))
    assert mean_texture_l1(mean, data, np.array([0, 3])) == pytest.approx(1.0)  # |0.5 + 1| and |0.5 - 1|
    score = TextureScore(mean.permute(1, 2, 0).double().numpy())
    white, black = np.full((24, 16, 3), 255, np.uint8), np.zeros((24, 16, 3), np.uint8)
    score.update(white, white, pid=7)  # pseudo exact; floor |0.5 - 1| = 0.5
    score.update(white, black, pid=8)  # pseudo off by 2; floor |0.5 + 1| = 1.5
    summary = score.summary()
    assert summary["l1_pseudo"] == 1.0 and summary["l1_mean_texture"] == 1.0 and summary["n_identities"] == 2
    assert texture_l1(black, np.full_like(black, 51)) == pytest.approx(0.4)


def test_config_errors_name_the_parameter():
    with pytest.raises(ConfigError, match="train_sanpg.*val_fraction"):
        tiny_config(val_fraction=1.0)
    with pytest.raises(ConfigError, match="height and width must be multiples of 16"):
        tiny_config(height=30)


def test_training_reduces_l1_on_a_fixed_batch(tmp_path):
    data = load_pit(make_pit(tmp_path, n_textures=2, poses=2), TILE, progress=False)
    data.images = [np.repeat(np.repeat(im, 2, 0), 2, 1) for im in data.images]  # 64 x 32: BN sees 8x4 maps
    cfg = tiny_config(epochs=6, batch_size=4, lr=3e-3, height=64, width=32)  # one batch: 6 steps on it
    torch.manual_seed(0)
    model = build_sanpg(cfg.arch(), decoder_init="pytorch")
    result = train_sanpg(model, data, np.arange(4), np.arange(2), cfg)
    losses = [h["loss_l1"] for h in result.history]
    assert len(losses) == 6 and min(losses[-2:]) < 0.85 * losses[0]
    assert all(h["loss"] == h["loss_l1"] and 0 < h["heldout_l1"] < 2 for h in result.history)


def test_task_batches_cover_the_train_pairs_once_per_epoch(tmp_path):
    data = load_pit(make_pit(tmp_path), TILE, progress=False)
    train = np.arange(1, 11)
    cfg = tiny_config(batch_size=4)
    task = SanPGTask(build_sanpg(cfg.arch()), data, train, cfg)
    torch.manual_seed(0)
    batches = task.batches(0)
    assert len(batches) == 3
    built = list(batches)
    assert [len(b["image"]) for b in built] == [4, 4, 2]
    assert built[0]["image"].shape == (4, 32, 16, 3) and built[0]["texture"].shape == (4, 24, 16, 3)
    assert built[0]["image"].dtype == built[0]["texture"].dtype == torch.uint8  # the engine makes the floats
    # every train pair once, each with its own (never augmented) atlas
    shown = torch.cat([b["texture"] for b in built]).numpy()
    assert sorted(shown.reshape(10, -1).tolist()) == sorted(data.targets(train).reshape(10, -1).tolist())


def test_decoder_init_choice():
    arch = tiny_config().arch()
    torch.manual_seed(0)
    official = build_sanpg(arch)
    torch.manual_seed(0)
    reset = build_sanpg(arch, decoder_init="pytorch")
    w_official, w_reset = official.decoder.final[1].weight, reset.decoder.final[1].weight
    assert w_reset.std() > 10 * w_official.std()  # Xavier gain 0.02 vs PyTorch's default
    assert torch.equal(official.encoder.stem[0].weight, reset.encoder.stem[0].weight)  # encoder untouched
    with pytest.raises(ValueError, match="decoder_init"):
        build_sanpg(arch, decoder_init="zeros")


@pytest.mark.slow
class _Images(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[i]}


def test_texture_cache_schema_raw_round_trip_and_scores(tmp_path):
    cfg = tiny_config()
    torch.manual_seed(0)
    model = build_sanpg(cfg.arch()).eval()
    images = torch.randint(0, 256, (5, 32, 16, 3), dtype=torch.uint8)  # as the datasets yield them
    manifest = pa.table({"image_id": ["query/a", "query/b", "gallery/c", "gallery/d", "train/e"],
                         "split": ["query", "query", "gallery", "gallery", "train"],
                         "pid": pa.array([1, 2, 0, 1, 3], pa.int32())})
    truth_atlas = np.full(atlas_shape(TILE), 200, np.uint8)
    mean = torch.zeros(3, 24, 16)
    out = tmp_path / "texture.parquet"
    cache = build_texture_cache(model, _Images(images), manifest, TextureConfig(batch_size=2, n_samples=2), out,
                                tile=TILE, metadata={"model": "m"}, device=torch.device("cpu"),
                                truth=lambda pid: truth_atlas, mean=mean, progress=False)
    table = pq.read_table(out)
    assert cache.n_cached == 5 and table.num_rows == 5
    assert table.schema.field("texture").type == pa.binary(int(np.prod(atlas_shape(TILE))))
    meta = parquet_metadata(out)
    assert meta["tile"] == str(TILE) and meta["model"] == "m"
    assert table["image_id"].to_pylist() == manifest["image_id"].to_pylist()
    with torch.no_grad():
        expected = to_uint8(model(normalised_images(images)))
    stored = np.stack([read_texture(b, TILE) for b in table["texture"].to_pylist()])
    assert np.array_equal(stored, expected)  # exact, RGB order kept
    # what the training engine makes of the bytes gives back the network's output
    with torch.no_grad():
        target = model_inputs({"texture": torch.from_numpy(stored[:1])})["texture"]
        assert torch.allclose(target[0], model(normalised_images(images[:1]))[0], atol=0.5 / 127.5 + 1e-6)
    # scored rows: query/gallery with pid > 0 (rows 0, 1, 3)
    summary = cache.score.summary()
    assert summary["n_images"] == 3 and summary["n_identities"] == 2
    want = np.mean([texture_l1(expected[i], truth_atlas) for i in (0, 1, 3)])
    assert summary["l1_pseudo"] == pytest.approx(want, abs=1e-5)
    assert summary["l1_mean_texture"] == pytest.approx(200 / 127.5 - 1, abs=1e-5)
    assert sorted(cache.samples) and all(s.shape == atlas_shape(TILE) for s in cache.samples.values())


def test_model_file_round_trip(tmp_path):
    cfg = tiny_config()
    torch.manual_seed(1)
    model = build_sanpg(cfg.arch()).eval()
    mean = torch.rand(3, 24, 16) * 2 - 1
    folders = [NetworkFolder.at(tmp_path / name, tmp_path / "curves") for name in ("a", "b")]
    for folder in folders:
        save_sanpg(folder, model, cfg.arch(), mean)
    for name in ("model.pt", "model.json", "mean_texture.pt"):  # bytes follow contents only
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    state = torch.load(folders[0].model, weights_only=True)
    assert state.keys() == model.state_dict().keys()  # the network's state dict, nothing beside it
    assert json.loads(folders[0].info.read_text())["format"] == FORMAT
    loaded, arch, loaded_mean = load_sanpg(tmp_path / "a")
    assert arch == cfg.arch() and torch.equal(loaded_mean, mean) and not loaded.training
    x = torch.randn(2, 3, 32, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    with pytest.raises(FileNotFoundError, match="missing/model.json.*train_sanpg"):
        load_sanpg(tmp_path / "missing")
    folders[1].info.write_text('{"format": "reid-model/2"}')
    with pytest.raises(ValueError, match="b/model.json.*reid-sanpg/v1"):
        load_sanpg(tmp_path / "b")
    torch.save({"mean_texture": torch.zeros(3, 8, 8)}, tmp_path / "a" / "mean_texture.pt")
    with pytest.raises(ValueError, match="mean_texture.pt"):
        load_sanpg(tmp_path / "a")


SANPG_ARGS = ["--out", "data/sanpg", "--curves", "metrics/train/sanpg", "--samples", "data/sanpg/samples.png",
              "--metrics", "metrics/sanpg.json"]


@pytest.mark.slow
def test_stages_end_to_end(tmp_path, monkeypatch):
    """train_sanpg then texture on a tiny PIT and a tiny Market-layout world with true textures."""
    import stages.common
    import stages.texture
    import stages.train_sanpg

    make_pit(tmp_path / "pit")
    world = tmp_path / "market"
    rows, rng = [], np.random.default_rng(0)
    for i, (split, pid) in enumerate([("train", 1), ("query", 2), ("gallery", 2), ("gallery", 0), ("gallery", -1)]):
        write_image(world / split / f"{i}.png", rng.integers(0, 256, size=(32, 16, 3), dtype=np.uint8))
        rows.append({"image_id": f"{split}/{i}", "split": split, "pid": pid, "camid": 0, "path": f"{split}/{i}.png",
                     "height": 32, "width": 16, "label": 0 if split == "train" else -1})
    write_image(world / "textures" / "0002.png", np.full(atlas_shape(TILE), 90, np.uint8))
    write_manifest(tmp_path / "manifest.parquet", pa.Table.from_pylist(rows, SCHEMA), dataset="synthetic", root=world)

    params = {"train_sanpg": {**TINY, "epochs": 1, "pit_root": str(tmp_path / "pit")}, "texture": {"batch_size": 2, "device": "cpu"}}
    monkeypatch.setattr(stages.common, "read_params", lambda *a, **k: params)
    monkeypatch.chdir(tmp_path)
    stages.train_sanpg.main(SANPG_ARGS)
    metrics = json.loads((tmp_path / "metrics/sanpg.json").read_text())
    assert metrics["n_heldout_textures"] == 1 and metrics["n_train_pairs"] == 9 and metrics["epochs"] == 1
    assert 0 < metrics["heldout_l1"] < 2 and 0 < metrics["heldout_l1_mean_texture"] < 2
    assert 0 < metrics["train_l1"] < 2
    for name in ("model.pt", "model.json", "mean_texture.pt", "samples.png", "checkpoint/last.pt"):
        assert (tmp_path / "data/sanpg" / name).is_file(), name
    assert (tmp_path / "metrics/train/sanpg/metrics.json").is_file()
    record = json.loads((tmp_path / "metrics/train/sanpg.json").read_text())
    assert record["epochs"] == 1 and record["steps"] == 3 and record["last_epoch_losses"].keys() == {"l1"}
    assert not {"train_time_s", "images_per_s"} & (set(metrics) | set(record))  # timings live apart
    assert json.loads((tmp_path / "data/sanpg/timing.json").read_text())["images_per_s"] > 0

    stages.texture.main(["--manifest", "manifest.parquet", "--sanpg", "data/sanpg", "--out", "data/texture.parquet",
                         "--samples", "data/texture_samples.png", "--timing", "data/texture_timing.json",
                         "--metrics", "metrics/texture.json"])
    table = pq.read_table(tmp_path / "data/texture.parquet")
    assert table["image_id"].to_pylist() == [r["image_id"] for r in rows]
    assert read_texture(table["texture"][0].as_py(), TILE).shape == atlas_shape(TILE)
    tex = json.loads((tmp_path / "metrics/texture.json").read_text())
    assert tex["n_cached"] == 5 and tex["n_images"] == 2 and tex["n_identities"] == 1  # pid 2 only
    assert not {"seconds", "time_s", "images_per_s"} & set(tex)
    assert json.loads((tmp_path / "data/texture_timing.json").read_text())["images_per_s"] > 0
    assert (tmp_path / "data/texture_samples.png").is_file()


@pytest.mark.slow
def test_a_kill_between_logging_and_checkpointing_logs_each_epoch_once(tmp_path, monkeypatch):
    import stages.common
    import stages.train_sanpg

    make_pit(tmp_path / "pit", poses=2)
    params = {"train_sanpg": {**TINY, "epochs": 3, "pit_root": str(tmp_path / "pit")}}
    monkeypatch.setattr(stages.common, "read_params", lambda *a, **k: params)
    monkeypatch.chdir(tmp_path)
    with monkeypatch.context() as patch:
        kill_on_call(patch, reid.engine.loop, "save_checkpoint", 2)  # epoch 2 is logged, its checkpoint never written
        with pytest.raises(Killed):
            stages.train_sanpg.main(SANPG_ARGS)
    stages.train_sanpg.main(SANPG_ARGS)  # resumes at epoch 2
    steps = live_steps(tmp_path / "metrics/train/sanpg")
    assert sorted(steps) == ["heldout_l1", "loss", "loss_l1", "lr"]  # no timing curves
    assert all(column == [0, 1, 2] for column in steps.values()), steps
