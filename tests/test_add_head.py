"""Adding a head to a trained model: with the trunk and old heads frozen (`train.freeze`) the old heads'
predictions stay bit-identical, through the CLI; with `train.distill_old_heads` the initial model teaches the
old heads on the new source's images (soft targets), and nothing else changes about the rule."""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import pytest
import torch
import yaml
from conftest import CLI_FAST as FAST
from conftest import make_batch, snapshot, tiny_config, tiny_model

from hydradet.cli import main
from hydradet.config import ConfigError
from hydradet.data.dataset import letterbox, load_image
from hydradet.model.detect_head import DetectOutput
from hydradet.model.weights import load_model
from hydradet.train.distill import Distiller
from hydradet.train.optim import build_optimizer
from hydradet.train.step import head_losses, train_step

OLD = ["backbone", "neck", "heads.person", "heads.animal"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world")
    assert main(["synth", str(root), "--train-images", "8", "--val-images", "4", "--seed", "5"]) == 0
    return root


@pytest.fixture(scope="module")
def base_weights(world: Path, tmp_path_factory) -> Path:
    project = tmp_path_factory.mktemp("runs")
    assert main(["train", str(world / "hydradet.yaml"), "train.epochs=1", f"project={project}", "name=a", *FAST]) == 0
    return project / "a" / "weights" / "best.safetensors"


def _with_new_head(world: Path, out: Path) -> Path:
    """The user's new config: the old heads plus `pet` (dogs), a new source that labels only `pet`; old sources
    left out (their data may be gone); the val source also scores the new head."""
    cfg = yaml.safe_load((world / "hydradet.yaml").read_text())
    cfg["heads"]["pet"] = {"task": "detect", "classes": ["dog"]}
    pets = {"format": "yolo", "train": str(world / "animals" / "data.yaml"), "labels": {"pet": {"dog": "dog"}}}
    val = cfg["sources"]["synth_val"]
    val["val"] = str(world / val["val"])
    val["labels"]["pet"] = {"dog": "dog"}
    cfg["sources"] = {"pets": pets, "synth_val": val}
    path = out / "with_pet.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _raw_outputs(weights: Path, images: list[Path], heads: list[str]) -> dict[str, DetectOutput]:
    model = load_model(weights)
    batch = torch.stack([letterbox(load_image(p), model.model_cfg.imgsz)[0] for p in images]).float() / 255
    with torch.no_grad():
        return model(batch, dict.fromkeys(heads))


def _train_new_head(world: Path, base: Path, tmp: Path, name: str, *extra: str) -> Path:
    args = ["train", str(_with_new_head(world, tmp)), "train.epochs=2", f"project={tmp}", f"name={name}"]
    assert main([*args, f"model.init={base}", "train.optimizer=sgd", "train.weight_decay=0.01", *FAST, *extra]) == 0
    return tmp / name / "weights" / "best.safetensors"


def test_new_head_with_frozen_trunk_and_old_heads_keeps_old_predictions_bit_identical(world, base_weights, tmp_path):
    new = _train_new_head(world, base_weights, tmp_path, "frozen", f"train.freeze=[{', '.join(OLD)}]")
    images = sorted((world / "val" / "images").glob("*.jpg"))
    before = _raw_outputs(base_weights, images, ["person", "animal"])
    after = _raw_outputs(new, images, ["person", "animal", "pet"])
    for head in ("person", "animal"):
        for field in ("cls_logits", "box_ltrb", "centerness"):
            assert torch.equal(getattr(before[head], field), getattr(after[head], field)), (head, field)
    # The public predict API gives the same boxes too, and the new head predicts.
    from hydradet import load

    old_results, new_results = load(base_weights).predict(images, conf=0.01), load(new).predict(images, conf=0.01)
    for r_old, r_new in zip(old_results, new_results, strict=True):
        for head in ("person", "animal"):
            assert (r_old.heads[head].boxes == r_new.heads[head].boxes).all()
            assert (r_old.heads[head].scores == r_new.heads[head].scores).all()
    assert set(new_results[0].heads) == {"person", "animal", "pet"}
    rows = list(csv.DictReader((new.parents[1] / "results.csv").open()))
    assert all(r["loss/pet"] != "" and r["loss/person"] == "" for r in rows)  # only the new head trained
    assert rows[-1]["pet/mAP50"] != "" and rows[-1]["person/mAP50"] != ""


def test_unfrozen_backbone_moves_old_predictions_so_the_frozen_test_can_fail(world, base_weights, tmp_path):
    new = _train_new_head(world, base_weights, tmp_path, "unfrozen", "train.freeze=[heads.person, heads.animal]")
    images = sorted((world / "val" / "images").glob("*.jpg"))
    before = _raw_outputs(base_weights, images, ["person"])["person"]
    after = _raw_outputs(new, images, ["person"])["person"]
    assert not torch.equal(before.cls_logits, after.cls_logits)


def test_distillation_through_the_cli_names_the_old_heads_and_teaches_them(world, base_weights, tmp_path, capsys):
    new = _train_new_head(world, base_weights, tmp_path, "distill", "train.distill_old_heads=true")
    assert "distill: old heads person, animal learn from the initial model" in capsys.readouterr().out
    before, after = load_model(base_weights), load_model(new)
    # The old heads had no labelled source in this run: only the teacher can have moved them.
    pairs = zip(before.heads["person"].parameters(), after.heads["person"].parameters(), strict=True)
    assert any(not torch.equal(a, b) for a, b in pairs)


def test_distillation_without_init_is_a_config_error():
    with pytest.raises(ConfigError, match=r"train.distill_old_heads: distillation needs the model to start from"):
        tiny_config("train.distill_old_heads=true")
    with pytest.raises(ConfigError, match=r"train.freeze: give either train.freeze .* or train.phases"):
        tiny_config("train.freeze=[backbone]", "train.phases=[{epochs: 1, freeze: []}]")
    with pytest.raises(ConfigError, match=r"train.freeze: 'trunk': unknown module prefix"):
        tiny_config("train.freeze=[trunk]")


def test_distill_loss_is_zero_for_the_teachers_own_outputs_and_pulls_toward_them():
    cfg = tiny_config()
    model = tiny_model(cfg).eval()
    images = make_batch(cfg, ["persons", "animals"]).images
    with torch.no_grad():
        teacher = model(images)["person"]
    teacher.cls_logits[:, :20] = 3.0  # a confident object at some locations, so that every term has weight
    head = model.heads["person"]
    same = head.distill_loss(teacher, teacher)
    assert all(abs(float(v)) < 1e-5 for v in same.values()), same
    logits = (teacher.cls_logits + torch.randn_like(teacher.cls_logits)).requires_grad_(True)
    student = DetectOutput(logits, teacher.box_ltrb * 1.3, teacher.centerness + 1.0, teacher.points, teacher.strides)
    terms = head.distill_loss(student, teacher)
    assert all(float(v.detach()) > 0 for v in terms.values()), terms
    terms["distill_cls"].backward()
    step = logits.detach() - 10.0 * logits.grad
    moved = DetectOutput(step, teacher.box_ltrb, teacher.centerness, teacher.points, teacher.strides)
    assert float(head.distill_loss(moved, teacher)["distill_cls"]) < float(terms["distill_cls"].detach())


def test_distiller_teaches_old_heads_only_on_rows_their_source_does_not_label():
    cfg = tiny_config()
    model = tiny_model(cfg)
    distiller = Distiller(model, ["person"])
    batch = make_batch(cfg, ["persons", "animals", "animals"], seed=2)
    sh = cfg.source_heads()
    assert {h: r.tolist() for h, r in distiller.rows(batch.sources, sh).items()} == {"person": [1, 2]}
    losses = head_losses(model, batch, sh, distiller)
    assert set(losses["person"]) == {"cls", "box", "ctr", "distill_cls", "distill_box", "distill_ctr"}
    assert set(losses["animal"]) == {"cls", "box", "ctr"}  # not an old head: never taught
    # The teacher's targets for row 1 are its outputs on that image alone (eval mode: no batch statistics).
    alone = distiller.targets(batch.images[1:2], {"person": torch.tensor([0])})["person"]
    joint = distiller.targets(batch.images, {"person": torch.tensor([1, 2])})["person"]
    assert torch.allclose(alone.cls_logits[0], joint.cls_logits[0], atol=1e-5)


def test_steps_with_a_distiller_leave_the_teacher_and_untaught_heads_untouched():
    cfg = tiny_config()
    model = tiny_model(cfg)
    distiller = Distiller(model, ["person"])
    teacher_before = snapshot(distiller.teacher)
    opt = build_optimizer(model, cfg.train)
    sh = cfg.source_heads()
    without = copy.deepcopy(model)
    opt_without = build_optimizer(without, cfg.train)
    model.train()
    without.train()
    animals = make_batch(cfg, ["animals", "animals"], seed=3)
    person_before = snapshot(model.heads["person"])
    train_step(model, opt, animals, sh, 10.0, None, distiller)
    train_step(without, opt_without, animals, sh, 10.0)
    assert any(not torch.equal(v, snapshot(model.heads["person"])[k]) for k, v in person_before.items())
    assert all(torch.equal(v, snapshot(without.heads["person"])[k]) for k, v in person_before.items())
    assert all(torch.equal(v, snapshot(distiller.teacher)[k]) for k, v in teacher_before.items())
