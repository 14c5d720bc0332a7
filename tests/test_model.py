"""The model: torchvision backbones at strides 8/16/32, heads run on request, weights round-trip exactly."""

from __future__ import annotations

import pytest
import torch
import torchvision
from conftest import tiny_config, tiny_model

from hydradet.errors import WeightsError
from hydradet.model.backbone import Backbone
from hydradet.model.weights import init_from, load_model, read_metadata, save_weights


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet_v3_large", "shufflenet_v2_x1_0"])
def test_required_backbones_give_three_maps_at_strides_8_16_32(name):
    bb = Backbone(name).eval()
    with torch.no_grad():
        maps = bb(torch.rand(1, 3, 128, 96))
    assert [m.shape[-2:] for m in maps] == [(16, 12), (8, 6), (4, 3)]
    assert [m.shape[1] for m in maps] == bb.out_channels


def test_backbone_loads_a_local_torchvision_state_dict(tmp_path):
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    bb = Backbone("resnet18", weights=path)
    assert torch.equal(bb.body.conv1.weight, reference.conv1.weight)
    assert torch.equal(bb.body.state_dict()["layer4.1.bn2.running_var"], reference.layer4[1].bn2.running_var)


def test_backbone_refuses_a_state_dict_of_another_network(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(), path)
    with pytest.raises(WeightsError, match=r"wrong\.pth: not a resnet18 state dict"):
        Backbone("resnet18", weights=path)


def test_forward_runs_only_the_requested_heads_on_the_requested_rows():
    cfg = tiny_config()
    model = tiny_model(cfg).eval()
    x = torch.rand(3, 3, 64, 64)
    out = model(x, {"animal": torch.tensor([0, 2])})
    assert set(out) == {"animal"}
    assert out["animal"].cls_logits.shape[:2] == (2, 8 * 8 + 4 * 4 + 2 * 2)
    assert out["animal"].cls_logits.shape[2] == 3
    full = model(x)
    torch.testing.assert_close(full["animal"].cls_logits[[0, 2]], out["animal"].cls_logits)


def test_weights_round_trip_bit_exact_and_describe_the_model(tmp_path):
    cfg = tiny_config()
    model = tiny_model(cfg)
    path = tmp_path / "w.safetensors"
    save_weights(model, path)
    meta = read_metadata(path)
    assert meta["heads"]["animal"]["classes"] == ["dog", "bird", "giraffe"]
    loaded = load_model(path)
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k


def test_init_matches_by_name_and_shape_and_lists_the_rest(tmp_path):
    cfg = tiny_config()
    path = tmp_path / "w.safetensors"
    save_weights(tiny_model(cfg, seed=1), path)
    # A new model: one more head, and the animal head with its classes reordered and one added.
    bigger = tiny_config("heads.extra={task: detect, classes: [a]}", "heads.animal.classes=[giraffe, cat, dog, bird]")
    model = tiny_model(bigger, seed=2)
    fresh_cat_row = model.heads["animal"].cls_logits.weight[1].clone()
    report = init_from(model, path)
    assert any(n.startswith("heads.extra.") for n in report.fresh)
    lines = "\n".join(report.lines())
    assert "heads.extra.*" in lines and "matched by name; fresh: ['cat']" in lines
    source = load_model(path)
    old_rows = source.heads["animal"].cls_logits.weight  # dog, bird, giraffe
    new_rows = model.heads["animal"].cls_logits.weight  # giraffe, cat, dog, bird
    for new_i, old_i in ((0, 2), (2, 0), (3, 1)):
        assert torch.equal(new_rows[new_i], old_rows[old_i])
    assert torch.equal(new_rows[1], fresh_cat_row)
    assert torch.equal(model.heads["person"].cls_logits.weight, source.heads["person"].cls_logits.weight)
    assert torch.equal(model.backbone.body.conv1.weight, source.backbone.body.conv1.weight)


def test_pickled_weights_are_refused(tmp_path):
    bad = tmp_path / "m.pt"
    torch.save({"x": torch.zeros(1)}, bad)
    with pytest.raises(WeightsError, match="pickled weights are refused"):
        load_model(bad)
