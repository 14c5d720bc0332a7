"""Distillation of old heads while a new head is added (`train.distill_old_heads`).

When a trained model gets a new head and the backbone is left trainable, the backbone adapts to the new source
and the old heads' outputs drift: forgetting. The model as loaded from `model.init` is kept as a frozen teacher;
on the images of sources that do not label an old head, that head is trained to reproduce the teacher's outputs.
This is the one supervision that does not come from a source's labels, and it is opt-in: the teacher stands in
for the labels the new images lack, so a head is still only ever taught what its own label space says.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

from hydradet.model.detector import HydraDetector
from hydradet.train.rule import rows_without_labels


class Distiller:
    """A frozen copy of the initial model, the teacher of its `old_heads`."""

    def __init__(self, model: HydraDetector, old_heads: Iterable[str], weight: float = 1.0) -> None:
        self.old_heads = tuple(h for h in model.heads if h in set(old_heads))
        self.weight = weight
        self.teacher = copy.deepcopy(model).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def rows(self, sources: list[str], source_heads: Mapping[str, Iterable[str]]) -> dict[str, Tensor]:
        """old head -> the samples whose source does not label it (the teacher's rows); absent if none."""
        return rows_without_labels(sources, source_heads, self.old_heads)

    @torch.no_grad()
    def targets(self, images: Tensor, rows: Mapping[str, Tensor]) -> dict[str, object]:
        """The teacher's outputs of each old head on its rows. The teacher stays in eval mode: its BatchNorm
        layers use their stored statistics, so its outputs depend on each image alone."""
        union = torch.unique(torch.cat(list(rows.values())))
        outputs = self.teacher(images[union.to(images.device)], dict.fromkeys(rows))
        position = {int(r): k for k, r in enumerate(union)}
        return {
            head: outputs[head].take(torch.tensor([position[int(r)] for r in idx], device=images.device))
            for head, idx in rows.items()
        }

    def to(self, device: torch.device | str) -> Distiller:
        self.teacher.to(device)
        return self


def old_heads_of(model: HydraDetector, init_meta: Mapping[str, object], fresh: Iterable[str]) -> list[str]:
    """The heads the init file holds with the same classes and whose every tensor was loaded from it."""
    file_heads = init_meta.get("heads", {})
    assert isinstance(file_heads, Mapping)
    not_loaded = {n.split(".")[1] for n in fresh if n.startswith("heads.")}
    return [
        h
        for h, cfg in model.head_cfgs.items()
        if h in file_heads and file_heads[h].get("classes") == cfg.classes and h not in not_loaded
    ]
