"""Train/eval transforms: shapes, normalisation, erasing with probability p; DSAP and texture tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from reid.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    dsap_tensor,
    eval_transform,
    texture_tensor,
    train_transform,
)


def test_eval_transform_resizes_and_normalises() -> None:
    image = np.full((50, 20, 3), 255, np.uint8)
    image[..., 1] = 0
    out = eval_transform((32, 16))(image)
    assert out.shape == (3, 32, 16) and out.dtype == torch.float32
    expected = [(1 - IMAGENET_MEAN[0]) / IMAGENET_STD[0], -IMAGENET_MEAN[1] / IMAGENET_STD[1],
                (1 - IMAGENET_MEAN[2]) / IMAGENET_STD[2]]
    assert out.mean(dim=(1, 2)).tolist() == pytest.approx(expected, abs=1e-5)


def test_train_transform_shape_and_flip() -> None:
    torch.manual_seed(0)
    image = np.zeros((40, 20, 3), np.uint8)
    image[:, :10] = 255  # left half white
    t = train_transform((32, 16), crop_scale=1.0, flip_p=1.0, erasing_p=0.0)
    out = t(image)
    assert out.shape == (3, 32, 16)
    assert out[0, :, 12:].mean() > out[0, :, :4].mean()  # white half moved to the right
    t_crop = train_transform((32, 16))
    assert all(t_crop(image).shape == (3, 32, 16) for _ in range(5))


def test_random_erasing_applied_with_probability_p() -> None:
    torch.manual_seed(0)
    image = np.full((32, 16, 3), 200, np.uint8)
    clean = eval_transform((32, 16))(image)
    n = 400
    for p, expected in ((0.5, 0.5), (0.0, 0.0)):
        t = train_transform((32, 16), crop_scale=1.0, flip_p=0.0, erasing_p=p)
        erased = sum(not torch.allclose(t(image), clean) for _ in range(n)) / n
        assert erased == pytest.approx(expected, abs=0.08)


def test_train_transform_is_reproducible_from_the_torch_seed() -> None:
    image = np.random.default_rng(0).integers(0, 256, (40, 20, 3), dtype=np.uint8)
    t = train_transform((32, 16))
    torch.manual_seed(11)
    a = [t(image) for _ in range(3)]
    torch.manual_seed(11)
    b = [t(image) for _ in range(3)]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_dsap_and_texture_tensors() -> None:
    dsap = np.zeros((24, 8, 8, 3), np.uint8)
    dsap[5, 2, 3] = (255, 0, 0)
    x = dsap_tensor(dsap)
    assert x.shape == (24, 3, 8, 8)
    assert x[5, 0, 2, 3] == pytest.approx((1 - IMAGENET_MEAN[0]) / IMAGENET_STD[0], abs=1e-5)
    assert x[0, 0, 0, 0] == pytest.approx(-IMAGENET_MEAN[0] / IMAGENET_STD[0], abs=1e-5)
    atlas = np.zeros((12, 8, 3), np.uint8)
    atlas[0, 0] = 255
    tex = texture_tensor(atlas)
    assert tex.shape == (3, 12, 8) and tex.min() == -1 and tex[:, 0, 0].tolist() == [1, 1, 1]


def reference_v2(size: tuple[int, int], *, crop_scale: float, flip_p: float, erasing_p: float, train: bool) -> v2.Compose:
    """The composed torchvision v2 pipeline that reid.data.transforms.ImageTransform runs without a Compose."""
    h, w = size
    steps = [v2.ToImage()]
    if train and crop_scale > 1:
        steps += [v2.Resize((round(h * crop_scale), round(w * crop_scale)), antialias=True), v2.RandomCrop((h, w))]
    else:
        steps += [v2.Resize((h, w), antialias=True)]
    if train:
        steps.append(v2.RandomHorizontalFlip(flip_p))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if train and erasing_p > 0:
        steps.append(v2.RandomErasing(p=erasing_p))
    return v2.Compose(steps)


@pytest.mark.parametrize("size, crop_scale", [((64, 32), 1.125), ((48, 24), 1.0), ((256, 128), 1.125)])
def test_the_transforms_equal_torchvision_v2s_composed_pipeline_draw_for_draw(size, crop_scale) -> None:
    images = np.random.default_rng(3).integers(0, 256, (6, 128, 64, 3), dtype=np.uint8)
    ours = train_transform(size, crop_scale=crop_scale, flip_p=0.5, erasing_p=0.5)
    theirs = reference_v2(size, crop_scale=crop_scale, flip_p=0.5, erasing_p=0.5, train=True)
    for seed in range(4):
        torch.manual_seed(seed)
        a = [ours(image) for image in images]
        after = torch.rand(1)  # the RNG advanced by the same draws
        torch.manual_seed(seed)
        b = [theirs(image) for image in images]
        assert torch.equal(after, torch.rand(1))
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, rtol=0, atol=1e-5)
    for image in images:
        torch.testing.assert_close(eval_transform(size)(image), reference_v2(size, crop_scale=1, flip_p=0, erasing_p=0,
                                                                            train=False)(image), rtol=0, atol=1e-5)
