"""Pretrained encoders (issue 16): timm models and torchvision ResNets from local weight files
(made here, never downloaded), training only the last blocks, and the errors for a file that
does not fit, a timm name that does not exist and timm missing."""

import sys

import lightning.pytorch as pl
import pytest
import torch
import torchvision

from dcl_cluster import DebiasedClusterModule, LongTailDataModule
from dcl_cluster.nn import ResNet
from dcl_cluster.nn.pretrained import TIMM_EXTRA, TimmBackbone

# ---------------------------------------------------------------- torchvision ResNets

def test_a_torchvision_weights_file_loads_into_the_resnet_backbone(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None).eval()
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")  # with fc, as torchvision ships it
    backbone = ResNet("resnet18", cifar_stem=False, weights=str(tmp_path / "resnet18.pth")).eval()
    reference.fc = torch.nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(backbone(x), reference(x), atol=1e-5)


def test_an_exported_backbone_loads_back(tmp_path):
    module = DebiasedClusterModule.from_preset("dcl", in_channels=3, input_size=32,
                                               backbone=ResNet("resnet18", cifar_stem=True))
    module.export_backbone(str(tmp_path / "backbone.pt"))
    again = ResNet("resnet18", cifar_stem=True, weights=str(tmp_path / "backbone.pt")).eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(again(x), module.backbone.eval()(x), atol=1e-5)


def test_a_weights_file_that_does_not_fit_names_the_first_mismatching_key(tmp_path):
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "imagenet_stem.pth")
    with pytest.raises(ValueError, match=r"key 'conv1.weight' has shape \(64, 3, 7, 7\) in the file, "
                                         r"\(64, 3, 3, 3\) in the model"):
        ResNet("resnet18", cifar_stem=True, weights=str(tmp_path / "imagenet_stem.pth"))
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), tmp_path / "resnet34.pth")
    with pytest.raises(ValueError, match=r"the file's key 'layer1.2.conv1.weight' is not in the model"):
        ResNet("resnet18", cifar_stem=False, weights=str(tmp_path / "resnet34.pth"))
    with pytest.raises(FileNotFoundError, match="weights file .*absent.pth' does not exist"):
        ResNet("resnet18", weights=str(tmp_path / "absent.pth"))


def test_trainable_blocks_trains_only_the_last_layers_and_freezes_batchnorm():
    backbone = ResNet("resnet18", cifar_stem=True, trainable_blocks=1).train()
    trainable = {name.split(".")[1] for name, p in backbone.named_parameters() if p.requires_grad}
    assert trainable == {"layer4"}
    assert not backbone.net.bn1.training and not backbone.net.layer3[0].bn1.training
    assert backbone.net.layer4[0].bn1.training
    frozen = ResNet("resnet18", cifar_stem=True, trainable_blocks=0).train()
    assert not any(p.requires_grad for p in frozen.parameters()) and not frozen.net.bn1.training
    assert not frozen(torch.randn(2, 3, 16, 16)).requires_grad
    with pytest.raises(ValueError, match="trainable_blocks=5 but ResNet has 4 blocks; use 0..4"):
        ResNet("resnet18", trainable_blocks=5)
    with pytest.raises(ValueError, match="trainable_blocks must be None \\(all\\) or an integer >= 0, got -1"):
        ResNet("resnet18", trainable_blocks=-1)


def test_a_frozen_encoder_stays_unchanged_while_the_heads_train():
    torch.manual_seed(0)
    backbone = ResNet("resnet18", cifar_stem=True, in_channels=1, trainable_blocks=0)
    module = DebiasedClusterModule.from_preset("dcl_cluster", backbone=backbone, warmup_epochs=1)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         limit_train_batches=2)
    trainer.fit(module, LongTailDataModule("digits", imbalance_factor=10, batch_size=64))
    after = backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BatchNorm statistics
    assert module.cluster_head.ready


# ---------------------------------------------------------------- timm

def test_a_timm_weights_file_loads_and_its_classifier_is_ignored(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    reference = timm.create_model("test_vit", img_size=32, num_classes=10).eval()
    torch.save({"model": reference.state_dict()}, tmp_path / "vit.pth")  # a DeiT/MAE-style checkpoint
    backbone = TimmBackbone("test_vit", weights=str(tmp_path / "vit.pth"), image_size=32).eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(backbone(x), reference.forward_head(reference.forward_features(x), pre_logits=True),
                          atol=1e-5)
    assert backbone.out_dim == reference.num_features


def test_a_timm_weights_file_of_another_architecture_names_the_first_mismatching_key(tmp_path):
    timm = pytest.importorskip("timm")
    torch.save(timm.create_model("test_vit2", img_size=32).state_dict(), tmp_path / "other.pth")
    misfit = r"does not fit the VisionTransformer: (the file's )?key '[\w.]+' (has shape|is not in the model)"
    with pytest.raises(ValueError, match=misfit):
        TimmBackbone("test_vit", weights=str(tmp_path / "other.pth"), image_size=32)


def test_trainable_blocks_of_a_vit_is_its_last_block_and_final_norm():
    pytest.importorskip("timm")
    backbone = TimmBackbone("test_vit", image_size=32, trainable_blocks=1)
    names = {n for n, p in backbone.named_parameters() if p.requires_grad}
    last = len(backbone.model.blocks) - 1
    assert names and all(n.startswith((f"model.blocks.{last}.", "model.norm.", "model.fc_norm.")) for n in names)
    assert any(n.startswith(f"model.blocks.{last}.") for n in names)
    frozen = TimmBackbone("test_vit", image_size=32, trainable_blocks=0)
    assert not any(p.requires_grad for p in frozen.parameters())


def test_an_unknown_timm_name_suggests_near_names():
    pytest.importorskip("timm")
    with pytest.raises(ValueError, match=r"timm has no model 'resnet_18'; did you mean .*resnet18"):
        TimmBackbone("resnet_18")
    with pytest.raises(ValueError, match="timm has no model 'vit_base_patch16_224x.dino'"):
        TimmBackbone("vit_base_patch16_224x.dino")


def test_timm_missing_says_which_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    expected = r"needs timm, which is not installed: pip install 'dcl-cluster\[pretrained\]'"
    with pytest.raises(ImportError, match=expected):
        TimmBackbone("test_vit")
    assert "dcl-cluster[pretrained]" in TIMM_EXTRA


def test_a_timm_backbone_from_the_command_line_parses():
    pytest.importorskip("timm")
    from dcl_cluster.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--model.backbone=dcl_cluster.nn.TimmBackbone", "--model.backbone.name=test_vit",
              "--model.backbone.trainable_blocks=1", "--model.backbone.image_size=8", "--print_config"])
    assert exit_info.value.code in (0, None)


def test_a_vit_weights_file_of_another_image_size_is_resampled_by_timms_filter(tmp_path):
    timm = pytest.importorskip("timm")
    torch.save(timm.create_model("test_vit", img_size=32).state_dict(), tmp_path / "vit32.pth")
    backbone = TimmBackbone("test_vit", weights=str(tmp_path / "vit32.pth"), image_size=64)
    assert backbone(torch.randn(1, 3, 64, 64)).shape == (1, backbone.out_dim)
