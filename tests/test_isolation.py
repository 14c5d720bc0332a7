"""The one rule, bit for bit: a sample supervises only the heads that its dataset labels."""

from __future__ import annotations

import pytest
import torch
from conftest import make_batch, optimizer_state_of, snapshot, tiny_config, tiny_model

from hydradet.train.optim import build_optimizer
from hydradet.train.rule import check_untouched, rows_per_head
from hydradet.train.step import head_losses, train_step


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> list[str]:
    return [k for k in before if not torch.equal(before[k], after[k])]


@pytest.mark.parametrize(
    "optimizer_overrides",
    [
        ("train.optimizer=sgd", "train.momentum=0.9", "train.weight_decay=0.01", "train.lr=0.05"),
        ("train.optimizer=adamw", "train.weight_decay=0.05", "train.lr=0.01"),
    ],
    ids=["sgd-momentum-wd", "adamw-wd"],
)
def test_alternate_steps_on_animals_leave_person_head_and_its_optimizer_state_bit_identical(optimizer_overrides):
    cfg = tiny_config(*optimizer_overrides)
    model = tiny_model(cfg)
    opt = build_optimizer(model, cfg.train)
    sh = cfg.source_heads()
    # One mixed step first, so the person head HAS momentum / Adam moments that a leak would move.
    train_step(model, opt, make_batch(cfg, ["persons", "animals"] * 2, seed=1), sh)
    person_params = list(model.heads["person"].parameters())
    person_before = snapshot(model.heads["person"])
    person_state_before = optimizer_state_of(opt, person_params)
    assert all(s for s in person_state_before), "person head should have optimizer state after its own step"
    animal_before, backbone_before = snapshot(model.heads["animal"]), snapshot(model.backbone)

    for k in range(3):
        losses = train_step(model, opt, make_batch(cfg, ["animals"] * 4, seed=10 + k), sh)
        assert set(losses) == {"animal"}
        assert all(p.grad is None for p in person_params)

    assert _changed(person_before, snapshot(model.heads["person"])) == []
    for before, after in zip(person_state_before, optimizer_state_of(opt, person_params), strict=True):
        assert before.keys() == after.keys()
        for key in before:
            assert torch.equal(torch.as_tensor(before[key]), torch.as_tensor(after[key])), key
    assert _changed(animal_before, snapshot(model.heads["animal"]))
    assert _changed(backbone_before, snapshot(model.backbone))


def test_mixed_batch_gives_person_head_the_gradient_of_its_person_samples_alone():
    # Frozen BatchNorm: with batch statistics a sample's features depend on its batch-mates, a property of
    # the backbone rather than of supervision (see the next test for what holds with trainable BN).
    cfg = tiny_config("model.backbone_norm=frozen")
    model = tiny_model(cfg)
    sh = cfg.source_heads()
    mixed = make_batch(cfg, ["persons", "animals", "persons", "animals", "animals"], seed=3)
    person_rows = [i for i, s in enumerate(mixed.sources) if s == "persons"]
    alone = make_batch(cfg, ["persons"] * len(person_rows))
    alone.images = mixed.images[person_rows]
    alone.targets = [mixed.targets[i] for i in person_rows]

    def grads(batch, head_set):
        model.zero_grad(set_to_none=True)
        losses = head_losses(model, batch, sh)
        sum(sum(t.values()) for h, t in losses.items() if h in head_set).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    g_mixed = grads(mixed, {"person", "animal"})
    g_alone = grads(alone, {"person"})
    person_keys = [n for n in g_alone if n.startswith("heads.person.")]
    assert person_keys
    for n in person_keys:
        torch.testing.assert_close(g_mixed[n], g_alone[n], rtol=1e-5, atol=1e-7)
    backbone_keys = [n for n in g_alone if n.startswith("backbone.")]
    assert any(not torch.allclose(g_mixed[n], g_alone[n]) for n in backbone_keys)


def test_mixed_batch_gives_person_head_the_update_of_its_person_samples_alone_with_clipping_engaged():
    # Clipping by one global norm would scale the person head's update by the animal samples' gradients.
    cfg = tiny_config("model.backbone_norm=frozen", "train.optimizer=sgd", "train.momentum=0", "train.weight_decay=0")
    sh = cfg.source_heads()
    mixed = make_batch(cfg, ["persons", "animals", "persons", "animals"], seed=6)
    rows = [0, 2]
    alone = make_batch(cfg, ["persons", "persons"])
    alone.images, alone.targets = mixed.images[rows], [mixed.targets[i] for i in rows]

    def person_update(batch):
        model = tiny_model(cfg)
        opt = build_optimizer(model, cfg.train)
        before = snapshot(model.heads["person"])
        train_step(model, opt, batch, sh, grad_clip=0.05)
        return {k: v - before[k] for k, v in snapshot(model.heads["person"]).items()}

    probe = tiny_model(cfg)
    sum(sum(t.values()) for t in head_losses(probe, mixed, sh).values()).backward()
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in probe.parameters() if p.grad is not None]))
    assert norm > 0.05, "the clip must actually engage for this test to mean anything"
    from_mixed, from_alone = person_update(mixed), person_update(alone)
    for key, delta in from_alone.items():
        torch.testing.assert_close(from_mixed[key], delta, rtol=1e-4, atol=1e-8)


def test_other_sources_labels_never_reach_a_head_even_with_trainable_batchnorm():
    cfg = tiny_config()
    model = tiny_model(cfg)
    sh = cfg.source_heads()
    a = make_batch(cfg, ["persons", "animals", "persons", "animals"], seed=4)
    b = make_batch(cfg, ["persons", "animals", "persons", "animals"], seed=4)
    for i in (1, 3):  # rewrite the animal samples' labels entirely
        b.targets[i]["animal"] = {"boxes": torch.tensor([[1.0, 1.0, 50.0, 60.0]]), "labels": torch.tensor([2])}

    def person_grads(batch):
        model.zero_grad(set_to_none=True)
        sum(head_losses(model, batch, sh)["person"].values()).backward()
        return [p.grad.clone() for p in model.heads["person"].parameters()]

    for ga, gb in zip(person_grads(a), person_grads(b), strict=True):
        assert torch.equal(ga, gb)


def test_source_labelling_both_heads_trains_both_from_the_same_sample():
    cfg = tiny_config("train.optimizer=sgd", "train.lr=0.05")
    model = tiny_model(cfg)
    opt = build_optimizer(model, cfg.train)
    before = {h: snapshot(model.heads[h]) for h in ("person", "animal")}
    batch = make_batch(cfg, ["both"], seed=5)
    assert set(batch.targets[0]) == {"person", "animal"}
    losses = train_step(model, opt, batch, cfg.source_heads())
    assert set(losses) == {"person", "animal"}
    for h in ("person", "animal"):
        assert _changed(before[h], snapshot(model.heads[h])), h


def test_rows_per_head_follows_each_sources_labels():
    rows = rows_per_head(["persons", "animals", "both", "persons"], tiny_config().source_heads())
    assert rows["person"].tolist() == [0, 2, 3]
    assert rows["animal"].tolist() == [1, 2]
    assert rows_per_head(["animals"], tiny_config().source_heads()).keys() == {"animal"}


def test_check_untouched_raises_when_a_head_without_samples_got_a_gradient():
    cfg = tiny_config()
    model = tiny_model(cfg)
    p = next(model.heads["person"].parameters())
    p.grad = torch.zeros_like(p)
    with pytest.raises(RuntimeError, match="head 'person' had no samples"):
        check_untouched(model.heads, active=["animal"])
    check_untouched(model.heads, active=["animal", "person"])


def test_running_loss_norm_moves_only_on_the_heads_own_steps():
    # model.loss_norm=running keeps a per-head running count of positives: state outside the weights that an
    # animal-only step must leave alone, as it does the person head's parameters and optimizer state.
    cfg = tiny_config("model.loss_norm=running")
    model = tiny_model(cfg)
    opt, sh = build_optimizer(model, cfg.train), cfg.source_heads()
    train_step(model, opt, make_batch(cfg, ["persons", "animals"], seed=3), sh)
    person, animal = float(model.heads["person"].running_fg), float(model.heads["animal"].running_fg)
    assert person > 0 and animal > 0
    train_step(model, opt, make_batch(cfg, ["animals"] * 2, seed=4), sh)
    assert float(model.heads["person"].running_fg) == person
    assert float(model.heads["animal"].running_fg) != animal


def test_trunk_balancing_scales_only_what_each_head_sends_into_the_trunk():
    # train.balance.trunk=positives: the shared trunk gets sum_h w_h * (head h's trunk gradient), w from the heads'
    # running positive counts; every head's own parameters get exactly the gradient they get without it.
    cfg = tiny_config("model.backbone_norm=frozen", "model.loss_norm=running")
    model = tiny_model(cfg)
    sh = cfg.source_heads()
    head_losses(model, make_batch(cfg, ["persons", "animals", "both"], seed=5), sh)  # counts for both heads
    counts = {h: float(model.heads[h].running_fg) for h in ("person", "animal")}
    batch = make_batch(cfg, ["persons", "animals", "animals"], seed=6)

    def grads(trunk_mode: str, only: str | None = None) -> dict[str, torch.Tensor]:
        saved = {h: model.heads[h].running_fg.clone() for h in counts}
        losses = head_losses(model, batch, sh, trunk=trunk_mode)
        for h, v in saved.items():  # the same counts for every pass: compare like with like
            model.heads[h].running_fg.copy_(v)
        model.zero_grad(set_to_none=True)
        sum(sum(t.values()) for h, t in losses.items() if only in (None, h)).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads("sum")
    per_head = {h: grads("sum", only=h) for h in counts}
    for mode, power in (("positives", 1.0), ("sqrt", 0.5)):  # shares of count ** power
        balanced = grads(mode)
        weights = {h: 2 * c**power / sum(v**power for v in counts.values()) for h, c in counts.items()}
        assert abs(weights["person"] - 1) > 0.05  # the case is not trivially balanced
        for n in plain:
            if n.startswith("heads."):
                assert torch.equal(plain[n], balanced[n]), n
        trunk_names = [n for n in balanced if not n.startswith("heads.")]
        assert trunk_names
        for n in trunk_names:
            want = sum(weights[h] * per_head[h][n] for h in counts if n in per_head[h])
            torch.testing.assert_close(balanced[n], want, rtol=1e-4, atol=1e-7)
