"""Image-level heads: one label per image, from the same FPN features the detect heads read.

Each level of the pyramid is average-pooled and the results concatenated, so the head sees fine (stride 8) and
coarse (stride 32) context alike; a small MLP maps that to class logits (`ClassifyHead`, cross-entropy) or one
number (`RegressHead`, L1). No BatchNorm: a head holds no running statistics, so it changes only through its
own gradients (the rule), and its output for an image does not depend on its batch-mates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class ImageOutput:
    """An image-level head's raw output: class logits (B, C), or normalised values (B,) for regress."""

    x: Tensor

    def take(self, rows: Tensor) -> ImageOutput:
        """The outputs of these samples of the batch (as `DetectOutput.take`)."""
        return ImageOutput(self.x[rows])


class _PooledMLP(nn.Module):
    def __init__(self, width: int, levels: int, out: int) -> None:
        super().__init__()
        hidden = 2 * width
        # No normalisation layer: LayerNorm would divide out the overall magnitude of the pooled features, which
        # carries "how much of the image" (a size, a count) that a regress head may need; BatchNorm would hold
        # running statistics that a forward pass moves.
        self.hidden = nn.Sequential(nn.Linear(width * levels, hidden), nn.ReLU(inplace=True))
        self.out = nn.Linear(hidden, out)

    def embed(self, features: list[Tensor]) -> Tensor:
        return self.hidden(torch.cat([f.mean((2, 3)) for f in features], 1))


class ClassifyHead(_PooledMLP):
    """Class logits (B, C). Loss: cross-entropy; postprocess: softmax probabilities."""

    def __init__(self, width: int, num_classes: int, levels: int = 3) -> None:
        super().__init__(width, levels, num_classes)
        self.num_classes = num_classes

    def forward(self, features: list[Tensor]) -> ImageOutput:
        return ImageOutput(self.out(self.embed(features)))

    def loss(self, out: ImageOutput, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """targets[i] = {"label": () class index} for the i-th sample of `out`; mean over this head's samples."""
        labels = torch.stack([t["label"] for t in targets]).to(out.x.device)
        return {"ce": F.cross_entropy(out.x, labels)}

    def distill_loss(self, out: ImageOutput, teacher: ImageOutput) -> dict[str, Tensor]:
        """KL divergence from the teacher's class distribution on the same images (`train.distill_old_heads`)."""
        kl = F.kl_div(out.x.log_softmax(-1), teacher.x.detach().log_softmax(-1), log_target=True, reduction="batchmean")
        return {"distill_ce": kl}

    @torch.no_grad()
    def postprocess(self, out: ImageOutput) -> Tensor:
        """(B, C) class probabilities."""
        return out.x.float().softmax(-1)


class RegressHead(_PooledMLP):
    """One number per image. It learns (value - mean) / std, so that L1 and the learning rate suit a label on
    any scale; `mean`, `std` come from the head's config (by default the train labels', see
    `data.dataset.with_regress_stats`) and `postprocess` returns values in the label's units."""

    def __init__(self, width: int, mean: float = 0.0, std: float = 1.0, levels: int = 3) -> None:
        super().__init__(width, levels, 1)
        self.mean, self.std = mean, std

    def forward(self, features: list[Tensor]) -> ImageOutput:
        return ImageOutput(self.out(self.embed(features)).squeeze(1))

    def loss(self, out: ImageOutput, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """targets[i] = {"value": () float in the label's units}; L1 on the normalised value, mean over samples."""
        values = torch.stack([t["value"] for t in targets]).to(out.x.device, out.x.dtype)
        return {"l1": F.l1_loss(out.x, (values - self.mean) / self.std)}

    def distill_loss(self, out: ImageOutput, teacher: ImageOutput) -> dict[str, Tensor]:
        """L1 to the teacher's (normalised) value on the same images (`train.distill_old_heads`)."""
        return {"distill_l1": F.l1_loss(out.x, teacher.x.detach())}

    @torch.no_grad()
    def postprocess(self, out: ImageOutput) -> Tensor:
        """(B,) predicted values in the label's units."""
        return out.x.float() * self.std + self.mean
