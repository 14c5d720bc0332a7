"""The end of a run says what it made (train/summary.py): which epoch is best and why, its per-head table, the
threshold each detect head will use in predict, and where the weights and pictures are; the evaluation pictures
are those of best. A calibrated conf from too little val evidence is not kept as a head's default
(eval/calibration.py)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from conftest import CLI_FAST
from safetensors import safe_open
from safetensors.torch import load_file

from hydradet.cli import main
from hydradet.eval import calibration
from hydradet.eval.calibration import calibrated_conf
from hydradet.train import trainer

RUN = [*CLI_FAST, "train.epochs=3", "train.steps_per_epoch=3"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world")
    assert main(["synth", str(root), "--train-images", "8", "--val-images", "6", "--seed", "3"]) == 0
    return root


def _meta(path: Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["hydradet"])


def test_the_summary_names_the_best_epoch_and_the_pictures_are_best_s(
    world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    """Fitness made highest at epoch 1 of 3: the summary says epoch 1 with its table, best.safetensors is epoch 1's,
    and best is evaluated once more at the end for the pictures (as Ultralytics validates best.pt)."""
    scores = iter([0.5, 0.1, 0.2])
    monkeypatch.setattr(trainer, "fitness", lambda metrics, heads: next(scores))
    evaluated: list[dict[str, torch.Tensor]] = []
    real = trainer.evaluate

    def spy(model, *args, **kwargs):
        evaluated.append({k: v.detach().clone().cpu() for k, v in model.state_dict().items()})
        return real(model, *args, **kwargs)

    monkeypatch.setattr(trainer, "evaluate", spy)
    assert main(["train", str(world / "hydradet.yaml"), *RUN, "train.plots=true", f"project={tmp_path}"]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "train"
    assert "best: epoch 1 of 3, fitness 0.5000, the highest of 3 evaluated epoch(s)" in out
    rows = list(csv.DictReader((run / "results.csv").open()))
    summary = out[out.index("summary of") :]
    for head in ("person", "animal"):  # best's table: epoch 1's row, not the last one
        line = next(s for s in summary.splitlines() if s.strip().startswith(head) and "predict" not in s)
        assert f"{float(rows[0][f'{head}/mAP50']):.3f}" in line.split()[3]
        assert f"predict conf {head}: " in summary
    assert f"weights: {run / 'weights' / 'best.safetensors'} (epoch 1), last.safetensors (3)" in summary
    assert "pictures: " in summary and "(evaluation pictures of best, epoch 1)" in summary
    assert _meta(run / "weights" / "best.safetensors")["epoch"] == 1
    assert len(evaluated) == 4  # three epochs, then best once more
    best = load_file(str(run / "weights" / "best.safetensors"))
    assert all(torch.equal(evaluated[-1][k], best[k]) for k in best)
    assert not all(torch.equal(evaluated[-2][k], best[k]) for k in best)  # the last epoch's weights differ


def test_no_extra_evaluation_when_the_last_evaluated_epoch_is_best(
    world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    scores = iter([0.1, 0.2, 0.3])
    monkeypatch.setattr(trainer, "fitness", lambda metrics, heads: next(scores))
    calls = []
    real = trainer.evaluate
    monkeypatch.setattr(trainer, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert main(["train", str(world / "hydradet.yaml"), *RUN, "train.plots=true", f"project={tmp_path}"]) == 0
    assert len(calls) == 3
    assert "best: epoch 3 of 3" in capsys.readouterr().out


def test_a_conf_calibrated_on_too_few_objects_is_not_the_default_and_the_summary_says_which_is(
    world: Path, tmp_path: Path, capsys
):
    """6 val images hold fewer than calibration.MIN_OBJECTS objects per head: the weights keep no conf, and the
    summary names predict.conf as the threshold predict will use."""
    assert main(["train", str(world / "hydradet.yaml"), *RUN, f"project={tmp_path}"]) == 0
    out = capsys.readouterr().out
    meta = _meta(tmp_path / "train" / "weights" / "best.safetensors")
    assert meta["conf"] == {}
    for head in ("person", "animal"):
        assert f"predict conf {head}: 0.4 = predict.conf (calibrated " in out
        assert f"val objects (fewer than {calibration.MIN_OBJECTS}): not kept)" in out


def test_with_enough_evidence_each_head_s_calibrated_conf_is_stored_as_results_csv_records_it(
    world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    monkeypatch.setattr(calibration, "MIN_OBJECTS", 1)
    monkeypatch.setattr(calibration, "MIN_F1", 0.0)
    assert main(["train", str(world / "hydradet.yaml"), *RUN, "train.epochs=1", f"project={tmp_path}"]) == 0
    out = capsys.readouterr().out
    rows = list(csv.DictReader((tmp_path / "train" / "results.csv").open()))
    conf = _meta(tmp_path / "train" / "weights" / "best.safetensors")["conf"]
    assert set(conf) == {"person", "animal"}
    for head, value in conf.items():
        assert value == pytest.approx(float(rows[0][f"{head}/f1_conf"]), abs=1e-3)
        assert f"predict conf {head}: {value:.3f} (calibrated: peak F1 " in out


def test_calibration_keeps_a_conf_only_with_enough_objects_and_f1():
    enough = {"f1_conf": 0.31, "f1": 0.6, "objects": 50}
    kept, refused = calibrated_conf(
        {
            "a": enough,
            "few": {**enough, "objects": calibration.MIN_OBJECTS - 1},
            "weak": {**enough, "f1": calibration.MIN_F1 / 2},
            "none": {**enough, "f1_conf": float("nan")},
            "classify": {"accuracy": 0.9},
        }
    )
    assert kept == {"a": 0.31}
    assert set(refused) == {"few", "weak", "none"}
    assert "fewer than" in refused["few"] and "peak F1" in refused["weak"]


def test_a_run_of_zero_epochs_says_nothing_was_evaluated(world: Path, tmp_path: Path, capsys):
    assert main(["train", str(world / "hydradet.yaml"), *RUN, "train.epochs=0", f"project={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "best: no epoch was evaluated, so best.safetensors is the last weights (epoch 0)" in out
    assert "predict conf: 0.4 = predict.conf for every detect head" in out
