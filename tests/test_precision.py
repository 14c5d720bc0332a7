"""Mixed precision (`train.amp`, train/precision.py) keeps the rule: with bf16 and with fp16 + GradScaler, steps
on the animal source leave the person head, its optimizer state and its EMA copy bit-identical; an fp16 overflow
skips the step with no head changed and lowers the scale; the losses stay fp32. Run on the CPU's autocast here;
benchmarks/gpu_check.py runs the same on CUDA."""

from __future__ import annotations

import pytest
import torch
from conftest import make_batch, optimizer_state_of, snapshot, tiny_config, tiny_model

from hydradet.train.ema import ModelEMA
from hydradet.train.optim import build_optimizer
from hydradet.train.precision import Precision, precision_for
from hydradet.train.step import NonFiniteStep, head_losses, train_step


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_animal_steps_leave_the_person_head_bit_identical_under_amp(amp: str, one_thread):
    cfg = tiny_config()
    model = tiny_model(cfg)
    precision = precision_for(amp, torch.device("cpu"))
    opt, sh, ema = build_optimizer(model, cfg.train), cfg.source_heads(), ModelEMA(model, 0.9, 1.0)
    ema.update(
        model, train_step(model, opt, make_batch(cfg, ["persons", "animals"] * 2, seed=1), sh, 1.0, precision=precision)
    )
    person = list(model.heads["person"].parameters())
    before, state, ema_before = (
        snapshot(model.heads["person"]),
        optimizer_state_of(opt, person),
        snapshot(ema.ema.heads["person"]),
    )
    assert all(state), "the person head should have optimizer state after its own step"
    animal_before = snapshot(model.heads["animal"])
    for k in range(3):
        losses = train_step(model, opt, make_batch(cfg, ["animals"] * 4, seed=10 + k), sh, 1.0, precision=precision)
        ema.update(model, losses)
        assert set(losses) == {"animal"} and all(p.grad is None for p in person)
    after = snapshot(model.heads["person"])
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(torch.equal(ema_before[k], v) for k, v in snapshot(ema.ema.heads["person"]).items())
    for sb, sa in zip(state, optimizer_state_of(opt, person), strict=True):
        assert all(torch.equal(sb[key], sa[key]) for key in sb)
    assert any(not torch.equal(animal_before[k], v) for k, v in snapshot(model.heads["animal"]).items())


def test_losses_are_fp32_while_the_forward_runs_in_bf16(one_thread):
    cfg = tiny_config()
    model = tiny_model(cfg)
    batch = make_batch(cfg, ["persons", "animals"], seed=2)
    losses = head_losses(model, batch, cfg.source_heads(), precision=Precision(torch.bfloat16, "cpu"))
    assert all(v.dtype == torch.float32 for terms in losses.values() for v in terms.values())


def test_an_fp16_overflow_skips_the_step_changing_nothing_and_lowers_the_scale(one_thread):
    cfg = tiny_config()
    model = tiny_model(cfg)
    precision = precision_for("fp16", torch.device("cpu"))
    opt, sh = build_optimizer(model, cfg.train), cfg.source_heads()
    train_step(model, opt, make_batch(cfg, ["persons", "animals"] * 2, seed=1), sh, 1.0, precision=precision)
    params = list(model.parameters())
    before, state = snapshot(model), optimizer_state_of(opt, params)
    precision.scaler.update(new_scale=1e38)  # type: ignore[union-attr]  # scaled fp16 gradients overflow to inf
    with pytest.raises(NonFiniteStep):
        train_step(model, opt, make_batch(cfg, ["persons", "animals"] * 2, seed=3), sh, 1.0, precision=precision)
    assert precision.scaler.get_scale() < 1e38  # type: ignore[union-attr]
    after = snapshot(model)
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm statistics too
    for sb, sa in zip(state, optimizer_state_of(opt, params), strict=True):
        assert all(torch.equal(sb[key], sa[key]) for key in sb)


def test_amp_auto_is_off_on_the_cpu():
    assert precision_for("auto", torch.device("cpu")).dtype is None
