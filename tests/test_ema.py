"""Model EMA (train.ema) under the rule: a head's average moves only on steps with its own samples."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import CLI_FAST, make_batch, snapshot, tiny_config, tiny_model
from safetensors.torch import load_file

import hydradet.train.run_folder as run_folder
import hydradet.train.trainer as trainer
from hydradet.cli import main
from hydradet.train.ema import ModelEMA, ema_decay
from hydradet.train.optim import build_optimizer
from hydradet.train.step import train_step

FAST = CLI_FAST


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> list[str]:
    return [k for k in before if not torch.equal(before[k], after[k])]


def test_decay_formula_on_hand_made_numbers():
    assert ema_decay(0, 0.9999, 2000) == 0
    assert ema_decay(2000, 0.9999, 2000) == pytest.approx(0.9999 * (1 - math.exp(-1)))
    assert ema_decay(1, 0.5, 1) == pytest.approx(0.5 * (1 - 1 / math.e))
    assert ema_decay(10**6, 0.9, 10) == pytest.approx(0.9)
    # one update on a hand-made tensor: v <- d * v + (1 - d) * x
    cfg = tiny_config("train.ema.decay=0.5", "train.ema.tau=1")
    model = tiny_model(cfg)
    ema = ModelEMA(model, cfg.train.ema.decay, cfg.train.ema.tau)
    name = next(n for n, _ in model.named_parameters() if n.startswith("heads.person."))
    old = dict(ema.ema.named_parameters())[name].clone()
    with torch.no_grad():
        dict(model.named_parameters())[name].add_(1.0)
    ema.update(model, ["person"])
    d = 0.5 * (1 - math.exp(-1))
    new = dict(model.named_parameters())[name]
    assert torch.allclose(dict(ema.ema.named_parameters())[name], d * old + (1 - d) * new)
    assert ema.updates == {"trunk": 1, "person": 1, "animal": 0}
    assert not ema.ema.training and all(not q.requires_grad for q in ema.ema.parameters())


def _part(model, name: str) -> torch.nn.Module:
    return model.heads[name] if name in model.heads else getattr(model, name)


def _run_steps(cfg, sources_per_step):
    model = tiny_model(cfg)
    opt = build_optimizer(model, cfg.train)
    ema = ModelEMA(model, cfg.train.ema.decay, cfg.train.ema.tau)
    sh = cfg.source_heads()
    # a mixed step first, so every head's average has moved once
    ema.update(model, train_step(model, opt, make_batch(cfg, ["persons", "animals"] * 2, seed=1), sh))
    before = {g: snapshot(_part(ema.ema, g)) for g in ("backbone", "neck", "person", "animal")}
    counts = dict(ema.updates)
    for k, sources in enumerate(sources_per_step):
        ema.update(model, train_step(model, opt, make_batch(cfg, sources, seed=10 + k), sh, 1.0))
    after = {g: snapshot(_part(ema.ema, g)) for g in before}
    return ema, before, after, counts


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_alternate_steps_on_animals_leave_person_ema_bit_identical(optimizer):
    cfg = tiny_config(f"train.optimizer={optimizer}", "train.weight_decay=0.01", "train.lr=0.05", "train.ema.tau=2")
    ema, before, after, counts = _run_steps(cfg, [["animals"] * 4] * 3)
    assert _changed(before["person"], after["person"]) == []
    assert _changed(before["animal"], after["animal"])
    assert _changed(before["backbone"], after["backbone"])
    assert ema.updates == {"trunk": counts["trunk"] + 3, "animal": counts["animal"] + 3, "person": counts["person"]}


def test_mixed_steps_move_both_heads_ema():
    cfg = tiny_config("train.lr=0.05", "train.ema.tau=2")
    ema, before, after, counts = _run_steps(cfg, [["persons", "animals", "both", "animals"]] * 2)
    for g in ("person", "animal", "backbone", "neck"):
        assert _changed(before[g], after[g]), g
    assert ema.updates == {h: n + 2 for h, n in counts.items()}


def test_frozen_modules_are_copied_not_averaged():
    cfg = tiny_config("train.lr=0.05", "train.ema.tau=2")
    model = tiny_model(cfg)
    model.freeze(["backbone"])
    opt = build_optimizer(model, cfg.train)
    ema = ModelEMA(model, cfg.train.ema.decay, cfg.train.ema.tau)
    with torch.no_grad():  # an average that differs from the frozen weights: the copy must restore them
        for p in ema.ema.backbone.parameters():
            p.add_(1.0)
    ema.update(model, train_step(model, opt, make_batch(cfg, ["both"] * 4, seed=2), cfg.source_heads()))
    for k, v in snapshot(model.backbone).items():
        assert torch.equal(ema.ema.backbone.state_dict()[k], v), k


def _spy(monkeypatch):
    """Record the raw model that train_step trains and the models save_weights writes."""
    seen: dict = {"saved": []}
    real_step, real_save = trainer.train_step, run_folder.save_weights

    def step(model, *a, **k):
        seen["raw"] = model
        return real_step(model, *a, **k)

    def save(model, path, extra=None):
        seen["saved"].append(model)
        return real_save(model, path, extra)

    monkeypatch.setattr(trainer, "train_step", step)
    monkeypatch.setattr(run_folder, "save_weights", save)  # best / last are written by run_folder.py
    return seen


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world")
    assert main(["synth", str(root), "--train-images", "8", "--val-images", "4", "--seed", "3"]) == 0
    return root


def _raw_state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def test_with_ema_disabled_saved_weights_are_the_raw_model(world: Path, tmp_path: Path, monkeypatch):
    seen = _spy(monkeypatch)
    args = ["train", str(world / "hydradet.yaml"), "train.epochs=1", f"project={tmp_path}", "name=ema_off", *FAST]
    assert main([*args, "train.ema.enabled=false"]) == 0
    assert seen["saved"] and all(m is seen["raw"] for m in seen["saved"])
    raw = _raw_state(seen["raw"])
    for name in ("best", "last"):
        saved = load_file(str(tmp_path / "ema_off" / "weights" / f"{name}.safetensors"))
        assert saved.keys() == raw.keys()
        assert all(saved[k].equal(raw[k]) for k in raw), name


def test_cli_saves_best_and_last_from_the_ema_model(world: Path, tmp_path: Path, monkeypatch):
    seen = _spy(monkeypatch)
    args = ["train", str(world / "hydradet.yaml"), "train.epochs=2", f"project={tmp_path}", "name=ema_on", *FAST]
    assert main([*args, "train.ema.tau=3"]) == 0
    assert seen["saved"] and all(m is not seen["raw"] for m in seen["saved"])
    ema_model = seen["saved"][-1]
    assert not ema_model.training
    raw, ema_state = _raw_state(seen["raw"]), _raw_state(ema_model)
    last = load_file(str(tmp_path / "ema_on" / "weights" / "last.safetensors"))
    best = load_file(str(tmp_path / "ema_on" / "weights" / "best.safetensors"))
    assert all(last[k].equal(ema_state[k]) for k in ema_state)
    for saved in (last, best):
        assert any(not saved[k].equal(raw[k]) for k in raw if k.startswith("backbone."))
        for head in ("person", "animal"):
            assert any(not saved[k].equal(raw[k]) for k in raw if k.startswith(f"heads.{head}."))
