"""The Megvii-layout ShuffleNetV2 0.5x: exact state-dict layout, the shipped safetensors copy, and proof that the
architecture (even/odd split) and input normalisation are the ones the weights were trained with.

The proof uses BatchNorm statistics: with the right architecture and input convention, each BN layer's batch
mean/var on real images agrees with its stored running stats; a wrong channel order drifts from the first
stride-1 block (stage2.1) on, because that is where the layouts first route channels differently.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from hydradet.errors import WeightsError
from hydradet.model.backbone import Backbone
from hydradet.model.shufflenet_megvii import ShuffleNetV2Megvii, ShuffleV2Block, load_megvii_state

REPO = Path(__file__).resolve().parents[1]
REPO_WEIGHTS = REPO / "hydradet" / "weights" / "shufflenetv2_x0_5_megvii.safetensors"
SHARED = Path(__file__).resolve().parents[2] / "shared"
SHARED_PTH = SHARED / "weights" / "shufflenetv2_x0_5_megvii_layout.pth"
SHARED_KEYS = SHARED / "weights" / "keys_and_shapes.txt"
IMAGES = SHARED / "data" / "coco-train" / "images"
NAME = "shufflenet_v2_x0_5_megvii"
FIRST_STRIDE1 = "stage2.1."  # the first layer where the layouts differ

needs_shared = pytest.mark.skipif(not SHARED_PTH.is_file(), reason=f"{SHARED_PTH} not present (shared data missing)")
needs_images = pytest.mark.skipif(not IMAGES.is_dir(), reason=f"{IMAGES} not present (shared data missing)")


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here on one thread (conftest.one_thread)."""


@pytest.fixture(scope="module")
def repo_state() -> dict[str, Tensor]:
    return load_megvii_state(REPO_WEIGHTS)


@pytest.fixture(scope="module")
def images() -> Tensor:
    """16 real RGB images in [0, 1], squashed to 224x224."""
    files = sorted(IMAGES.glob("*.jpg"))[:16]
    assert len(files) == 16, f"need 16 images in {IMAGES}"
    arrays = [np.array(Image.open(f).convert("RGB").resize((224, 224), Image.BILINEAR)) for f in files]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255


def test_repo_safetensors_loads_strict(repo_state: dict[str, Tensor]) -> None:
    net = ShuffleNetV2Megvii()
    assert len(repo_state) == 330
    assert {k: v.shape for k, v in repo_state.items()} == {k: v.shape for k, v in net.state_dict().items()}
    net.load_state_dict(repo_state, strict=True)


@needs_shared
def test_layout_matches_listing_and_pth_equals_safetensors(repo_state: dict[str, Tensor]) -> None:
    listed = [(k, s) for k, s in (line.split("\t") for line in SHARED_KEYS.read_text().splitlines())]
    ours = [(k, str(tuple(v.shape))) for k, v in ShuffleNetV2Megvii().state_dict().items()]
    assert ours == listed
    pth = load_megvii_state(SHARED_PTH)
    ShuffleNetV2Megvii().load_state_dict(pth, strict=True)
    assert pth.keys() == repo_state.keys()
    for k, v in pth.items():
        assert v.dtype == repo_state[k].dtype and torch.equal(v, repo_state[k]), k


def test_backbone_maps() -> None:
    torch.manual_seed(0)
    bb = Backbone(NAME, weights=REPO_WEIGHTS).eval()
    assert bb.out_channels == [48, 96, 192]
    with torch.no_grad():
        maps = bb(torch.rand(1, 3, 256, 256))
    assert [tuple(m.shape) for m in maps] == [(1, 48, 32, 32), (1, 96, 16, 16), (1, 192, 8, 8)]
    # The FX-extracted maps are the plain module's stage outputs on the BGR-flipped input.
    net = ShuffleNetV2Megvii().eval()
    net.load_state_dict(load_megvii_state(REPO_WEIGHTS))
    with torch.no_grad():
        x = torch.rand(1, 3, 256, 256)
        s2 = net.stage2(net.maxpool(net.first_conv(x.flip(1))))
        s3 = net.stage3(s2)
        for got, want in zip(bb(x), [s2, s3, net.stage4(s3)], strict=True):
            torch.testing.assert_close(got, want)


def test_backbone_rejects_wrong_file(tmp_path: Path, repo_state: dict[str, Tensor]) -> None:
    bad = tmp_path / "bad.pth"
    torch.save({k: v for k, v in repo_state.items() if not k.startswith("stage4.3.")}, bad)
    with pytest.raises(WeightsError, match=r"bad\.pth.*missing"):
        Backbone(NAME, weights=bad)


# --- Wrong layouts: the same tensors, channels routed the way other implementations do it. ---------------------


class HalvesBlock(ShuffleV2Block):
    """Stride-1 split into first/second halves, no shuffle anywhere."""

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return tuple(x.chunk(2, dim=1))  # type: ignore[return-value]


class TorchvisionBlock(HalvesBlock):
    """torchvision's InvertedResidual routing: halves split, channel shuffle (groups 2) at every block's end."""

    def forward(self, x: Tensor) -> Tensor:
        out = super().forward(x)
        b, c, h, w = out.shape
        return out.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)


class SwappedBlock(ShuffleV2Block):
    """Even/odd split with the roles swapped: odd channels pass through, even ones go through branch_main."""

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x[:, 1::2], x[:, 0::2]


def _variant(state: dict[str, Tensor], block_cls: type[ShuffleV2Block]) -> nn.Module:
    net = ShuffleNetV2Megvii()
    net.load_state_dict(state, strict=True)
    for m in net.modules():
        if isinstance(m, ShuffleV2Block):
            m.__class__ = block_cls
    return net.eval()


def _bn_scores(model: nn.Module, x: Tensor) -> dict[str, float]:
    """Per BN layer: mean |batch_mean - running_mean| / running_std + mean |log(batch_var / running_var)|."""
    scores: dict[str, float] = {}

    def hook(name: str):
        def fn(bn: nn.BatchNorm2d, inputs: tuple[Tensor], _out: Tensor) -> None:
            t = inputs[0]
            rv = bn.running_var + bn.eps  # eps keeps dead channels (running_var ~1e-26) from dominating
            bm, bv = t.mean((0, 2, 3)), t.var((0, 2, 3), unbiased=False) + bn.eps
            mean_term = ((bm - bn.running_mean).abs() / rv.sqrt()).mean()
            scores[name] = float(mean_term + (bv / rv).log().abs().mean())

        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    # FX keeps module names; drop Backbone's `body.` prefix so names compare across models.
    return {n.removeprefix("body."): s for n, s in scores.items()}


def _stem_terms(state: dict[str, Tensor], x: Tensor) -> tuple[float, float]:
    """(mean term, log-variance term) of the first BN's input batch stats vs its running stats."""
    w, rm = state["first_conv.0.weight"], state["first_conv.1.running_mean"]
    rv = state["first_conv.1.running_var"] + 1e-5
    t = nn.functional.conv2d(x, w, stride=2, padding=1)
    bm, bv = t.mean((0, 2, 3)), t.var((0, 2, 3), unbiased=False) + 1e-5
    return float(((bm - rm).abs() / rv.sqrt()).mean()), float((bv / rv).log().abs().mean())


def _from_stride1(scores: dict[str, float]) -> list[float]:
    names = list(scores)
    start = next(i for i, n in enumerate(names) if n.startswith(FIRST_STRIDE1))
    return [scores[n] for n in names[start:]]


@needs_images
def test_bn_statistics_prove_layout_and_normalisation(
    images: Tensor, repo_state: dict[str, Tensor], capsys: pytest.CaptureFixture[str]
) -> None:
    # The integrated path: Backbone applies this backbone's own input convention (BGR in [0, 1]).
    correct = _bn_scores(Backbone(NAME, weights=REPO_WEIGHTS), images)
    bgr = images.flip(1)
    wrong = {
        "halves": _bn_scores(_variant(repo_state, HalvesBlock), bgr),
        "torchvision": _bn_scores(_variant(repo_state, TorchvisionBlock), bgr),
        "swapped": _bn_scores(_variant(repo_state, SwappedBlock), bgr),
    }
    assert all(w.keys() == correct.keys() for w in wrong.values())
    ok = _from_stride1(correct)
    report = [f"correct: all={np.mean(list(correct.values())):.3f} from stage2.1={np.mean(ok):.3f} max={max(ok):.3f}"]
    for name, w in wrong.items():
        bad = _from_stride1(w)
        report.append(f"{name}: all={np.mean(list(w.values())):.3f} from stage2.1={np.mean(bad):.3f}")
        # Far worse overall, and worse layer by layer from the first stride-1 block on (not just on average).
        assert np.mean(ok) < np.mean(bad) / 3, name
        assert all(b > 1.5 * o for o, b in zip(ok, bad, strict=True)), name
    # Agreement holds at every depth with the right layout: no layer drifts.
    assert max(ok) < 1.0
    assert np.mean(ok) < 0.5

    # Input convention, checked at the first BN (only the stem conv before it, so layout does not matter).
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    inputs = {"bgr01": bgr, "rgb01": images, "rgb_imagenet": (images - mean) / std, "bgr255": bgr * 255}
    stem = {k: _stem_terms(repo_state, x) for k, x in inputs.items()}
    report.append(
        "first_conv.1 (mean term, var term): " + ", ".join(f"{k}={m:.3f},{v:.3f}" for k, (m, v) in stem.items())
    )
    # Scale: [0, 1] beats ImageNet mean/std and 0..255 on both terms by far.
    for other in ("rgb_imagenet", "bgr255"):
        assert sum(stem["bgr01"]) < sum(stem[other]) / 3, other
    # Channel order shows in the per-channel means (the variance term hardly depends on it).
    assert stem["bgr01"][0] < 0.6 * stem["rgb01"][0]
    assert all(math.isfinite(v) for t in stem.values() for v in t)
    with capsys.disabled():
        print("\n" + "\n".join(report))
