"""The neck's shared tower (model.shared_convs): paid once for all heads, part of the trunk, under the rule."""

from __future__ import annotations

import torch
from conftest import assert_alternate_steps_leave_person_untouched, tiny_config, tiny_model
from torch.utils.flop_counter import FlopCounterMode

from hydradet.config import load_config
from hydradet.model.detector import HydraDetector


def _flops(model: HydraDetector) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.rand(1, 3, 256, 256))
    return counter.get_total_flops()


def _k_heads(k: int, *overrides: str) -> HydraDetector:
    """The demo's network (random init) with k one-class detect heads."""
    heads = {f"h{i}": {"task": "detect", "classes": ["a"]} for i in range(k)}
    base = ("model.backbone=shufflenet_v2_x0_5_megvii", "model.imgsz=256", "model.neck_width=64", *overrides)
    cfg = load_config({"heads": heads, "sources": {}}, [*base, "train.epochs=0"], check_paths=False)
    torch.manual_seed(0)
    return HydraDetector(cfg.model, cfg.heads)


def test_the_shared_tower_is_trunk_and_without_it_tensor_names_are_unchanged():
    plain = tiny_model(tiny_config("model.shared_convs=0", "model.head_convs=2"))
    shared = tiny_model(tiny_config("model.shared_convs=2", "model.head_convs=0"))
    assert not any(".tower." in k for k in plain.neck.state_dict())
    assert {k for k in shared.state_dict() if "tower" in k and k.startswith("neck.")} >= {"neck.tower.0.weight"}
    assert not any(k.startswith("heads.") and "tower.0" in k for k in shared.state_dict())
    # Weights written before the tower existed (shared_convs 0) load strictly into a model built today.
    shared_free = {k: v for k, v in plain.state_dict().items()}
    tiny_model(tiny_config("model.shared_convs=0", "model.head_convs=2")).load_state_dict(shared_free, strict=True)


def test_with_the_tower_shared_each_extra_head_costs_at_most_15_percent_of_one_head_model_in_flops():
    one = _flops(_k_heads(1, "model.shared_convs=2", "model.head_convs=0"))
    eight = _flops(_k_heads(8, "model.shared_convs=2", "model.head_convs=0"))
    assert eight <= one * (1 + 0.15 * 7)
    # Per-head towers (the FCOS layout) cost far more per head: the test above can fail.
    per_head = ("model.shared_convs=0", "model.head_convs=2")
    per_head_one, per_head_eight = _flops(_k_heads(1, *per_head)), _flops(_k_heads(8, *per_head))
    assert per_head_eight > per_head_one * (1 + 0.15 * 7)


def test_alternate_steps_leave_the_person_head_untouched_with_a_shared_tower():
    cfg = tiny_config("model.shared_convs=1", "model.head_convs=0", "train.optimizer=sgd", "train.weight_decay=0.1")
    assert_alternate_steps_leave_person_untouched(cfg, tiny_model(cfg))
