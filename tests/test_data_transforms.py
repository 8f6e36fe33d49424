"""View transforms: batched photometric ops equal torchvision's per image; presets are sane."""

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from dcl_cluster.data.transforms import (
    PRESETS,
    BatchPhotometric,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    gaussian_blur,
    resolve_preset,
)


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 12, 12, generator=g)
    x[0] = 0.5                      # grey: hue undefined
    x[1, :, :4] = 0.0               # black rows
    x[2, 0] = x[2, 1]               # two equal channels (hue ties)
    return x


@pytest.mark.parametrize("ours, theirs", [(adjust_brightness, TF.adjust_brightness),
                                          (adjust_contrast, TF.adjust_contrast),
                                          (adjust_saturation, TF.adjust_saturation)])
def test_batched_blend_ops_equal_torchvision_per_image(images, ours, theirs):
    factors = torch.tensor([0.0, 0.5, 1.0, 1.4, 2.0, 0.7])
    expected = torch.stack([theirs(images[i], float(f)) for i, f in enumerate(factors)])
    torch.testing.assert_close(ours(images.clone(), factors), expected)


def test_batched_hue_equals_torchvision_per_image(images):
    factors = torch.tensor([-0.5, -0.2, 0.0, 0.1, 0.3, 0.5])
    expected = torch.stack([TF.adjust_hue(images[i], float(f)) for i, f in enumerate(factors)])
    torch.testing.assert_close(adjust_hue(images.clone(), factors), expected, atol=1e-5, rtol=0)


def test_batched_blur_equals_torchvision_per_image(images):
    sigmas = torch.tensor([0.1, 0.5, 1.0, 1.5, 2.0, 0.3])
    expected = torch.stack([TF.gaussian_blur(images[i], [5, 5], [float(s)] * 2)
                            for i, s in enumerate(sigmas)])
    torch.testing.assert_close(gaussian_blur(images, 5, sigmas), expected)


def test_one_channel_contrast_equals_torchvision_and_saturation_is_identity():
    x = torch.rand(3, 1, 8, 8)
    f = torch.tensor([0.3, 1.0, 1.6])
    expected = torch.stack([TF.adjust_contrast(x[i], float(f[i])) for i in range(3)])
    torch.testing.assert_close(adjust_contrast(x.clone(), f), expected)
    assert torch.equal(adjust_saturation(x, f), x)


def test_photometric_draws_different_factors_per_image():
    torch.manual_seed(0)
    x = torch.full((64, 3, 4, 4), 0.5)
    x[:, 0] = 0.8
    out = BatchPhotometric(PRESETS["simclr32"])(x.clone())
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1
    per_image = out.mean(dim=(1, 2, 3))
    assert per_image.unique().numel() > 32, "each image draws its own jitter"
    unchanged = (out == x).flatten(1).all(1).float().mean()
    assert 0.0 < unchanged < 0.5, "jitter p = 0.8: some images, not most, pass untouched"


def test_photometric_of_the_none_preset_is_the_identity():
    x = torch.rand(8, 3, 6, 6)
    assert torch.equal(BatchPhotometric(PRESETS["none"])(x.clone()), x)


@pytest.mark.parametrize("dataset, size, channels, name", [
    ("digits", 8, 1, "digits8"), ("cifar10", 32, 3, "simclr32"), ("stl10", 96, 3, "simclr96"),
    ("imagenet_lt", 224, 3, "simclr224"), ("npz", 12, 1, "digits8")])
def test_auto_preset_follows_dataset_and_resolution(dataset, size, channels, name):
    assert resolve_preset("auto", dataset, size, channels).name == name


def test_digits_preset_never_flips_and_has_no_blur_or_grayscale():
    p = resolve_preset("auto", "digits", 8, 1)
    assert not p.hflip and p.blur_p == 0 and p.grayscale_p == 0
    assert p.crop_scale[0] >= 0.5 and p.jitter[2:] == (0.0, 0.0)


def test_blur_only_from_96_px_and_one_channel_drops_colour_ops():
    assert resolve_preset("simclr", "npz", 32, 3).blur_p == 0
    assert resolve_preset("simclr", "npz", 96, 3).blur_p > 0
    p = resolve_preset("simclr", "npz", 32, 1)
    assert p.grayscale_p == 0 and p.jitter[2:] == (0.0, 0.0) and p.hflip


def test_crop_min_scale_overrides_and_bad_augment_is_rejected():
    assert resolve_preset("simclr", "cifar10", 32, 3, crop_min_scale=0.2).crop_scale == (0.2, 1.0)
    with pytest.raises(ValueError, match=r"augment must be one of \[.*'simclr'"):
        resolve_preset("strong", "cifar10", 32, 3)
