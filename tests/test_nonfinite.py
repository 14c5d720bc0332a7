"""NaN and inf: a non-finite loss or gradient skips the step (no optimizer step, no EMA update, nothing changed),
is counted per head in results.csv, and `train.max_bad_steps` in a row stop the run with a message naming the
head, the step and what to do; weights with NaN are never written."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from conftest import CLI_FAST, make_batch, optimizer_state_of, snapshot, tiny_config, tiny_model
from safetensors.torch import load_file

import hydradet.train.trainer as trainer_module
from hydradet.cli import main
from hydradet.train.optim import build_optimizer
from hydradet.train.step import NonFiniteStep, train_step


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world")
    assert main(["synth", str(root), "--train-images", "8", "--val-images", "4", "--seed", "2"]) == 0
    return root


def _one_good_step(cfg, model):
    opt = build_optimizer(model, cfg.train)
    train_step(model, opt, make_batch(cfg, ["persons", "animals"] * 2, seed=1), cfg.source_heads(), 1.0)
    return opt


def test_a_nan_loss_skips_the_step_and_changes_nothing(one_thread):
    cfg = tiny_config()
    model = tiny_model(cfg)
    opt = _one_good_step(cfg, model)  # so that there is optimizer state to keep
    params = list(model.parameters())
    before, state_before = snapshot(model), optimizer_state_of(opt, params)
    fg_before = [h.running_fg.clone() for h in model.heads.values()]  # non-persistent: not in the snapshot
    batch = make_batch(cfg, ["persons", "animals"], seed=2)
    batch.images[1] = float("nan")  # the animal sample's pixels: only the animal head's loss is NaN
    with pytest.raises(NonFiniteStep) as bad:
        train_step(model, opt, batch, cfg.source_heads(), 1.0)
    assert bad.value.what == "loss"
    # NaN pixels reach every head through batch statistics, so both may be named; the animal head must be
    assert "animal" in bad.value.heads
    assert all(p.grad is None for p in params)
    after = snapshot(model)
    for k in before:  # BatchNorm statistics included: the NaN forward moved them, the skip put them back
        assert torch.equal(before[k], after[k]), k
    assert all(torch.equal(a, b) for a, b in zip(fg_before, [h.running_fg for h in model.heads.values()], strict=True))
    for sb, sa in zip(state_before, optimizer_state_of(opt, params), strict=True):
        assert all(torch.equal(sb[key], sa[key]) for key in sb)


def test_an_inf_gradient_in_one_head_skips_the_step_naming_that_head(one_thread):
    cfg = tiny_config()
    model = tiny_model(cfg)
    opt = _one_good_step(cfg, model)
    before = snapshot(model)
    weight = next(model.heads["person"].parameters())
    hook = weight.register_hook(lambda g: g * float("inf"))
    with pytest.raises(NonFiniteStep) as bad:
        train_step(model, opt, make_batch(cfg, ["persons", "animals"] * 2, seed=3), cfg.source_heads(), 1.0)
    hook.remove()
    assert (bad.value.what, bad.value.heads) == ("gradient", ["person"])
    after = snapshot(model)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_skipped_step_is_counted_per_head_and_the_run_goes_on(world: Path, tmp_path: Path, monkeypatch, capsys):
    real, calls = trainer_module.train_step, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise NonFiniteStep(["animal"], "loss")
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "train_step", flaky)
    args = [*CLI_FAST, "train.epochs=1", "train.steps_per_epoch=4", f"project={tmp_path}", "name=r"]
    assert main(["train", str(world / "hydradet.yaml"), *args]) == 0
    out = capsys.readouterr().out
    assert "non-finite loss in head(s) animal at epoch 1, step 2: step skipped" in out
    assert "non-finite steps skipped this epoch (no update): animal 1" in out
    (row,) = csv.DictReader((tmp_path / "r" / "results.csv").open())
    assert (row["bad_steps/animal"], row["bad_steps/person"]) == ("1", "0")


def test_a_diverging_run_stops_with_the_head_step_and_the_checkpoint_to_resume_from(
    world: Path, tmp_path: Path, capsys
):
    args = [*CLI_FAST, "train.epochs=3", "train.steps_per_epoch=3", "train.max_bad_steps=3", "train.save_period=0"]
    args += ["train.lr=1e6", "train.warmup_epochs=0", f"project={tmp_path}", "name=r"]
    assert main(["train", str(world / "hydradet.yaml"), *args]) == 2
    err = capsys.readouterr().err
    assert "training stopped: 3 steps in a row (train.max_bad_steps) had a non-finite" in err
    assert "head(s)" in err and "step" in err and "Traceback" not in err
    run = tmp_path / "r"
    # the first step is finite (it is the one that blows the weights up), so a checkpoint exists to name
    assert f"hydradet train --resume {run} train.lr=100000" in err
    assert str(run / "weights" / "checkpoint.pt") in err
    for weights in (run / "weights").glob("*.safetensors"):  # whatever was written holds no NaN
        assert all(torch.isfinite(t).all() for t in load_file(weights).values() if t.is_floating_point())
