"""Loss balancing (hydradet/train/balance.py): each method's formula on a hand-made case, and the rule under it."""

from __future__ import annotations

import math

import pytest
import torch
import yaml
from conftest import assert_alternate_steps_leave_person_untouched, make_batch, snapshot, tiny_config, tiny_model

from hydradet.cli import main
from hydradet.config import ConfigError
from hydradet.train.balance import DWA, Fixed, Uncertainty, build_balancer, dwa_weights, project_conflicts
from hydradet.train.optim import build_optimizer
from hydradet.train.step import head_losses, train_step


def test_fixed_weights_scale_each_heads_loss_and_unnamed_heads_weigh_1():
    bal = Fixed(["a", "b"], {"a": 0.25})
    assert float(bal.combine({"a": torch.tensor(4.0), "b": torch.tensor(3.0)})) == 1.0 + 3.0


def test_uncertainty_gradient_wrt_s_i_is_half_of_one_minus_loss_times_exp_minus_s_and_absent_heads_get_none():
    bal = Uncertainty(["a", "b"])
    with torch.no_grad():
        bal.log_var["a"].fill_(0.5)
    loss_a = torch.tensor(3.0, requires_grad=True)
    total = bal.combine({"a": loss_a})
    total.backward()
    assert float(total.detach()) == pytest.approx(3.0 * math.exp(-0.5) / 2 + 0.25)
    assert float(bal.log_var["a"].grad) == pytest.approx((1 - 3.0 * math.exp(-0.5)) / 2)  # dL/ds = (1 - L e^-s) / 2
    assert float(loss_a.grad) == pytest.approx(math.exp(-0.5) / 2)
    assert bal.log_var["b"].grad is None  # head b did not run: its s_b takes no step
    with pytest.raises(RuntimeError, match="head 'b' had no samples"):
        bal.log_var["b"].grad = torch.zeros(())
        bal.check_untouched(["a"])


def test_dwa_weights_from_given_losses_and_equal_for_the_first_two_epochs():
    # r_a = 1/2 = 0.5, r_b = 3/2 = 1.5, T = 2: w_i = 2 exp(r_i / 2) / (exp(0.25) + exp(0.75))
    w = dwa_weights({"a": [2.0, 1.0], "b": [2.0, 3.0]}, temperature=2.0)
    z = math.exp(0.25) + math.exp(0.75)
    assert w["a"] == pytest.approx(2 * math.exp(0.25) / z)
    assert w["b"] == pytest.approx(2 * math.exp(0.75) / z)
    assert w["a"] + w["b"] == pytest.approx(2.0)

    bal = DWA(["a", "b"], temperature=2.0)
    assert bal.weights == {"a": 1.0, "b": 1.0}  # epoch 1
    bal.end_epoch({"a": 2.0, "b": 2.0})
    assert bal.weights == {"a": 1.0, "b": 1.0}  # epoch 2
    bal.end_epoch({"a": 1.0, "b": 3.0})
    assert bal.weights == pytest.approx(w)  # epoch 3 on
    bal.end_epoch({"a": 0.5})  # an epoch without b's samples (alternate): b's history does not move
    assert bal.history["b"] == [2.0, 3.0] and bal.history["a"] == [2.0, 1.0, 0.5]


def test_pcgrad_projection_removes_the_conflicting_component_and_leaves_agreeing_gradients_alone():
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])  # g1 . g2 = -1 < 0: conflict
    p1, p2 = project_conflicts([g1, g2])
    torch.testing.assert_close(p1, torch.tensor([0.5, 0.5]))  # g1 - (g1.g2)/|g2|^2 g2
    torch.testing.assert_close(p2, torch.tensor([0.0, 1.0]))  # g2 - (g2.g1)/|g1|^2 g1
    assert float(p1 @ g2) == pytest.approx(0.0) and float(p2 @ g1) == pytest.approx(0.0)
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 0.5])  # a . b > 0: no conflict
    pa, pb = project_conflicts([a, b])
    assert torch.equal(pa, a) and torch.equal(pb, b)


def test_pcgrad_on_the_model_projects_the_shared_gradient_and_gives_heads_their_own():
    # loss_norm=batch: the losses are computed twice below, and a running normaliser would move in between.
    cfg = tiny_config(
        "model.backbone_norm=frozen", "train.balance.method=pcgrad", "model.loss_norm=batch", "train.balance.trunk=sum"
    )
    model = tiny_model(cfg)
    batch = make_batch(cfg, ["persons", "animals", "both", "animals"], seed=2)
    shared = [p for m in (model.backbone, model.neck) for p in m.parameters()]

    def own_grads():
        totals = {h: sum(t.values()) for h, t in head_losses(model, batch, cfg.source_heads()).items()}
        per_head = {}
        for h, loss in totals.items():
            model.zero_grad(set_to_none=True)
            loss.backward(retain_graph=True)
            per_head[h] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return per_head

    ref = own_grads()
    flat = {
        h: torch.cat([g[n].flatten() for n, _ in model.named_parameters() if n.split(".")[0] != "heads"])
        for h, g in ref.items()
    }
    assert float(flat["person"] @ flat["animal"]) != 0
    expected = sum(project_conflicts([flat["person"], flat["animal"]]))

    model.zero_grad(set_to_none=True)
    totals = {h: sum(t.values()) for h, t in head_losses(model, batch, cfg.source_heads()).items()}
    build_balancer(cfg.train.balance, cfg.heads).backward(totals, model)
    got = torch.cat([p.grad.flatten() for p in shared])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-8)
    for h in ("person", "animal"):
        for n, p in model.heads[h].named_parameters():
            torch.testing.assert_close(p.grad, ref[h][f"heads.{h}.{n}"], rtol=1e-5, atol=1e-8)


def test_default_balancing_is_bit_identical_to_the_plain_sum_of_losses():
    cfg = tiny_config("train.optimizer=adamw", "train.weight_decay=0.05")
    assert cfg.train.balance.method == "fixed" and cfg.train.balance.weights == {}
    states = []
    for balancer in (None, build_balancer(cfg.train.balance, cfg.heads)):
        model = tiny_model(cfg)
        opt = build_optimizer(model, cfg.train, balancer)
        for k in range(2):
            train_step(
                model, opt, make_batch(cfg, ["persons", "animals", "both"], seed=k), cfg.source_heads(), 1.0, balancer
            )
        states.append(snapshot(model))
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key


ALTERNATE_METHODS = [
    ("train.balance.method=fixed", "train.balance.weights={person: 2.0, animal: 0.5}"),
    ("train.balance.method=uncertainty",),
    ("train.balance.method=dwa",),
]


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("method", ALTERNATE_METHODS, ids=["fixed", "uncertainty", "dwa"])
def test_alternate_steps_leave_person_head_and_its_balancing_state_bit_identical(method, optimizer):
    cfg = tiny_config(
        f"train.optimizer={optimizer}",
        "train.weight_decay=0.05",
        "train.lr=0.01",
        "train.sampling.mode=alternate",
        *method,
    )
    balancer = build_balancer(cfg.train.balance, cfg.heads)
    if isinstance(balancer, DWA):  # weights that are not 1, as after two epochs
        balancer.end_epoch({"person": 2.0, "animal": 2.0})
        balancer.end_epoch({"person": 1.0, "animal": 3.0})
        assert balancer.weights["person"] != 1.0
    assert_alternate_steps_leave_person_untouched(cfg, tiny_model(cfg), balancer)
    if isinstance(balancer, Uncertainty):
        assert float(balancer.log_var["animal"].detach()) != 0 and float(balancer.log_var["person"].detach()) != 0


@pytest.mark.parametrize("method", ["fixed", "uncertainty", "dwa", "pcgrad"])
def test_mixed_batch_gives_person_head_the_gradient_of_its_person_samples_alone(method):
    cfg = tiny_config("model.backbone_norm=frozen", f"train.balance.method={method}")
    model = tiny_model(cfg)
    balancer = build_balancer(cfg.train.balance, cfg.heads)
    if isinstance(balancer, Uncertainty):
        with torch.no_grad():
            balancer.log_var["person"].fill_(0.3)
    if isinstance(balancer, DWA):
        balancer.weights = {"person": 1.4, "animal": 0.6}
    mixed = make_batch(cfg, ["persons", "animals", "persons", "animals", "animals"], seed=3)
    rows = [0, 2]
    alone = make_batch(cfg, ["persons"] * 2)
    alone.images, alone.targets = mixed.images[rows], [mixed.targets[i] for i in rows]

    def person_grads(batch):
        model.zero_grad(set_to_none=True)
        balancer.zero_grad(set_to_none=True)
        totals = {h: sum(t.values()) for h, t in head_losses(model, batch, cfg.source_heads()).items()}
        balancer.backward(totals, model)
        return [p.grad.clone() for p in model.heads["person"].parameters()]

    for gm, ga in zip(person_grads(mixed), person_grads(alone), strict=True):
        torch.testing.assert_close(gm, ga, rtol=1e-5, atol=1e-7)


def test_pcgrad_with_alternate_sampling_is_refused_at_config_time_with_exit_2(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"train.balance.method: pcgrad .* train.sampling.mode=mixed"):
        tiny_config("train.balance.method=pcgrad", "train.sampling.mode=alternate")
    (tmp_path / "p.json").write_text('{"images": [], "annotations": [], "categories": []}')
    cfg = {
        "heads": {"person": {"task": "detect", "classes": ["person"]}},
        "sources": {"persons": {"format": "coco", "train": "p.json", "labels": {"person": {"person": "person"}}}},
        "train": {"balance": {"method": "pcgrad"}, "sampling": {"mode": "alternate"}},
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "cfg.yaml")]) == 2
    err = capsys.readouterr().err
    assert "train.balance.method" in err and "train.sampling.mode" in err


def test_balance_weights_must_name_known_heads_and_belong_to_fixed():
    with pytest.raises(ConfigError, match=r"train.balance.weights.cat: unknown head"):
        tiny_config("train.balance.weights={cat: 2}")
    with pytest.raises(ConfigError, match=r"train.balance.weights: per-head weights are used by method `fixed`"):
        tiny_config("train.balance.method=dwa", "train.balance.weights={person: 2}")
