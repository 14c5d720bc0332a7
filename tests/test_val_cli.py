"""`hydradet val CONFIG WEIGHTS`: the heads the config and the model share are evaluated, every other head is
named with the reason; a config with fewer heads than the model, and one whose sources have only `val` splits,
work (training still refuses the latter); evaluation shows a progress bar."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_config, tiny_model

from hydradet.cli import main
from hydradet.data.dataset import split_datasets
from hydradet.eval.evaluate import evaluate
from hydradet.model.weights import save_weights

PERSON = "person: {task: detect, classes: [person]}"
ANIMAL = "animal: {task: detect, classes: [dog, bird, giraffe]}"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world")
    assert main(["synth", str(root), "--train-images", "2", "--val-images", "4", "--seed", "1"]) == 0
    return root


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A model with heads person and animal (the synthetic world's classes), random weights."""
    path = tmp_path_factory.mktemp("w") / "two_heads.safetensors"
    save_weights(tiny_model(tiny_config("model.imgsz=96")), path)
    return path


def write_config(path: Path, heads: list[str], sources: list[str]) -> Path:
    path.write_text(
        "heads:\n" + "".join(f"  {h}\n" for h in heads) + "sources:\n" + "".join(f"  {s}\n" for s in sources)
    )
    return path


def val_source(world: Path, labels: str = "{person: {person: person}}") -> str:
    return f"v: {{format: coco, val: {world / 'val' / 'annotations.json'}, labels: {labels}}}"


def table(out: str) -> dict[str, list[str]]:
    """head -> its row's cells, from the printed table."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("head "))
    return {line.split()[0]: line.split()[1:] for line in lines[start + 1 :] if line.strip()}


def test_a_val_only_config_with_fewer_heads_than_the_model(world: Path, weights: Path, tmp_path: Path, capsys):
    config = write_config(tmp_path / "person_val.yaml", [PERSON], [val_source(world)])
    assert main(["val", str(config), str(weights), "train.plots=false"]) == 0
    out = capsys.readouterr().out
    rows = table(out)
    assert list(rows) == ["person"] and rows["person"][0] == "4"  # 4 val images
    assert f"val: animal: in {weights} but not in the config: not evaluated" in out

    # The same person numbers as with the full config (train sources and both heads): leaving a head out
    # changes nothing for the others.
    assert main(["val", str(world / "hydradet.yaml"), str(weights), "train.plots=false"]) == 0
    full = table(capsys.readouterr().out)
    assert set(full) == {"person", "animal"} and full["person"] == rows["person"]

    # Training still needs a train split: the val-only permission is for `val` alone.
    assert main(["train", str(config)]) == 2
    assert "nothing to train on" in capsys.readouterr().err


def test_heads_left_out_are_named_with_the_reason(world: Path, weights: Path, tmp_path: Path, capsys):
    animals = f"animals: {{format: yolo, train: {world / 'animals' / 'data.yaml'}, labels: {{animal: {{dog: dog}}}}}}"
    config = write_config(
        tmp_path / "c.yaml",
        [PERSON, ANIMAL, "vehicle: {task: detect, classes: [car]}"],
        [val_source(world), animals],
    )
    assert main(["val", str(config), str(weights), "train.plots=false"]) == 0
    out = capsys.readouterr().out
    assert list(table(out)) == ["person"]
    assert "val: animal: sources ['animals'] have no `val` split: not evaluated" in out
    assert f"val: vehicle: in the config but not in {weights} (its heads: ['person', 'animal']): not evaluated" in out


@pytest.mark.parametrize(
    ("head", "key"),
    [("person: {task: detect, classes: [human]}", "heads.person.classes"), ("person: {task: regress}", None)],
)
def test_a_shared_head_with_other_classes_or_task_is_refused(world, weights, tmp_path, capsys, head, key):
    labels = "{person: {person: human}}" if key else "{}"
    sources = [val_source(world, labels)] if key else []
    if not key:  # a regress head's labels come from a csv source
        csv = tmp_path / "v.csv"
        csv.write_text("image,person\n")
        sources = [f"v: {{format: csv, val: {csv}, labels: {{person: person}}}}"]
    config = write_config(tmp_path / "c.yaml", [head], sources)
    assert main(["val", str(config), str(weights)]) == 2
    err = capsys.readouterr().err
    assert (key or "heads.person.task") in err and str(weights) in err and "would not match" in err


def test_nothing_to_evaluate_says_why_for_every_head(world: Path, weights: Path, tmp_path: Path, capsys):
    config = write_config(
        tmp_path / "c.yaml",
        ["vehicle: {task: detect, classes: [person]}"],
        [val_source(world, "{vehicle: {person: person}}")],
    )
    assert main(["val", str(config), str(weights)]) == 2
    err = capsys.readouterr().err
    assert (
        "nothing to evaluate" in err and "person: in" in err and "animal: in" in err and "vehicle: in the config" in err
    )


def test_evaluation_shows_a_progress_bar_that_clears_itself(world: Path, capsys, one_thread):
    """The function the trainer calls at each epoch's end: the bar counts images on stderr and is erased when
    done (tqdm leave=False), so that the training log keeps one line per epoch."""
    from hydradet.config.load import load_config

    cfg = load_config(
        world / "hydradet.yaml",
        ["model.backbone=resnet18", "model.backbone_weights=null", "model.neck_width=16", "model.imgsz=96"],
    )
    model = tiny_model(cfg)
    results = evaluate(model, cfg, split_datasets(cfg, "val"), torch.device("cpu"))
    assert set(results) == {"person", "animal"}
    err = capsys.readouterr().err
    assert "val: " in err and "/4 [" in err and "img" in err
    assert err.endswith("\r")  # the bar's line cleared at the end, not left behind
