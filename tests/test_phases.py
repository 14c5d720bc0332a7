"""Staged training (train.phases): a frozen module gets no update of any kind, BatchNorm statistics included."""

from __future__ import annotations

import pytest
import torch
from conftest import (
    assert_alternate_steps_leave_person_untouched,
    make_batch,
    optimizer_state_of,
    snapshot,
    tiny_config,
    tiny_model,
)

from hydradet.config import ConfigError
from hydradet.train.optim import build_optimizer
from hydradet.train.step import train_step
from hydradet.train.trainer import frozen_at

PHASES = "train.phases=[{epochs: 2, freeze: [backbone]}, {epochs: 3, freeze: []}]"


def test_phases_set_the_total_epochs_and_which_modules_each_epoch_freezes():
    cfg = tiny_config(PHASES)
    assert cfg.train.epochs == 5
    assert [frozen_at(cfg, e) for e in range(1, 6)] == [("backbone",)] * 2 + [()] * 3
    assert tiny_config(PHASES, "train.epochs=5").train.epochs == 5  # agreeing is fine (a saved run's config)


def test_train_epochs_contradicting_phases_and_unknown_freeze_prefixes_are_config_errors():
    with pytest.raises(ConfigError, match=r"train.epochs: 7 conflicts with train.phases, whose epochs sum to 5"):
        tiny_config(PHASES, "train.epochs=7")
    with pytest.raises(ConfigError, match=r"train.phases.0.freeze: 'trunk': unknown module prefix"):
        tiny_config("train.phases=[{epochs: 1, freeze: [trunk]}]")
    cfg = tiny_config("train.phases=[{epochs: 1, freeze: [neck.nope]}]")
    with pytest.raises(ConfigError, match=r"train.phases.0.freeze: 'neck.nope' names no parameter"):
        build_optimizer(tiny_model(cfg), cfg.train)


def _backbone_state(model, opt):
    params = list(model.backbone.parameters())
    return snapshot(model.backbone), optimizer_state_of(opt, params)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_frozen_backbone_keeps_weights_bn_statistics_and_optimizer_state_bit_identical_while_heads_train(optimizer):
    cfg = tiny_config(f"train.optimizer={optimizer}", "train.weight_decay=0.05", "train.lr=0.01")
    model = tiny_model(cfg)
    opt = build_optimizer(model, cfg.train)
    sh = cfg.source_heads()
    model.train()
    train_step(model, opt, make_batch(cfg, ["both", "persons"], seed=1), sh)  # backbone gets optimizer state
    model.freeze(["backbone"])
    model.train()
    bns = [m for m in model.backbone.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and not any(m.training for m in bns) and model.training and model.heads.training
    state, opt_state = _backbone_state(model, opt)
    assert all(opt_state) and any("running_mean" in k for k in state)
    heads_before = snapshot(model.heads)
    for k in range(3):
        train_step(model, opt, make_batch(cfg, ["both", "animals", "persons"], seed=10 + k), sh, grad_clip=1.0)
        assert all(p.grad is None for p in model.backbone.parameters())
        model.eval()
        model.train()  # as around evaluation: frozen BatchNorm layers go back to eval mode
        assert not any(m.training for m in bns)
    state_after, opt_after = _backbone_state(model, opt)
    for key in state:
        assert torch.equal(state[key], state_after[key]), key
    for before, after in zip(opt_state, opt_after, strict=True):
        assert before.keys() == after.keys()
        for key in before:
            assert torch.equal(torch.as_tensor(before[key]), torch.as_tensor(after[key])), key
    heads_after = snapshot(model.heads)
    assert any(not torch.equal(heads_before[k], heads_after[k]) for k in heads_before)

    model.freeze([])  # the next phase: the backbone trains again, BatchNorm statistics included
    model.train()
    assert all(m.training for m in bns)
    train_step(model, opt, make_batch(cfg, ["both"], seed=20), sh)
    assert not torch.equal(state["body.bn1.running_mean"], snapshot(model.backbone)["body.bn1.running_mean"])


def test_alternate_steps_leave_person_head_bit_identical_with_a_frozen_backbone_and_neck():
    cfg = tiny_config(
        "train.optimizer=adamw",
        "train.weight_decay=0.05",
        "train.lr=0.01",
        "train.phases=[{epochs: 1, freeze: [backbone, neck]}]",
    )
    model = tiny_model(cfg)
    model.freeze(frozen_at(cfg, 1))
    model.train()
    neck = snapshot(model.neck)
    assert_alternate_steps_leave_person_untouched(cfg, model)
    assert all(torch.equal(v, snapshot(model.neck)[k]) for k, v in neck.items())


def test_cli_trains_through_phases_with_balancing_and_param_groups_and_its_saved_config_reloads(tmp_path, capsys):
    import csv

    from hydradet.cli import main
    from hydradet.config import load_config

    world, project = tmp_path / "world", tmp_path / "runs"
    assert main(["synth", str(world), "--train-images", "4", "--val-images", "2", "--seed", "3"]) == 0
    fast = [
        "model.backbone=shufflenet_v2_x0_5",
        "model.backbone_weights=null",
        "model.imgsz=64",
        "model.neck_width=16",
        "train.batch=4",
    ]
    fast += ["train.workers=0", "eval.batch=8", "eval.every=2", "train.steps_per_epoch=1"]
    controls = ["train.phases=[{epochs: 1, freeze: [backbone]}, {epochs: 1}]", "train.balance.method=uncertainty"]
    controls += ["train.param_groups={backbone: {lr_mult: 0.5}}", f"project={project}", "name=p"]
    assert main(["train", str(world / "hydradet.yaml"), *fast, *controls]) == 0
    out = capsys.readouterr()
    assert "phase from epoch 1: frozen: backbone" in out.out + out.err
    assert "phase from epoch 2: frozen: nothing" in out.out + out.err
    assert len(list(csv.DictReader((project / "p" / "results.csv").open()))) == 2
    saved = load_config(project / "p" / "config.yaml", check_paths=False)
    assert saved.train.epochs == 2 and len(saved.train.phases) == 2
