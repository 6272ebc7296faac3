"""Transforms: the uint8 resize, the batch's float conversion (`model_inputs`) and the batch augmentation
(`BatchAugment`), checked against torchvision v2's composed per-sample pipeline draw for draw."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from reid.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BatchAugment,
    ImageTransform,
    crop_source_size,
    dsap_inputs,
    eval_transform,
    model_inputs,
    normalised_images,
    texture_inputs,
    train_transform,
)


def test_eval_transform_resizes_and_normalisation_is_imagenets() -> None:
    image = np.full((50, 20, 3), 255, np.uint8)
    image[..., 1] = 0
    raw = eval_transform((32, 16))(image)
    assert raw.shape == (32, 16, 3) and raw.dtype == torch.uint8
    out = normalised_images(raw)
    assert out.shape == (3, 32, 16) and out.dtype == torch.float32
    expected = [(1 - IMAGENET_MEAN[0]) / IMAGENET_STD[0], -IMAGENET_MEAN[1] / IMAGENET_STD[1],
                (1 - IMAGENET_MEAN[2]) / IMAGENET_STD[2]]
    assert out.mean(dim=(1, 2)).tolist() == pytest.approx(expected, abs=1e-5)
    batch = torch.randint(0, 256, (2, 8, 4, 3), dtype=torch.uint8)
    reference = v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)(v2.ToDtype(torch.float32, scale=True)(batch.permute(0, 3, 1, 2)))
    torch.testing.assert_close(normalised_images(batch), reference, rtol=0, atol=1e-5)


@pytest.mark.parametrize("shape", [(32, 16), (40, 20)])  # without and with a resize
def test_the_output_never_shares_memory_with_the_input(shape) -> None:
    image = np.full((*shape, 3), 7, np.uint8)
    ImageTransform((32, 16))(image)[:] = 0
    assert (image == 7).all()


def test_train_transform_resizes_to_the_crop_source() -> None:
    assert crop_source_size((256, 128), 1.125) == (288, 144) and crop_source_size((64, 32), 1.0) == (64, 32)
    assert train_transform((64, 32))(np.zeros((128, 64, 3), np.uint8)).shape == (72, 36, 3)


def augmented(size, crop_scale, flip_p, erasing_p, images: np.ndarray) -> torch.Tensor:
    """What the engine does: per-sample resize, collate, floats, BatchAugment."""
    batch = torch.stack([train_transform(size, crop_scale=crop_scale)(image) for image in images])
    return BatchAugment(size, crop_scale=crop_scale, flip_p=flip_p, erasing_p=erasing_p)(model_inputs({"image": batch})["image"])


def reference_v2(size: tuple[int, int], *, crop_scale: float, flip_p: float, erasing_p: float) -> v2.Compose:
    """The composed per-sample torchvision v2 pipeline (BoT's order: erasing after normalisation)."""
    return v2.Compose([v2.ToImage(), v2.Resize(crop_source_size(size, crop_scale), antialias=True), v2.RandomCrop(size),
                       v2.RandomHorizontalFlip(flip_p), v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(IMAGENET_MEAN, IMAGENET_STD), v2.RandomErasing(p=erasing_p)])


@pytest.mark.parametrize("size, crop_scale", [((64, 32), 1.125), ((48, 24), 1.0), ((256, 128), 1.125), ((128, 64), 1.0)])
def test_batch_augmentation_equals_torchvision_v2s_composed_pipeline_draw_for_draw(size, crop_scale) -> None:
    images = np.random.default_rng(3).integers(0, 256, (6, 128, 64, 3), dtype=np.uint8)
    theirs = reference_v2(size, crop_scale=crop_scale, flip_p=0.5, erasing_p=0.5)
    for seed in range(4):
        torch.manual_seed(seed)
        ours = augmented(size, crop_scale, 0.5, 0.5, images)
        after = torch.rand(1)  # the RNG advanced by the same draws
        torch.manual_seed(seed)
        reference = torch.stack([theirs(image).as_subclass(torch.Tensor) for image in images])
        assert torch.equal(after, torch.rand(1))
        assert ours.shape == (6, 3, *size)
        torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)
    for image in images:
        reference = v2.Resize(size, antialias=True)(v2.ToImage()(image)).as_subclass(torch.Tensor)
        assert torch.equal(eval_transform(size)(image).permute(2, 0, 1), reference)


def test_flip_mirrors_and_erasing_fills_the_mean_with_probability_p() -> None:
    torch.manual_seed(0)
    image = np.zeros((32, 16, 3), np.uint8)
    image[:, :8] = 255  # left half white
    flipped = augmented((32, 16), 1.0, 1.0, 0.0, image[None])[0]
    assert flipped[0, :, 12:].mean() > flipped[0, :, :4].mean()  # the white half moved to the right
    images = np.full((400, 32, 16, 3), 200, np.uint8)
    clean = normalised_images(torch.from_numpy(images[0]))
    for p, expected in ((0.5, 0.5), (0.0, 0.0)):
        out = augmented((32, 16), 1.0, 0.0, p, images)
        erased = (out != clean).flatten(1).any(1)
        assert erased.float().mean().item() == pytest.approx(expected, abs=0.08)
    assert set(out[erased].unique().tolist()) <= {0.0, clean[0, 0, 0].item(), clean[1, 0, 0].item(), clean[2, 0, 0].item()}


def test_batch_augmentation_is_reproducible_from_the_torch_seed_and_checks_its_input_size() -> None:
    images = np.random.default_rng(0).integers(0, 256, (3, 40, 20, 3), dtype=np.uint8)
    torch.manual_seed(11)
    a = augmented((32, 16), 1.125, 0.5, 0.5, images)
    torch.manual_seed(11)
    assert torch.equal(a, augmented((32, 16), 1.125, 0.5, 0.5, images))
    with pytest.raises(ValueError, match="images are 32x16, a random crop of \\(32, 16\\) at this scale is cut from 36x18"):
        BatchAugment((32, 16))(torch.zeros(2, 3, 32, 16))


def test_dsap_and_texture_inputs() -> None:
    dsap = torch.zeros((2, 24, 8, 8, 3), dtype=torch.uint8)
    dsap[1, 5, 2, 3] = torch.tensor([255, 0, 0])
    x = dsap_inputs(dsap)
    assert x.shape == (2, 24, 3, 8, 8) and x.dtype == torch.float32
    assert x[1, 5, 0, 2, 3] == pytest.approx((1 - IMAGENET_MEAN[0]) / IMAGENET_STD[0], abs=1e-5)
    assert x[0, 0, 0, 0, 0] == pytest.approx(-IMAGENET_MEAN[0] / IMAGENET_STD[0], abs=1e-5)
    atlas = torch.zeros((1, 12, 8, 3), dtype=torch.uint8)
    atlas[0, 0, 0] = 255
    tex = texture_inputs(atlas)
    assert tex.shape == (1, 3, 12, 8) and tex.min() == -1 and tex[0, :, 0, 0].tolist() == [1, 1, 1]


def test_model_inputs_makes_the_floats_of_uint8_pictures_and_passes_the_rest() -> None:
    batch = {"image": torch.full((2, 4, 2, 3), 255, dtype=torch.uint8), "dsap": torch.zeros((2, 24, 4, 4, 3), dtype=torch.uint8),
             "texture": torch.zeros((2, 12, 8, 3), dtype=torch.uint8), "label": torch.tensor([3, 4]),
             "parts": torch.zeros((2, 4, 2), dtype=torch.uint8)}
    out = model_inputs(batch)
    assert torch.equal(out["image"], normalised_images(batch["image"])) and out["image"].shape == (2, 3, 4, 2)
    assert out["dsap"].shape == (2, 24, 3, 4, 4) and out["texture"].shape == (2, 3, 12, 8)
    assert out["label"] is batch["label"] and out["parts"] is batch["parts"]  # not a picture: as it is
    assert model_inputs({"image": out["image"]})["image"] is out["image"]  # a task's own floats: never twice
