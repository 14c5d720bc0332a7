"""Per-group learning rates and weight decay (train.param_groups, hydradet/train/optim.py)."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_alternate_steps_leave_person_untouched, make_batch, snapshot, tiny_config, tiny_model

from hydradet.config import ConfigError
from hydradet.train.optim import build_optimizer, set_lr
from hydradet.train.step import train_step


def _group_of(opt: torch.optim.Optimizer) -> dict[int, dict]:
    return {id(p): g for g in opt.param_groups for p in g["params"]}


def test_default_is_the_two_groups_as_before_decay_and_no_decay():
    cfg = tiny_config("train.weight_decay=0.05")
    model = tiny_model(cfg)
    opt = build_optimizer(model, cfg.train)
    assert len(opt.param_groups) == 2
    decay, no_decay = ([p for p in model.parameters() if (p.ndim > 1) == d] for d in (True, False))
    assert [id(p) for p in opt.param_groups[0]["params"]] == [id(p) for p in decay]
    assert [id(p) for p in opt.param_groups[1]["params"]] == [id(p) for p in no_decay]
    assert opt.param_groups[0]["weight_decay"] == 0.05 and opt.param_groups[1]["weight_decay"] == 0.0


def test_lr_mult_and_weight_decay_per_prefix_longest_prefix_wins_norms_and_biases_never_decay():
    cfg = tiny_config(
        "train.weight_decay=0.05",
        "train.param_groups={backbone: {lr_mult: 0.1}, heads: {lr_mult: 2.0}, heads.person: {weight_decay: 0}}",
    )
    model = tiny_model(cfg)
    opt = build_optimizer(model, cfg.train)
    set_lr(opt, 0.01)
    group = _group_of(opt)
    for name, p in model.named_parameters():
        g = group[id(p)]
        lr = {"backbone": 0.1 * 0.01, "neck": 0.01, "heads": 2.0 * 0.01}[name.split(".")[0]]
        if name.startswith("heads.person."):
            lr = 0.01  # heads.person is longer than heads: its own lr_mult (1) applies, not heads'
        assert g["lr"] == pytest.approx(lr), name
        wd = 0.0 if p.ndim <= 1 or name.startswith("heads.person.") else 0.05
        assert g["weight_decay"] == wd, name
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_lr_mult_zero_leaves_its_group_unchanged_while_the_rest_trains():
    cfg = tiny_config(
        "train.optimizer=sgd", "train.momentum=0", "train.weight_decay=0", "train.param_groups={backbone: {lr_mult: 0}}"
    )
    model = tiny_model(cfg)
    opt = build_optimizer(model, cfg.train)
    set_lr(opt, 0.05)
    before = snapshot(model)
    train_step(model, opt, make_batch(cfg, ["both", "persons"], seed=1), cfg.source_heads())
    after = snapshot(model)
    weights = [k for k in before if k.startswith("backbone.") and "running" not in k and "num_batches" not in k]
    assert weights and all(torch.equal(before[k], after[k]) for k in weights)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("heads.person."))


def test_unknown_prefix_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"train.param_groups.heads.cat: unknown module prefix"):
        tiny_config("train.param_groups={heads.cat: {lr_mult: 2}}")
    with pytest.raises(ConfigError, match=r"train.param_groups.body: unknown module prefix"):
        tiny_config("train.param_groups={body: {lr_mult: 2}}")
    cfg = tiny_config("train.param_groups={backbone.nope: {lr_mult: 2}}")  # deeper names: checked on the model
    with pytest.raises(ConfigError, match=r"train.param_groups.backbone.nope: 'backbone.nope' names no parameter"):
        build_optimizer(tiny_model(cfg), cfg.train)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_alternate_steps_leave_person_head_bit_identical_with_param_groups(optimizer):
    cfg = tiny_config(
        f"train.optimizer={optimizer}",
        "train.weight_decay=0.05",
        "train.lr=0.01",
        "train.param_groups={backbone: {lr_mult: 0.1}, heads.person: {lr_mult: 3, weight_decay: 0.1}}",
    )
    assert_alternate_steps_leave_person_untouched(cfg, tiny_model(cfg))
