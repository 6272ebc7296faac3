"""The lite DensePose backend: inference contract, loss, training, checkpoints, resume, metrics."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from killutil import Killed, kill_on_call

from reid.config import ConfigError, from_mapping
from reid.densepose.agreement import Reference
from reid.densepose.base import IUVResult
from reid.densepose.lite import (
    LiteArch,
    LiteEstimator,
    build_model,
    load_lite_estimator,
    parts_and_uv,
    save_lite_model,
    to_input,
)
from reid.densepose.lite_train import (
    LiteTask,
    TrainDensePoseConfig,
    epoch_generator,
    evaluate_lite,
    labelled_crops,
    lite_loss,
    load_pairs,
    random_backgrounds,
    random_box_jitter,
    random_clutter,
    random_low_resolution,
    random_recolor,
    silhouette_loss,
    soft_targets,
    train_lite,
    training_arrays,
    weak_arrays,
)
from reid.io import encode_raw, write_image
from reid.parts import N_CLASSES, N_PARTS, decode_iuv, encode_iuv

TINY = dict(epochs=3, batch_size=4, lr=5e-3, width=4, input_height=32, input_width=16, warmup_epochs=0.0,
            device="cpu", num_threads=1)


def fake_samples(n: int, height: int = 48, width: int = 24, seed: int = 0) -> tuple[list, list]:
    """Crops with a few coloured part blocks at random offsets; U runs down each block, V across it."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, size=(N_CLASSES, 3))
    images, iuvs = [], []
    for _ in range(n):
        image = rng.integers(0, 40, size=(height, width, 3)).astype(np.uint8)
        parts = np.zeros((height, width), np.int64)
        u = np.zeros((height, width), np.float32)
        v = np.zeros((height, width), np.float32)
        dy, dx = rng.integers(0, height // 4), rng.integers(0, width // 4)
        for k, part in enumerate((23, 2, 10, 14)):
            r0, r1 = dy + k * height // 6, dy + (k + 1) * height // 6
            c0, c1 = dx, dx + width // 2
            parts[r0:r1, c0:c1] = part
            image[r0:r1, c0:c1] = colours[part]
            u[r0:r1, c0:c1] = np.linspace(0, 1, r1 - r0)[:, None]
            v[r0:r1, c0:c1] = np.linspace(0, 1, c1 - c0)[None, :]
        images.append(image)
        iuvs.append(encode_iuv(parts, u, v))
    return images, iuvs


def tiny_config(**changes) -> TrainDensePoseConfig:
    return dataclasses.replace(TrainDensePoseConfig(**TINY), **changes)


def test_predict_gives_uint8_iuv_of_each_crop_size():
    torch.manual_seed(0)
    arch = LiteArch(width=4, input_height=32, input_width=16)
    estimator = LiteEstimator(build_model(arch), arch, torch.device("cpu"), batch_size=2, progress=False)
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, size=s, dtype=np.uint8) for s in [(40, 20, 3), (128, 64, 3), (301, 97, 3), (7, 5, 3)]]
    results = estimator.predict(crops, [])
    assert len(results) == len(crops)
    for crop, result in zip(crops, results, strict=True):
        assert result.iuv.dtype == np.uint8 and result.iuv.shape == crop.shape
        parts, _, _ = decode_iuv(result.iuv)
        assert parts.max() <= N_PARTS
        assert (result.iuv[parts == 0] == 0).all()
        assert result.found == bool((parts > 0).any())


def test_predict_rejects_non_rgb_crop():
    arch = LiteArch(width=4, input_height=32, input_width=16)
    estimator = LiteEstimator(build_model(arch), arch, torch.device("cpu"), progress=False)
    with pytest.raises(ValueError, match="crop 0"):
        estimator.predict([np.zeros((10, 10), np.uint8)], [])


def test_uv_loss_reads_only_the_ground_truth_parts_channel():
    g = torch.Generator().manual_seed(0)
    b, h, w = 2, 8, 6
    logits = torch.randn(b, N_CLASSES, h, w, generator=g)
    uv = torch.rand(b, 2, N_PARTS, h, w, generator=g)
    parts = torch.randint(0, N_CLASSES, (b, h, w), generator=g)
    u, v = torch.rand(b, h, w, generator=g), torch.rand(b, h, w, generator=g)
    _, _, base = lite_loss(logits, uv, parts, u, v, uv_weight=1.0)

    gt_channel = torch.zeros(b, 2, N_PARTS, h, w, dtype=torch.bool)
    fg = parts > 0
    for i, y, x in zip(*torch.nonzero(fg, as_tuple=True), strict=True):
        gt_channel[i, :, parts[i, y, x] - 1, y, x] = True
    noise = torch.rand(uv.shape, generator=g) * 10
    _, _, other_changed = lite_loss(logits, torch.where(gt_channel, uv, uv + noise), parts, u, v, 1.0)
    _, _, gt_changed = lite_loss(logits, torch.where(gt_channel, uv + noise, uv), parts, u, v, 1.0)
    assert torch.allclose(other_changed, base)
    assert gt_changed > base + 1.0


def test_soft_targets_keep_thin_parts_and_their_uv():
    # 8 x 8 labels -> 2 x 2 cells: a one-label-wide column of part 3 in the left cells
    parts = torch.zeros(1, 8, 8, dtype=torch.long)
    parts[0, :, 1] = 3
    u = torch.zeros(1, 8, 8)
    u[0, :4, 1], u[0, 4:, 1] = 0.2, 0.6
    v = torch.full((1, 8, 8), 0.5)
    shares, uv = soft_targets(parts, u, v, 4)
    assert shares.shape == (1, N_CLASSES, 2, 2) and torch.allclose(shares.sum(1), torch.ones(1, 2, 2))
    assert torch.allclose(shares[0, 3, :, 0], torch.tensor([0.25, 0.25]))  # nearest labels would drop it
    assert (shares[0, 3, :, 1] == 0).all() and torch.allclose(shares[0, 0, :, 1], torch.ones(2))
    assert torch.allclose(uv[0, 0, 2, :, 0], torch.tensor([0.2, 0.6])) and torch.allclose(uv[0, 1, 2, :, 0], torch.tensor([0.5, 0.5]))
    assert (uv[0, :, 2, :, 1] == 0).all()  # absent part: no U/V target (and zero weight)
    with pytest.raises(ValueError, match="integer multiple"):
        lite_loss(torch.zeros(1, N_CLASSES, 3, 3), torch.zeros(1, 2, N_PARTS, 3, 3), parts, u, v, 1.0)


def test_soft_targets_equal_pooled_one_hot_labels():
    g = torch.Generator().manual_seed(0)
    parts = torch.randint(0, N_CLASSES, (3, 12, 8), generator=g, dtype=torch.uint8)
    u, v = torch.rand(3, 12, 8, generator=g), torch.rand(3, 12, 8, generator=g)
    onehot = F.one_hot(parts.long(), N_CLASSES).permute(0, 3, 1, 2).float()
    fg = onehot[:, 1:]
    for factor in (1, 2, 4):
        shares, uv = soft_targets(parts, u, v, factor)
        pooled = F.avg_pool2d(onehot, factor)
        uv_sum = F.avg_pool2d(torch.cat([fg * u[:, None], fg * v[:, None]], 1), factor)
        expected_uv = uv_sum.view(3, 2, N_PARTS, *pooled.shape[-2:]) / pooled[:, None, 1:].clamp(min=1e-6)
        assert torch.allclose(shares, pooled) and torch.allclose(uv, expected_uv, atol=1e-6)


def test_a_pixel_is_body_when_the_body_is_likelier_than_background():
    probs = torch.full((1, N_CLASSES, 1, 3), 1e-6)
    probs[0, [0, 3, 4], 0, 0] = torch.tensor([0.4, 0.35, 0.25])  # body 0.6 split over two parts
    probs[0, [0, 3], 0, 1] = torch.tensor([0.6, 0.4])
    probs[0, 7, 0, 2] = 1.0
    uv = torch.rand(1, 2, N_PARTS, 1, 3)
    parts, u, v = parts_and_uv(probs.log(), uv, (1, 3))
    assert parts.tolist() == [[[3, 0, 7]]]  # a plain argmax would give the first pixel to the background
    assert u[0, 0, 0] == uv[0, 0, 2, 0, 0] and v[0, 0, 2] == uv[0, 1, 6, 0, 2]


def test_uv_loss_is_zero_without_foreground():
    parts = torch.zeros(1, 4, 4, dtype=torch.long)
    total, part_loss, uv_loss = lite_loss(torch.randn(1, N_CLASSES, 4, 4), torch.rand(1, 2, N_PARTS, 4, 4),
                                          parts, torch.zeros(1, 4, 4), torch.zeros(1, 4, 4), 1.0)
    assert uv_loss == 0 and torch.isclose(total, part_loss)


def test_training_overfits_a_tiny_fixed_batch():
    images, iuvs = fake_samples(4)
    config = tiny_config(epochs=25, batch_size=4, lr=2e-2, width=8, recolor=False, box_jitter=0.0)
    data = training_arrays(images, iuvs, config.arch())
    _, result = train_lite(config, data)
    losses = [epoch["loss"] for epoch in result.history]
    assert losses[-1] < 0.3 * losses[0], losses


def test_checkpoint_round_trip_gives_identical_predictions(tmp_path):
    torch.manual_seed(1)
    arch = LiteArch(width=4, input_height=32, input_width=16)
    model = build_model(arch)
    with torch.no_grad():  # non-trivial BN statistics, so a lost buffer would show
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    save_lite_model(model, arch, tmp_path / "lite")
    assert (tmp_path / "lite" / "model.json").is_file()
    save_lite_model(model, arch, tmp_path / "again")
    # bytes follow contents only
    assert (tmp_path / "again" / "model.pt").read_bytes() == (tmp_path / "lite" / "model.pt").read_bytes()
    images, _ = fake_samples(3, 50, 30)
    before = LiteEstimator(model, arch, torch.device("cpu"), progress=False).predict(images, [])
    after = load_lite_estimator(tmp_path / "lite", "cpu", batch_size=2).predict(images, [])
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a.iuv, b.iuv)


def test_loading_a_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing/model.pt"):
        load_lite_estimator(tmp_path / "nothing")
    (tmp_path / "other").mkdir()
    torch.save({}, tmp_path / "other" / "model.pt")
    (tmp_path / "other" / "model.json").write_text('{"format": "reid-sanpg/v1"}')
    with pytest.raises(ValueError, match="other/model.json.*reid-densepose-lite/v1"):
        load_lite_estimator(tmp_path / "other")


def test_box_jitter_moves_crop_and_targets_together():
    images, iuvs = fake_samples(4, 128, 64)
    data = training_arrays(images, iuvs, LiteArch(4, 128, 64))
    # An "image" whose first channel is the U label map at the input size: both must move together.
    x = F.interpolate(data["u"][:, None], size=(128, 64), mode="nearest").repeat(1, 3, 1, 1)
    same_x, same = random_box_jitter(data, x, 0.0, torch.Generator().manual_seed(0))
    assert torch.allclose(same_x, x, atol=1e-5) and torch.equal(same["parts"], data["parts"])

    warped_x, warped = random_box_jitter(data, x, 0.2, torch.Generator().manual_seed(0))
    assert not torch.equal(warped["parts"], data["parts"])
    assert set(warped["parts"].unique().tolist()) <= set(data["parts"].unique().tolist())
    inside = warped["parts"] > 0
    image_u = F.interpolate(warped_x[:, :1], size=data["u"].shape[1:], mode="nearest")[:, 0]  # nearest input pixels
    error = (image_u[inside] - warped["u"][inside]).abs()
    assert (error < 0.1).float().mean() > 0.85  # a misaligned warp scores ~0.15 here


def test_recolor_keeps_range_and_changes_colours():
    x = torch.rand(4, 3, 8, 4)
    y = random_recolor(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert not torch.allclose(y, x)


def test_clutter_is_textured_varied_and_in_range():
    clutter = random_clutter(6, 32, 16, torch.Generator().manual_seed(0))
    assert clutter.shape == (6, 3, 32, 16) and clutter.min() >= 0 and clutter.max() <= 1
    assert (clutter.std((-2, -1)) > 0.01).all()  # not flat, unlike the synthetic world's backgrounds
    assert clutter.mean((-2, -1)).std(0).min() > 0.05  # each sample its own colours
    again = random_clutter(6, 32, 16, torch.Generator().manual_seed(0))
    assert torch.equal(clutter, again)


def test_backgrounds_replace_only_the_background_of_the_chosen_crops():
    images, iuvs = fake_samples(8)
    data = training_arrays(images, iuvs, TrainDensePoseConfig(**TINY).arch())
    x = data["image"].permute(0, 3, 1, 2).float() / 255
    body = (data["parts"] > 0)[:, None].expand_as(x)
    all_swapped = random_backgrounds(x, data["parts"], 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(all_swapped[body], x[body])
    assert (all_swapped != x)[~body].float().mean() > 0.9
    assert torch.equal(random_backgrounds(x, data["parts"], 0.0, torch.Generator().manual_seed(0)), x)


def test_low_resolution_blurs_the_chosen_crops_only():
    x = torch.rand(4, 3, 32, 16)
    assert torch.equal(random_low_resolution(x, 0.0, torch.Generator().manual_seed(0)), x)
    y = random_low_resolution(x, 1.0, torch.Generator().manual_seed(0))
    high = lambda t: (t[..., 1:, :] - t[..., :-1, :]).abs().mean()  # noqa: E731
    assert y.shape == x.shape and high(y) < 0.7 * high(x)


def test_domain_randomisation_off_draws_the_batches_of_before():
    # Off (the default), the epoch's random stream is recolour then box jitter only: the default
    # profile's lite DensePose, IUV and DSAP stay bit-identical.
    images, iuvs = fake_samples(8)
    config = tiny_config(box_jitter=0.1)
    data = training_arrays(images, iuvs, config.arch())
    task = LiteTask(build_model(config.arch()), data, config)
    generator = epoch_generator(config.seed, 0)
    first_four = torch.randperm(8, generator=generator)[:4]
    batch = {k: t[first_four] for k, t in data.items()}
    x = to_input(batch["image"], "cpu", lambda pixels: random_recolor(pixels, generator))
    expected_x, targets = random_box_jitter(batch, x, 0.1, generator)
    first = next(iter(task.batches(0)))
    assert torch.equal(first["image"], expected_x) and torch.equal(first["parts"], targets["parts"])
    randomised = LiteTask(build_model(config.arch()), data, tiny_config(box_jitter=0.1, background_p=1.0,
                                                                        low_res_p=1.0))
    again = next(iter(randomised.batches(0)))
    assert not torch.equal(again["image"], first["image"])


class _Oracle:
    def __init__(self, iuvs):
        self.iuvs = iuvs

    def predict(self, images, paths):
        return [IUVResult(iuv, True) for iuv in self.iuvs]


def test_evaluate_lite_scores_perfect_and_shifted_predictions():
    images, iuvs = fake_samples(3)
    perfect = evaluate_lite(_Oracle(iuvs), images, iuvs)
    assert perfect["part_miou"] == 1.0 and perfect["uv_error"] == 0.0 and perfect["n_images"] == 3
    shifted = evaluate_lite(_Oracle([np.roll(iuv, 3, axis=0) for iuv in iuvs]), images, iuvs)
    assert shifted["part_miou"] < 0.9


def test_labelled_crops_keeps_pid_above_zero_and_reads_gt(tmp_path):
    images, iuvs = fake_samples(3, 40, 20)
    split = tmp_path / "bounding_box_train"
    for stem, image, iuv in zip(["0002_c1s1_000001_00", "0000_c1s1_000002_00", "-1_c2s1_000003_00"], images, iuvs, strict=True):
        write_image(split / f"{stem}.jpg", image)
        (tmp_path / "gt_iuv" / "bounding_box_train").mkdir(parents=True, exist_ok=True)
        (tmp_path / "gt_iuv" / "bounding_box_train" / f"{stem}.png").write_bytes(encode_raw(iuv))
    pairs = labelled_crops(tmp_path, ["bounding_box_train"])
    assert [p.name for p, _ in pairs] == ["0002_c1s1_000001_00.jpg"]
    got_images, got_iuvs = load_pairs(pairs, "test")
    np.testing.assert_array_equal(got_iuvs[0], iuvs[0])
    assert got_images[0].shape == images[0].shape

    (tmp_path / "gt_iuv" / "bounding_box_train" / "0002_c1s1_000001_00.png").unlink()
    with pytest.raises(FileNotFoundError, match="0002_c1s1_000001_00.png"):
        load_pairs(pairs, "test")
    with pytest.raises(FileNotFoundError, match="query"):
        labelled_crops(tmp_path, ["query"])
    # optional splits are read when present, skipped when absent
    assert labelled_crops(tmp_path, ["bounding_box_train"], optional=["densepose_train"]) == pairs
    write_image(tmp_path / "densepose_train" / "0002_c3s1_000001_00.jpg", images[0])
    extra = labelled_crops(tmp_path, ["bounding_box_train"], optional=["densepose_train"])
    assert [p.parent.name for p, _ in extra] == ["bounding_box_train", "densepose_train"]


def test_config_errors_name_the_parameter():
    with pytest.raises(ConfigError, match="train_densepose.*input_height"):
        from_mapping(TrainDensePoseConfig, {"input_height": 100}, "train_densepose")
    with pytest.raises(ConfigError, match="train_densepose.*epochs"):
        from_mapping(TrainDensePoseConfig, {"epochs": 0}, "train_densepose")
    with pytest.raises(ConfigError, match="train_densepose.*background_p"):
        from_mapping(TrainDensePoseConfig, {"background_p": 1.5}, "train_densepose")


STAGE_ARGS = ["--world", "world", "--out", "data/densepose", "--curves", "metrics/train/densepose",
              "--metrics", "metrics/densepose_lite.json"]


def test_stage_after_a_kill_between_logging_and_checkpointing_logs_each_epoch_once(tmp_path, monkeypatch):
    import json

    import reid.engine.loop as loop
    import stages.common
    import stages.train_densepose as stage

    params = {"train_densepose": {**TINY, "epochs": 3}}
    monkeypatch.setattr(stages.common, "read_params", lambda *a, **k: params)
    monkeypatch.setattr(stage, "labelled_crops", lambda *a, **k: [])
    monkeypatch.setattr(stage, "load_pairs", lambda pairs, desc: fake_samples(6))  # train and held-out alike
    monkeypatch.chdir(tmp_path)
    with monkeypatch.context() as patch:
        kill_on_call(patch, loop, "save_checkpoint", 2)  # epoch 2 is logged, its checkpoint never written
        with pytest.raises(Killed):
            stage.main(STAGE_ARGS)
    stage.main(STAGE_ARGS)  # resumes at epoch 2
    curves = sorted((tmp_path / "metrics/train/densepose/plots/metrics").glob("*.tsv"))
    assert [c.stem for c in curves] == ["loss", "loss_part", "loss_uv", "lr"]  # no timing curve
    for curve in curves:
        assert [row.split("\t")[0] for row in curve.read_text().splitlines()[1:]] == ["0", "1", "2"], curve.name
    metrics = json.loads((tmp_path / "metrics/densepose_lite.json").read_text())
    assert metrics["epochs"] == 3 and not {"train_seconds", "eval_seconds", "train_time_s"} & set(metrics)
    assert set(json.loads((tmp_path / "data/densepose/timing.json").read_text())) == {
        "train_time_s", "images_per_s", "eval_time_s"}
    record = json.loads((tmp_path / "metrics/train/densepose.json").read_text())
    assert record["epochs"] == 3 and record["steps"] == 3 * 2 and set(record["last_epoch_losses"]) == {"part", "uv"}
    assert {p.name for p in (tmp_path / "data/densepose").iterdir()} == {"model.pt", "model.json", "checkpoint",
                                                                        "timing.json"}


def test_silhouette_loss_is_small_for_the_right_body_and_large_for_the_wrong_one():
    mask = torch.zeros(2, 8, 4, dtype=torch.uint8)
    mask[:, 2:6, 0:2] = 1  # whole cells of the heads' 2x coarser grid
    body = F.max_pool2d(mask.float()[:, None], 2)[:, 0] > 0  # the heads' cells (labels at 2x)
    logits = torch.zeros(2, N_CLASSES, 4, 2)
    logits[:, 0] = torch.where(body, -8.0, 8.0)  # background likely outside the body, body (part 2) inside
    logits[:, 2] = torch.where(body, 8.0, -8.0)
    right = silhouette_loss(logits, mask)
    wrong = silhouette_loss(-logits, mask)
    assert right < 0.01 < 5 < wrong


def test_weak_arrays_resize_crops_and_masks_and_name_a_mismatched_crop(tmp_path):
    arch = TrainDensePoseConfig(**TINY).arch()
    mask = np.zeros((48, 24), bool)
    mask[10:40, 6:18] = True
    write_image(tmp_path / "a.jpg", np.full((48, 24, 3), 90, np.uint8))
    weak = weak_arrays([Reference("a.jpg", mask, np.full((33, 3), np.nan))], tmp_path, arch)
    assert weak["image"].shape == (1, 32, 16, 3) and weak["image"].dtype == torch.uint8
    assert weak["mask"].shape == (1, 32, 16) and set(weak["mask"].unique().tolist()) == {0, 1}
    with pytest.raises(ValueError, match="a.jpg.*mask"):
        weak_arrays([Reference("a.jpg", mask[:40], np.full((33, 3), np.nan))], tmp_path, arch)


def test_weak_crops_join_each_batch_and_add_a_silhouette_term():
    images, iuvs = fake_samples(8)
    config = tiny_config(weak_reference="ref.parquet", weak_root=".", weak_batch_size=3)
    data = training_arrays(images, iuvs, config.arch())
    weak = {"image": data["image"][:5], "mask": (data["parts"][:5] > 0).to(torch.uint8)}
    task = LiteTask(build_model(config.arch()), data, config, weak)
    batch = next(iter(task.batches(0)))
    assert batch["weak_image"].shape == (3, 3, 32, 16) and batch["weak_mask"].shape == (3, 32, 16)
    terms = task.loss_terms(task.model, batch)
    assert set(terms) == {"part", "uv", "silhouette"} and terms["silhouette"] > 0
    with pytest.raises(ValueError, match="weak_reference and weak_root"):
        tiny_config(weak_reference="ref.parquet").validate()
