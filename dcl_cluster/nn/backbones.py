"""Backbones that map images to feature vectors: torchvision ResNets (with the CIFAR
stem), a small CNN for 8-32 px CPU runs, and an MLP for flat inputs.

Each exposes ``out_dim``, the size of the feature ``h`` it returns.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

from dcl_cluster.nn.pretrained import (
    forward_partly_frozen,
    freeze_all_but_last_blocks,
    keep_in_eval,
    load_weights_file,
)

__all__ = ["ResNet", "SmallCNN", "MLP", "feature_dim"]  # TimmBackbone: dcl_cluster.nn.pretrained

_RESNETS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}


class ResNet(nn.Module):
    """A torchvision ResNet without its classifier, returning pooled features.

    The ResNet of He et al., "Deep Residual Learning for Image Recognition", CVPR 2016;
    the CIFAR stem is the one SimCLR (Chen et al., ICML 2020) uses for 32 px images.

    Args:
        name: ``"resnet18"``, ``"resnet34"`` or ``"resnet50"``.
        cifar_stem: Replace the 7x7 stride-2 first convolution and the max-pool by one
            3x3 stride-1 convolution, as for 32 px images (SimCLR's CIFAR variant).
        weights: torchvision weights passed through (e.g. ``"IMAGENET1K_V1"``) for users
            who have them cached, or the path of a local weights file (a torchvision
            ``state_dict`` such as ``resnet18-f37072fd.pth``, or one that
            :meth:`~dcl_cluster.DebiasedClusterModule.export_backbone` wrote; ``fc`` is
            ignored, every other key must fit); ``None`` (default) trains from scratch and never
            downloads.
        in_channels: Number of input channels.
        trainable_blocks: Train only the last ``N`` of ``layer1..layer4`` (0: frozen); ``None``
            trains everything.

    Examples:
        >>> net = ResNet("resnet18", cifar_stem=True)
        >>> net(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 512])
    """

    def __init__(
        self, name: str = "resnet18", cifar_stem: bool = True, weights: str | None = None, in_channels: int = 3,
        trainable_blocks: int | None = None,
    ) -> None:
        super().__init__()
        if name not in _RESNETS:
            raise ValueError(f"name must be one of {sorted(_RESNETS)}, got {name!r}")
        weights_file = weights if weights is not None and _is_weights_file(weights) else None
        net = getattr(torchvision.models, name)(weights=None if weights_file else weights)
        if cifar_stem or in_channels != 3:
            kernel, stride, padding = (3, 1, 1) if cifar_stem else (7, 2, 3)
            net.conv1 = nn.Conv2d(in_channels, 64, kernel, stride, padding, bias=False)
        if cifar_stem:
            net.maxpool = nn.Identity()
        net.fc = nn.Identity()
        if weights_file:
            load_weights_file(net, weights_file, ignore_prefixes=("fc",))
        self.net = net
        self.out_dim = _RESNETS[name]
        self.trainable_blocks = trainable_blocks
        self._frozen: list[nn.Module] = []
        if trainable_blocks is not None:
            self._frozen = freeze_all_but_last_blocks(net, trainable_blocks)

    def train(self, mode: bool = True) -> ResNet:
        super().train(mode)
        keep_in_eval(self._frozen)  # frozen layers keep their BatchNorm statistics
        return self

    def forward(self, x: Tensor) -> Tensor:
        return forward_partly_frozen(self.net, x, self._frozen, self.trainable_blocks)


def _is_weights_file(weights: str) -> bool:
    """A path (an existing file, a separator or a weights suffix) rather than a torchvision name."""
    text = str(weights)
    return (os.sep in text or "/" in text or text.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt"))
            or Path(text).expanduser().is_file())


class SmallCNN(nn.Module):
    """Four conv-BN-ReLU blocks with max-pooling between them, then global average pooling.

    Sized for 8-32 px images on a CPU: widths ``width, 2 width, 4 width, 8 width``.

    Args:
        in_channels: Number of input channels.
        width: Channels of the first block.

    Examples:
        >>> SmallCNN(in_channels=1, width=8)(torch.randn(2, 1, 8, 8)).shape
        torch.Size([2, 64])
    """

    def __init__(self, in_channels: int = 3, width: int = 32) -> None:
        super().__init__()
        if width < 1 or in_channels < 1:
            raise ValueError(f"in_channels and width must be >= 1, got {in_channels} and {width}")
        widths = [width, 2 * width, 4 * width, 8 * width]
        layers: list[nn.Module] = []
        previous = in_channels
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(previous, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            previous = w
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.net = nn.Sequential(*layers)
        self.out_dim = widths[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class MLP(nn.Module):
    """A multilayer perceptron on flattened inputs (for pre-extracted or tabular features).

    Args:
        input_dim: Number of input values per sample (after flattening).
        hidden_dims: Widths of the hidden Linear-BN-ReLU layers; the last is ``out_dim``.

    Examples:
        >>> MLP(64, (32, 16))(torch.randn(3, 1, 8, 8)).shape
        torch.Size([3, 16])
    """

    def __init__(self, input_dim: int, hidden_dims: tuple[int, ...] | list[int] = (512, 512)) -> None:
        super().__init__()
        if not hidden_dims:
            raise ValueError("hidden_dims must name at least one layer width, got an empty list")
        layers: list[nn.Module] = [nn.Flatten()]
        previous = input_dim
        for w in hidden_dims:
            layers += [nn.Linear(previous, w), nn.BatchNorm1d(w), nn.ReLU(inplace=True)]
            previous = w
        self.net = nn.Sequential(*layers)
        self.out_dim = int(hidden_dims[-1])

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def feature_dim(backbone: nn.Module, in_channels: int, image_size: int) -> int:
    """The backbone's ``out_dim``, or its output width on a dummy batch when it has none.

    Args:
        backbone: Any module mapping ``(B, in_channels, S, S)`` images to features.
        in_channels: Channels of the dummy batch.
        image_size: Side ``S`` of the dummy batch.

    Returns:
        The number of features per image (after flattening).

    Examples:
        >>> feature_dim(nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1)), 3, 32)
        8
        >>> feature_dim(SmallCNN(in_channels=1, width=8), 1, 8)  # uses out_dim
        64
    """
    if hasattr(backbone, "out_dim"):
        return int(backbone.out_dim)
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        out = backbone(torch.zeros(2, in_channels, image_size, image_size))
    backbone.train(was_training)
    return int(out.flatten(1).shape[1])
