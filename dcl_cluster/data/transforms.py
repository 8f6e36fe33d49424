"""The two SimCLR views and the deterministic view: per-resolution presets, fast on CPU.

A view is made in two stages so that the loader stays far ahead of a CPU training run:

1. per image (in the dataset, on uint8 ``(C, H, W)`` tensors, ``torchvision.transforms.v2``):
   the geometric part (random resized crop, horizontal flip, small affine jitter);
2. per batch (in the collate function): the photometric part (colour jitter with
   probability ``jitter_p``, grayscale, Gaussian blur), then normalisation. Every image still
   draws its own factors, op order and coin flips, with the same distributions and formulas
   as ``v2.ColorJitter`` / ``v2.RandomGrayscale`` / ``v2.GaussianBlur``; only the per-image
   Python overhead is gone (colour jitter per image costs ~0.4 ms at 32 px).

Presets (``augment=``; ``"auto"`` picks ``"digits"`` for the digits source or images of 16 px
or less, else ``"simclr"``, whose parameters follow the image size):

| preset    | crop scale  | flip | affine       | jitter (b, c, s, h), p 0.8 | gray | blur (p, kernel) |
|-----------|-------------|------|--------------|----------------------------|------|------------------|
| digits8   | (0.6, 1)    | no   | 10 deg, 10 % | (0.4, 0.4, 0, 0)           | --   | --               |
| simclr32  | (0.08, 1)   | yes  | --           | (0.4, 0.4, 0.4, 0.1)       | 0.2  | --               |
| simclr96  | (0.08, 1)   | yes  | --           | (0.4, 0.4, 0.4, 0.1)       | 0.2  | (0.5, 9)         |
| simclr224 | (0.08, 1)   | yes  | --           | (0.8, 0.8, 0.8, 0.2)       | 0.2  | (0.5, 23)        |
| none      | whole image | no   | --           | --                         | --   | --               |

``"simclr"`` means simclr32 below 64 px, simclr96 below 160 px, simclr224 above. One-channel
images drop saturation, hue and grayscale. ``crop_min_scale`` overrides the crop's lower
bound. The SimCLR rows follow SimCLR / DCL (Chuang et al. 2020); digits8 is mild on purpose:
a flip or a strong crop changes a digit's identity.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

AUGMENTS = ("auto", "simclr", "digits", "none", "digits8", "simclr32", "simclr96", "simclr224")

NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "stl10": ((0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
"""Per-dataset channel mean and std (in [0, 1] units) used to normalise every view."""


@dataclass(frozen=True)
class ViewPreset:
    """The parameters of one augmentation recipe (see the module docstring for the table)."""

    name: str
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: bool = True
    affine_degrees: float = 0.0
    affine_translate: float = 0.0
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.0
    blur_kernel: int = 0
    blur_sigma: tuple[float, float] = (0.1, 2.0)


PRESETS: dict[str, ViewPreset] = {
    "digits8": ViewPreset("digits8", crop_scale=(0.6, 1.0), crop_ratio=(0.8, 1.25), hflip=False,
                          affine_degrees=10.0, affine_translate=0.1,
                          jitter=(0.4, 0.4, 0.0, 0.0), grayscale_p=0.0),
    "simclr32": ViewPreset("simclr32"),
    "simclr96": ViewPreset("simclr96", blur_p=0.5, blur_kernel=9),
    "simclr224": ViewPreset("simclr224", jitter=(0.8, 0.8, 0.8, 0.2), blur_p=0.5,
                            blur_kernel=23),
    "none": ViewPreset("none", crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip=False,
                       jitter=(0.0, 0.0, 0.0, 0.0), jitter_p=0.0, grayscale_p=0.0),
}


def resolve_preset(augment: str, dataset: str, image_size: int, num_channels: int,
                   crop_min_scale: float | None = None) -> ViewPreset:
    """Choose the view preset for a dataset and resolution.

    Args:
        augment: one of ``AUGMENTS``.
        dataset: source name (``"digits"`` makes ``"auto"`` choose ``"digits8"``).
        image_size: side of the views in pixels.
        num_channels: 1 drops saturation, hue and grayscale.
        crop_min_scale: overrides the lower bound of the crop scale.

    Examples:
        >>> resolve_preset("auto", "cifar10", 32, 3).name
        'simclr32'
        >>> resolve_preset("auto", "digits", 8, 1).hflip
        False
    """
    if augment not in AUGMENTS:
        raise ValueError(f"augment must be one of {list(AUGMENTS)}, got {augment!r}")
    if augment == "auto":
        augment = "digits" if dataset == "digits" or image_size <= 16 else "simclr"
    if augment == "digits":
        augment = "digits8"
    elif augment == "simclr":
        augment = "simclr32" if image_size < 64 else "simclr96" if image_size < 160 else "simclr224"
    preset = PRESETS[augment]
    if num_channels == 1:
        b, c, _, _ = preset.jitter
        preset = dataclasses.replace(preset, jitter=(b, c, 0.0, 0.0), grayscale_p=0.0)
    if crop_min_scale is not None:
        if not 0 < crop_min_scale <= 1:
            raise ValueError(f"crop_min_scale must be in (0, 1], got {crop_min_scale!r}")
        preset = dataclasses.replace(preset, crop_scale=(crop_min_scale, 1.0))
    return preset


def geometric_transform(preset: ViewPreset, image_size: int) -> v2.Compose:
    """Per-image random part of a view: uint8 ``(C, H, W)`` in, uint8 ``(C, S, S)`` out."""
    ops = [v2.RandomResizedCrop(image_size, scale=preset.crop_scale, ratio=preset.crop_ratio,
                                antialias=True)]
    if preset.hflip:
        ops.append(v2.RandomHorizontalFlip())
    if preset.affine_degrees or preset.affine_translate:
        t = preset.affine_translate
        ops.append(v2.RandomAffine(degrees=preset.affine_degrees, translate=(t, t),
                                   interpolation=v2.InterpolationMode.BILINEAR))
    return v2.Compose(ops)


def eval_transform(image_size: int, native_size: int | None = None) -> v2.Compose:
    """Deterministic view: resize the shorter side and centre-crop to ``image_size``.

    At 160 px and above the resize goes to ``image_size / 0.875`` first (the ImageNet
    protocol, 256 -> 224); when ``native_size == image_size`` the image is left as it is.
    """
    if native_size == image_size:
        return v2.Compose([v2.Identity()])
    resize = round(image_size / 0.875) if image_size >= 160 else image_size
    return v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop(image_size)])


def _gray(x: torch.Tensor) -> torch.Tensor:
    """Luma of a float batch ``(B, C, H, W)`` -> ``(B, 1, H, W)``, torchvision's weights."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    f = factor.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * other).clamp_(0.0, 1.0)


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    delta = maxc - minc
    s = torch.where(maxc > 0, delta / maxc.clamp_min(1e-12), torch.zeros_like(maxc))
    d = torch.where(delta > 0, delta, torch.ones_like(delta))
    h = torch.where(maxc == r, (g - b) / d,
                    torch.where(maxc == g, 2.0 + (b - r) / d, 4.0 + (r - g) / d))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    return torch.stack((h, s, maxc), 1)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(1)
    h6 = h * 6.0
    i = torch.floor(h6)
    f = h6 - i
    i = i.long() % 6
    p = (v * (1 - s)).clamp(0, 1)
    q = (v * (1 - s * f)).clamp(0, 1)
    t = (v * (1 - s * (1 - f))).clamp(0, 1)
    table = torch.stack((torch.stack((v, q, p, p, t, v), 1),    # r for i = 0..5
                         torch.stack((t, v, v, q, p, p), 1),    # g
                         torch.stack((p, p, t, v, v, q), 1)), 1)  # b: (B, 3, 6, H, W)
    return table.gather(2, i[:, None, None].expand(-1, 3, 1, -1, -1)).squeeze(2)


def adjust_hue(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Shift the hue of each image of a float RGB batch by its own ``factor`` in [-0.5, 0.5]."""
    if x.shape[1] == 1:
        return x
    hsv = _rgb_to_hsv(x)
    hsv[:, 0] = (hsv[:, 0] + factor.view(-1, 1, 1)) % 1.0
    return _hsv_to_rgb(hsv)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Per-image brightness factor, as ``v2.functional.adjust_brightness``."""
    return (x * factor.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Per-image contrast factor, as ``v2.functional.adjust_contrast``."""
    return _blend(x, _gray(x).mean(dim=(1, 2, 3), keepdim=True), factor)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Per-image saturation factor, as ``v2.functional.adjust_saturation``."""
    return x if x.shape[1] == 1 else _blend(x, _gray(x), factor)


def gaussian_blur(x: torch.Tensor, kernel_size: int, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image Gaussian blur (reflect padding), as ``v2.functional.gaussian_blur``."""
    b, c, h, w = x.shape
    lim = (kernel_size - 1) / (2.0 * math.sqrt(2.0))
    grid = torch.linspace(-lim, lim, kernel_size, dtype=x.dtype)
    kernel = torch.softmax(-(grid[None] / sigma[:, None].to(x.dtype)) ** 2, dim=1)  # (B, k)
    kernel = kernel.repeat_interleave(c, dim=0)                                    # (B*C, k)
    pad = kernel_size // 2
    y = F.pad(x.reshape(1, b * c, h, w), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, kernel[:, None, None, :], groups=b * c)
    y = F.conv2d(y, kernel[:, None, :, None], groups=b * c)
    return y.reshape(b, c, h, w)


_JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def _uniform(n: int, low: float, high: float) -> torch.Tensor:
    return torch.empty(n).uniform_(low, high)


class BatchPhotometric:
    """Per-image photometric augmentation of a float batch ``(B, C, H, W)`` in [0, 1].

    Each image independently: with probability ``jitter_p`` colour jitter (its own
    brightness, contrast, saturation and hue factors, in its own random order, as
    ``v2.ColorJitter``), then grayscale with probability ``grayscale_p``, then a Gaussian
    blur with probability ``blur_p`` and ``sigma ~ U(blur_sigma)``. Uses torch's global RNG.

    Examples:
        >>> aug = BatchPhotometric(PRESETS["simclr32"])
        >>> aug(torch.rand(4, 3, 32, 32)).shape
        torch.Size([4, 3, 32, 32])
    """

    def __init__(self, preset: ViewPreset):
        self.preset = preset

    def _jitter(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        ops = []  # (op, per-image factor): factors in [max(0, 1 - s), 1 + s], hue in [-s, s]
        for strength, fn in zip(self.preset.jitter, _JITTER_OPS, strict=True):
            if strength > 0:
                low, high = (-strength, strength) if fn is adjust_hue else \
                    (max(0.0, 1 - strength), 1 + strength)
                ops.append((fn, _uniform(n, low, high)))
        if not ops:
            return x
        order = torch.argsort(torch.rand(n, len(ops)), dim=1)       # (n, ops): own order each
        for slot in range(len(ops)):
            for k, (fn, factor) in enumerate(ops):
                rows = (order[:, slot] == k).nonzero().squeeze(1)
                if rows.numel():
                    x[rows] = fn(x[rows], factor[rows])
        return x

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        p = self.preset
        n = x.shape[0]
        rows = (torch.rand(n) < p.jitter_p).nonzero().squeeze(1)
        if rows.numel() and any(p.jitter):
            x[rows] = self._jitter(x[rows])
        if p.grayscale_p > 0 and x.shape[1] == 3:
            rows = (torch.rand(n) < p.grayscale_p).nonzero().squeeze(1)
            if rows.numel():
                x[rows] = _gray(x[rows]).expand(-1, 3, -1, -1)
        if p.blur_p > 0 and p.blur_kernel > 1:
            rows = (torch.rand(n) < p.blur_p).nonzero().squeeze(1)
            if rows.numel():
                sigma = _uniform(rows.numel(), *p.blur_sigma)
                x[rows] = gaussian_blur(x[rows], p.blur_kernel, sigma)
        return x


class Normalize:
    """uint8 batch ``(B, C, H, W)`` -> float, scaled to [0, 1] and standardised per channel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


@contextmanager
def single_threaded():
    """Run small batch ops on one thread (no-op inside DataLoader workers, which have one).

    With ``num_workers=0`` the collate runs in the training process; splitting its small
    ops over intra-op threads gains nothing and, on a busy CPU, was measured 30x slower.
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextmanager
def seeded(seed: int | None):
    """Draw from the global torch random state seeded with ``seed``, restoring it after;
    ``None`` leaves the global state alone."""
    if seed is None:
        yield
        return
    generator = torch.default_generator  # what torchvision's random draws use
    state = generator.get_state()
    generator.manual_seed(seed)  # a few microseconds; torch.random.fork_rng costs ~0.1 ms
    try:
        yield
    finally:
        generator.set_state(state)


class ViewCollate:
    """Collate ``(views_uint8, y, index)`` samples into ``([x_a, x_b(, x_clean)], y, index)``,
    or ``({"a", "b", ...}, y, index)`` when the samples carry named views.

    The augmented views (the first ``num_augmented``, and a ``"neighbor"``) get the batched
    photometric augmentation; every view is normalised. Picklable, so it runs inside
    DataLoader workers.
    """

    def __init__(self, photometric: BatchPhotometric, normalize: Normalize, num_augmented: int = 2):
        self.photometric = photometric
        self.normalize = normalize
        self.num_augmented = num_augmented

    def __call__(self, samples):
        views, ys, idx, seeds = zip(*samples, strict=True)
        named = isinstance(views[0], dict)
        keys = list(views[0]) if named else list(range(len(views[0])))
        augmented = set(keys[: self.num_augmented]) | {"neighbor"}
        out = {}
        batch_seed = None if seeds[0] is None else int(np.random.SeedSequence(seeds).generate_state(1)[0])
        with single_threaded(), seeded(batch_seed):
            for k in keys:
                x = self.normalize.to_unit(torch.stack([v[k] for v in views]))  # (B, C, S, S)
                if k in augmented:
                    x = self.photometric(x)
                out[k] = self.normalize(x)
        batch = out if named else list(out.values())
        return batch, torch.as_tensor(ys, dtype=torch.int64), torch.as_tensor(idx, dtype=torch.int64)


def strong_transform(preset: ViewPreset, image_size: int) -> v2.Compose:
    """SCAN's strong view (METHOD.md 2.6): the geometric view, then RandAugment (4 ops) and a
    cutout of half the image side, on uint8 ``(C, H, W)``."""
    return v2.Compose([geometric_transform(preset, image_size), v2.RandAugment(num_ops=4),
                       v2.RandomErasing(p=1.0, scale=(0.25, 0.25), ratio=(1.0, 1.0), value=0)])


class EvalCollate:
    """Collate ``(x_uint8, y[, index])`` samples into normalised float batches."""

    def __init__(self, normalize: Normalize):
        self.normalize = normalize

    def __call__(self, samples):
        fields = list(zip(*samples, strict=True))
        with single_threaded():
            x = self.normalize(self.normalize.to_unit(torch.stack(fields[0])))
        rest = [torch.as_tensor(f, dtype=torch.int64) for f in fields[1:]]
        return (x, *rest)
