"""The catalogue of bad inputs: every error the folder guides list (docs/guides/cluster-folder.md,
"Errors you may meet"; own-image-folder.md) and those of issue 26, run through ``dcl-cluster``
in process. Each gives one short paragraph that names the value (no traceback without
DCL_CLUSTER_DEBUG=1), exits non-zero, leaves no run folder and writes nothing: the folder the
run or ``predict`` would write into holds no file afterwards.

About 30 s on 2 CPU cores: most cases stop while parsing or at setup, one in a loader worker.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dcl_cluster.cli import main

REPO = Path(__file__).resolve().parents[1]
METHOD = REPO / "examples" / "configs" / "method" / "dcl_cluster.yaml"
N_IMAGES = 24  # 22 train, 2 held out (test_fraction 0.1)


def write_photos(folder: Path, n: int, size: int = 16, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return write_photos(tmp_path_factory.mktemp("photos"), N_IMAGES)


def fit_args(data_dir: Path, root: Path, *extra: str) -> list[str]:
    """The photo-folder route (``dataset: images``, the dcl_cluster method), small and on the CPU."""
    return ["fit", "--config", str(METHOD), "--data.dataset=images", f"--data.data_dir={data_dir}",
            "--data.image_size=16", "--data.batch_size=8", "--data.num_workers=0", "--data.test_fraction=0.1",
            "--model.num_clusters=auto", "--model.max_clusters=4", "--model.backbone_width=8",
            "--model.warmup_epochs=1", "--trainer.max_epochs=2", "--trainer.accelerator=cpu",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--report=false",
            f"--trainer.default_root_dir={root}", *extra]


def fake_checkpoint(path: Path) -> Path:
    """A file that passes the checkpoint check (a dict with a state_dict): enough for the checks
    that come before the model is loaded."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {}}, path)
    return path


def imagenet_resnet18_weights(path: Path) -> Path:
    import torchvision

    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)  # conv1 is 7x7: ImageNet's stem
    return path


def truncate_all_but_the_first(folder: Path) -> Path:
    for path in sorted(folder.glob("*.png"))[1:]:  # the first decodes: setup reads its size
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    return folder


def _no_timm(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError


def _offline(monkeypatch, tmp_path) -> None:
    """No network, whatever the machine has, and empty caches: nothing can be downloaded."""
    import huggingface_hub.constants

    import dcl_cluster.nn.pretrained as pretrained

    monkeypatch.setattr(pretrained, "network_unreachable", lambda host, timeout=3.0: "test: no network")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


# (id, what the case needs, the arguments after the base ones, the message it must give). Each
# `expect` is a piece of the message the guide shows for that input, where the guide lists it.
CASES = [
    ("no image files", "empty", [], "dataset 'images': no image files under"),
    ("one image", "one", [], "holds 1 image(s); clustering needs at least 3"),
    ("max_clusters 1", "photos", ["--model.max_clusters=1"], "max_clusters must be an integer >= 2, got 1"),
    ("max_clusters above the images", "photos", ["--model.max_clusters=50"],
     "max_clusters=50 is above the number of training images"),
    ("num_clusters unknown", "photos", ["--model.num_clusters=null"],
     "num_clusters unknown: the dataset has no labels"),
    ("num_clusters above the images", "photos", ["--model.num_clusters=50"],
     "num_clusters=50 is more than the"),
    ("ImageNet weights with the CIFAR stem", "photos+resnet",
     ["--model.backbone=dcl_cluster.nn.ResNet", "--model.backbone.name=resnet18"],
     "does not fit the ResNet: key 'conv1.weight' has shape (64, 3, 7, 7) in the file"),
    ("timm name typo", "photos", ["--model.backbone=dcl_cluster.nn.TimmBackbone", "--model.backbone.name=resnet_18"],
     "timm has no model 'resnet_18'; did you mean resnet18"),
    ("timm not installed", "photos+no-timm",
     ["--model.backbone=dcl_cluster.nn.TimmBackbone", "--model.backbone.name=resnet18"],
     "TimmBackbone needs timm, which is not installed"),
    ("missing weights file", "photos", ["--model.backbone=dcl_cluster.nn.TimmBackbone",
                                        "--model.backbone.name=resnet18", "--model.backbone.weights=/no/such.pth"],
     "weights file '/no/such.pth' does not exist"),
    ("pretrained offline", "photos+offline", ["--model.backbone=dcl_cluster.nn.TimmBackbone",
                                              "--model.backbone.name=resnet18", "--model.backbone.pretrained=true"],
     "pretrained=True: timm downloads the weights of 'resnet18', but there is no network"),
    ("batch larger than the images", "photos", ["--data.batch_size=128"], "set batch_size <= 22"),
    ("warm-up as long as the run", "photos", ["--model.warmup_epochs=2"], "warmup_epochs=2 leaves no epoch"),
    ("truncated images met in a loader worker", "truncated", ["--data.num_workers=1", "--data.skip_corrupt=false"],
     "(OSError: image file is truncated); pass skip_corrupt=True"),
    ("a file that is not an image", "garbage", ["--data.skip_corrupt=false"], "cannot read image file"),
    ("run folder under a file", "photos+root-is-file", [], "cannot be created"),
    ("--ckpt_path last without a run", "photos", ["--ckpt_path=last"], "--ckpt_path last: no run under"),
]


def _prepare(need: str, photos: Path, tmp_path: Path, monkeypatch) -> tuple[Path, Path, list[str]]:
    """The data folder, the run root and extra arguments for a case."""
    root, data, extra = tmp_path / "runs", photos, []
    if need == "empty":
        data = tmp_path / "empty"
        data.mkdir()
    elif need == "one":
        data = write_photos(tmp_path / "one", 1)
    elif need == "truncated":
        data = truncate_all_but_the_first(write_photos(tmp_path / "truncated", N_IMAGES))
    elif need == "garbage":
        data = write_photos(tmp_path / "garbage", N_IMAGES)
        (data / "0000.png").write_bytes(b"\x89PNG not really")  # the first file: read at setup
    elif need == "photos+resnet":
        extra = [f"--model.backbone.weights={imagenet_resnet18_weights(tmp_path / 'resnet18.pth')}"]
    elif need == "photos+no-timm":
        _no_timm(monkeypatch)
    elif need == "photos+offline":
        _offline(monkeypatch, tmp_path)
    elif need == "photos+root-is-file":
        (tmp_path / "a_file").write_text("not a folder")
        root = tmp_path / "a_file" / "runs"
    return data, root, extra


def short_error(err: str) -> str:
    """The paragraph from ``error:`` on; it must be all there is after it."""
    assert err.count("error:") == 1, err
    return err[err.index("error:"):].strip()


def assert_one_short_paragraph(err: str, expect: str) -> None:
    assert "Traceback" not in err and "Original Traceback" not in err, err
    paragraph = short_error(err)
    assert expect in paragraph, paragraph
    assert len(paragraph.splitlines()) <= 3, paragraph  # the message (and a suggestion), then the debug hint
    assert "\n\n" not in paragraph


def written_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_a_bad_input_is_one_paragraph_exit_non_zero_and_nothing_left(case, photos, tmp_path, monkeypatch, capsys):
    _, need, args, expect = case
    monkeypatch.delenv("DCL_CLUSTER_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)  # a relative default would land here, and be seen
    data, root, extra = _prepare(need, photos, tmp_path, monkeypatch)
    before = set(written_files(tmp_path))
    with pytest.raises(SystemExit) as exit_info:
        main(fit_args(data, root, *args, *extra))
    assert exit_info.value.code not in (0, None)
    assert_one_short_paragraph(capsys.readouterr().err, expect)
    assert written_files(root) == [] and not list(tmp_path.rglob("version_*"))
    assert set(written_files(tmp_path)) == before  # nothing half-written anywhere


def test_every_error_the_cluster_folder_guide_lists_is_in_the_catalogue():
    text = (REPO / "docs" / "guides" / "cluster-folder.md").read_text()
    section = text.split("## 5. Errors you may meet", 1)[1].split("\n## ", 1)[0]
    inside = section.replace("\n  ", " ").split("`")[1::2]
    listed = [text for text in inside if len(text) >= 25]  # the messages, not option names
    assert len(listed) >= 12
    expected = [c[3] for c in CASES] + [PREDICT_NEEDS_CKPT, NOT_WRITABLE, PREDICT_FOLDER]
    for message in listed:
        assert any(piece in message for piece in expected), message


# ---------------------------------------------------------------- predict

PREDICT_NEEDS_CKPT = "predict needs a trained model: pass --ckpt_path"
NOT_WRITABLE = "is not writable"
PREDICT_FOLDER = "predict's output folder"


def predict_args(data_dir: Path, root: Path, *extra: str) -> list[str]:
    return ["predict", *fit_args(data_dir, root)[1:], *extra]


def test_predict_without_a_checkpoint_refuses_and_writes_nothing(photos, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DCL_CLUSTER_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(predict_args(photos, tmp_path / "runs"))
    assert exit_info.value.code == 1
    assert_one_short_paragraph(capsys.readouterr().err, PREDICT_NEEDS_CKPT)
    assert not (tmp_path / "runs").exists()


def test_predict_into_a_folder_under_a_file_stops_before_any_work(photos, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DCL_CLUSTER_DEBUG", raising=False)
    ckpt = fake_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(SystemExit) as exit_info:
        main(predict_args(photos, tmp_path / "runs", f"--ckpt_path={ckpt}",
                          f"--predictions_dir={tmp_path / 'a_file' / 'out'}"))
    assert exit_info.value.code == 1
    assert_one_short_paragraph(capsys.readouterr().err, PREDICT_FOLDER)
    assert sorted(p.name for p in written_files(tmp_path)) == ["a_file", "last.ckpt"]


@pytest.mark.skipif(sys.platform == "win32" or not hasattr(__import__("os"), "geteuid")
                    or __import__("os").geteuid() == 0, reason="root writes into read-only folders")
@pytest.mark.parametrize("subcommand", ["fit", "predict"])
def test_a_read_only_output_folder_stops_before_any_work(subcommand, photos, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DCL_CLUSTER_DEBUG", raising=False)
    ckpt = fake_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        args = (fit_args(photos, locked / "runs") if subcommand == "fit" else
                predict_args(photos, tmp_path / "runs", f"--ckpt_path={ckpt}", f"--predictions_dir={locked / 'out'}"))
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code == 1
        assert_one_short_paragraph(capsys.readouterr().err, NOT_WRITABLE)
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_debug_mode_shows_the_wrapped_error_itself(photos, tmp_path, monkeypatch):
    # jsonargparse wraps a backbone's own error in "Does not validate against any of the Union
    # subtypes"; DCL_CLUSTER_DEBUG=1 raises it, and our error is the one it wraps
    monkeypatch.setenv("DCL_CLUSTER_DEBUG", "1")
    with pytest.raises(Exception) as info:
        main(fit_args(photos, tmp_path / "runs", "--model.backbone=dcl_cluster.nn.TimmBackbone",
                      "--model.backbone.name=resnet18", "--model.backbone.weights=/no/such.pth"))
    chain, err = [], info.value
    while err is not None:
        chain.append(err)
        err = err.__cause__ or err.__context__
    assert any(isinstance(e, FileNotFoundError) and "/no/such.pth" in str(e) for e in chain)


def test_no_network_is_known_at_once_from_the_offline_switch_or_an_unresolvable_host(monkeypatch):
    import huggingface_hub.constants

    from dcl_cluster.nn.pretrained import network_unreachable

    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert network_unreachable("huggingface.co") == "HF_HUB_OFFLINE is set"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    assert "no-such-host.invalid cannot be reached" in network_unreachable("no-such-host.invalid")  # RFC 6761


def test_a_read_only_folder_is_named_with_the_option_that_moves_the_output(tmp_path, monkeypatch):
    # the branch the read-only tests above take where they run (not as root, who may write anywhere)
    import dcl_cluster.cli as cli

    monkeypatch.setattr(cli.os, "access", lambda path, mode: Path(path) != tmp_path)
    with pytest.raises(ValueError, match=r"'.*/runs' is not writable: '.*', the folder it would be created in, is "
                                         r"read-only for this user; choose another folder with --predictions_dir"):
        cli.check_writable_folder(tmp_path / "runs", "predict's output folder", "--predictions_dir")
    monkeypatch.undo()
    cli.check_writable_folder(tmp_path / "runs", "predict's output folder", "--predictions_dir")  # writable: quiet
