"""ShuffleNetV2 in Megvii's original layout, so that checkpoints published in that layout (e.g. FastestDet's
ImageNet backbone) load by name without conversion.

The layout is not torchvision's: a stride-1 block splits its input into the even- and odd-indexed channels
(Megvii's channel shuffle is folded into that split) instead of first/second halves with a shuffle at the
block's end, so the same tensors give different (wrong) features in torchvision's module even after renaming.
Only the backbone is built (no conv5, no classifier); forward returns the stride-32 map, and the stride-8/16/32
maps are taken with FX feature extraction on the children `stage2`, `stage3`, `stage4`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

# Megvii's stage output channels per width multiplier; the stem is 24 channels for all of them.
STAGE_CHANNELS: dict[float, tuple[int, int, int]] = {
    0.5: (48, 96, 192),
    1.0: (116, 232, 464),
    1.5: (176, 352, 704),
    2.0: (244, 488, 976),
}
STAGE_REPEATS = (4, 8, 4)
# The weights that ship in the package (hydradet/weights/README.md): `model.backbone_weights=pretrained` is ImageNet.
MEGVII_IMAGENET = Path(__file__).resolve().parents[1] / "weights" / "shufflenetv2_x0_5_megvii.safetensors"
MEGVII_COCO = MEGVII_IMAGENET.with_name("shufflenetv2_x0_5_megvii_coco.safetensors")
STEM_CHANNELS = 24


class ShuffleV2Block(nn.Module):
    """Megvii's ShuffleV2Block (kernel 3). stride 2: cat(branch_proj(x), branch_main(x)), inp -> oup channels.
    stride 1: even channels pass through, odd channels go through branch_main; oup == 2 * inp."""

    def __init__(self, inp: int, oup: int, stride: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.stride = stride
        mid = oup // 2
        outputs = oup - inp  # branch_main makes up whatever the pass-through/projection part does not
        # Indices matter: they are the checkpoint's key names (ReLUs at 2 and 7 hold no tensors).
        self.branch_main = nn.Sequential(
            nn.Conv2d(inp, mid, 1, 1, 0, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False),
            nn.BatchNorm2d(mid),
            nn.Conv2d(mid, outputs, 1, 1, 0, bias=False),
            nn.BatchNorm2d(outputs),
            nn.ReLU(inplace=True),
        )
        if stride == 2:
            self.branch_proj = nn.Sequential(
                nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False),
                nn.BatchNorm2d(inp),
                nn.Conv2d(inp, inp, 1, 1, 0, bias=False),
                nn.BatchNorm2d(inp),
                nn.ReLU(inplace=True),
            )

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        # Megvii's channel_shuffle: a reshape/permute equal to taking even and odd channels; slicing traces in FX.
        return x[:, 0::2], x[:, 1::2]

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            x_proj, x_main = self.split(x)
            return torch.cat((x_proj, self.branch_main(x_main)), 1)
        return torch.cat((self.branch_proj(x), self.branch_main(x)), 1)


class ShuffleNetV2Megvii(nn.Module):
    """Megvii-layout ShuffleNetV2 backbone: (B, 3, H, W) -> stage4 map at stride 32.

    Its state_dict keys match Megvii's/FastestDet's checkpoints (`first_conv.*`, `stage{2,3,4}.{i}.branch_*`).
    """

    def __init__(self, width: float = 0.5) -> None:
        super().__init__()
        if width not in STAGE_CHANNELS:
            raise ValueError(f"width must be one of {sorted(STAGE_CHANNELS)}, got {width}")
        self.width = width
        self.out_channels = list(STAGE_CHANNELS[width])
        self.first_conv = nn.Sequential(
            nn.Conv2d(3, STEM_CHANNELS, 3, 2, 1, bias=False),
            nn.BatchNorm2d(STEM_CHANNELS),
            nn.ReLU(inplace=True),
        )
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inp = STEM_CHANNELS
        stages = []
        for repeats, oup in zip(STAGE_REPEATS, self.out_channels, strict=True):
            # A stride-1 block gets oup // 2 channels in the split, hence inp = oup // 2 after the first block.
            blocks = [ShuffleV2Block(inp, oup, stride=2)]
            blocks += [ShuffleV2Block(oup // 2, oup, stride=1) for _ in range(repeats - 1)]
            stages.append(nn.Sequential(*blocks))
            inp = oup
        self.stage2, self.stage3, self.stage4 = stages

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.first_conv(x))
        return self.stage4(self.stage3(self.stage2(x)))


def load_megvii_state(path: Path) -> dict[str, Tensor]:
    """Read a Megvii-layout state dict from a .pth/.pt (tensors only, no arbitrary unpickling) or .safetensors."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a plain state dict of tensors")
    return state
