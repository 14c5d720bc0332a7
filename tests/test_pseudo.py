"""`train.pseudo`: a teacher's outputs for the detect heads a source does not label (hydradet/train/pseudo.py).

What it must do when on: a teacher box at or above `high` is a positive, one between `low` and `high` an ignore
region with no loss at its locations, one below `low` leaves its locations background; only rows whose source lacks
the head get teacher targets (a source's own labels always win); another source's labels never reach a head; the
teacher's boxes move with flips, crops and mosaics like real labels; a teacher file with other heads or classes stops
before training (exit 2); results.csv counts the teacher's boxes. Off (the default), the isolation tests
(tests/test_isolation.py) hold unchanged; resume with a pseudo run is bit-identical (tests/test_resume.py).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from conftest import CLI_FAST, IMGSZ, make_batch, tiny_config, tiny_model

from hydradet.cli import main
from hydradet.config import load_config
from hydradet.data.dataset import SourceDataset, letterbox, load_image, split_datasets
from hydradet.data.pseudo_labels import CachedDetections, split_by_score
from hydradet.errors import ConfigError
from hydradet.model.detect_head import Detections, DetectOutput
from hydradet.model.detector import HydraDetector
from hydradet.model.weights import save_weights
from hydradet.train.pseudo import CACHE, cached_detections, label_batch, load_teacher, pseudo_rows
from hydradet.train.step import head_losses

BOXES = torch.tensor([[4.0, 4.0, 36.0, 36.0], [40.0, 4.0, 60.0, 28.0], [40.0, 40.0, 60.0, 60.0]])
SCORES = torch.tensor([0.9, 0.5, 0.1])  # with high 0.7 and low 0.3: a positive, an ignore region, background


def _stub_teacher(cfg, head: str, boxes: torch.Tensor, scores: torch.Tensor) -> HydraDetector:
    """A model whose `head` 'detects' exactly these boxes on every image (the thresholds are what is tested)."""
    teacher = tiny_model(cfg, seed=1).eval()

    def postprocess(out: DetectOutput, conf: float, iou: float, max_det: int, **_: object) -> list[Detections]:
        keep = scores >= conf
        n = out.cls_logits.shape[0]
        return [Detections(boxes[keep], scores[keep], torch.zeros(int(keep.sum()), dtype=torch.long))] * n

    teacher.heads[head].postprocess = postprocess  # type: ignore[method-assign]
    return teacher


def test_split_by_score_makes_positives_above_high_ignore_regions_between_and_drops_what_is_below_low():
    t = split_by_score(BOXES, SCORES, torch.zeros(3, dtype=torch.long), high=0.7, low=0.3)
    assert torch.equal(t["boxes"], BOXES[:1]) and torch.equal(t["labels"], torch.zeros(1, dtype=torch.long))
    assert torch.equal(t["ignore"], BOXES[1:2])
    no_positives = split_by_score(BOXES, SCORES, torch.zeros(3, dtype=torch.long), high=None, low=0.3)
    assert len(no_positives["boxes"]) == 0 and torch.equal(no_positives["ignore"], BOXES[:2])
    nothing_doubtful = split_by_score(BOXES[:1], SCORES[:1], torch.zeros(1, dtype=torch.long), high=0.7, low=0.3)
    assert "ignore" not in nothing_doubtful  # as real labels: the key only where there are regions


def test_an_unlabelled_person_the_teacher_doubts_is_never_a_negative_while_its_sure_box_is_a_positive(one_thread):
    """An animal image (its source labels no person): the person head's classification gradient at each location,
    from the teacher's targets: pushed up at the sure box's positives, exactly zero inside the doubtful box (ignore
    region: the unlabelled person is not taught as background), pushed down where the teacher scored below low."""
    cfg = tiny_config("train.pseudo.enabled=true", "train.pseudo.high=0.7", "train.pseudo.low=0.3")
    batch = make_batch(cfg, ["animals"])
    label_batch(
        _stub_teacher(cfg, "person", BOXES, SCORES), batch, cfg.source_heads(), {"person": 0.7}, 0.3, (0.6, 100)
    )
    targets = batch.targets[0]["person"]
    model = tiny_model(cfg)
    head = model.heads["person"]
    out = model(batch.images, {"person": None})["person"]
    logits = out.cls_logits.detach().requires_grad_()
    leaf = DetectOutput(logits, out.box_ltrb.detach(), out.centerness.detach(), out.points, out.strides)
    sums, positives = head.loss_sums(leaf, [targets])
    sums["cls"].backward()
    grad = logits.grad[0, :, 0]
    fg = head.assign(out.points, out.strides, targets["boxes"]) >= 0

    def inside(box: torch.Tensor) -> torch.Tensor:
        x, y = out.points[:, 0], out.points[:, 1]
        return (x > box[0]) & (x < box[2]) & (y > box[1]) & (y < box[3])

    assert positives > 0 and bool((grad[fg] < 0).all())
    doubtful = inside(BOXES[1]) & ~fg
    assert doubtful.any() and bool((grad[doubtful] == 0).all())
    below_low = inside(BOXES[2]) & ~fg
    assert below_low.any() and bool((grad[below_low] > 0).all())


def test_the_teacher_labels_only_rows_whose_source_lacks_the_head_so_a_sources_own_labels_win():
    cfg = tiny_config("train.pseudo.enabled=true", "train.pseudo.high=0.7")
    batch = make_batch(cfg, ["both", "animals", "persons"])
    own = [{h: {k: v.clone() for k, v in t.items()} for h, t in tg.items()} for tg in batch.targets]
    high = {"person": 0.7, "animal": 0.7}
    teacher = _stub_teacher(cfg, "person", BOXES, SCORES)
    teacher.heads["animal"].postprocess = teacher.heads["person"].postprocess  # type: ignore[method-assign]
    label_batch(teacher, batch, cfg.source_heads(), high, 0.3, (0.6, 100))
    for i, source in enumerate(batch.sources):  # every labelled head keeps its own targets, untouched
        for head in cfg.source_heads()[source]:
            assert all(torch.equal(own[i][head][k], batch.targets[i][head][k]) for k in own[i][head])
    assert set(batch.targets[0]) == {"person", "animal"}  # `both` labels both heads: nothing added
    assert {h: r.tolist() for h, r in pseudo_rows(batch, cfg.source_heads()).items()} == {"person": [1], "animal": [2]}


def test_another_sources_labels_never_reach_a_head_trained_by_its_teacher(one_thread):
    """With train.pseudo on, the person head's gradient on an animal image comes from the person teacher alone:
    changing that image's animal labels leaves every person-head gradient bit-identical."""
    cfg = tiny_config("train.pseudo.enabled=true", "train.pseudo.high=0.7", "train.pseudo.low=0.3")
    grads = []
    for seed in (3, 4):  # two different sets of animal labels on the same images
        batch = make_batch(cfg, ["animals", "persons"])
        batch.targets[0]["animal"] = make_batch(cfg, ["animals"], seed=seed).targets[0]["animal"]
        label_batch(
            _stub_teacher(cfg, "person", BOXES, SCORES), batch, cfg.source_heads(), {"person": 0.7}, 0.3, (0.6, 100)
        )
        model = tiny_model(cfg)
        losses = head_losses(model, batch, cfg.source_heads(), pseudo_weight=1.0)
        assert {"pseudo_cls", "cls"} <= set(losses["person"])
        sum(v for terms in losses.values() for v in terms.values()).backward()
        grads.append([p.grad.clone() for p in model.heads["person"].parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))


def test_ignore_everywhere_gives_a_teacher_row_no_loss_and_pseudo_weight_none_ignores_teacher_targets(one_thread):
    cfg = tiny_config("train.pseudo.enabled=true", "train.pseudo.high=0.7")
    batch = make_batch(cfg, ["animals", "persons"])
    whole = torch.tensor([[0.0, 0.0, IMGSZ, IMGSZ]])
    batch.targets[0]["person"] = split_by_score(whole, torch.tensor([0.5]), torch.zeros(1, dtype=torch.long), 0.7, 0.3)
    model = tiny_model(cfg)
    losses = head_losses(model, batch, cfg.source_heads(), pseudo_weight=1.0)
    assert float(losses["person"]["pseudo_cls"].detach()) == 0.0  # every location ignored, no positive: nothing taught
    strict = head_losses(model, batch, cfg.source_heads(), pseudo_weight=None)
    assert "pseudo_cls" not in strict["person"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world")
    assert main(["synth", str(root), "--train-images", "8", "--val-images", "4", "--seed", "3"]) == 0
    return root


@pytest.mark.parametrize("mosaic", [0.0, 1.0], ids=["flip_crop", "mosaic"])
def test_teacher_boxes_move_with_flips_crops_and_mosaics_exactly_like_real_labels(world: Path, mosaic: float):
    """A file teacher whose person boxes are exactly each animal image's animal labels: after augmentation (flip
    always, scale jitter and crop; or four-image mosaics) every sample's person boxes equal its animal boxes."""
    cfg = load_config(world / "hydradet.yaml", ["augment.hflip=1.0", f"augment.mosaic={mosaic}", "model.imgsz=96"])
    ds = SourceDataset(cfg, "animals", "train", train=True)
    per_image = [
        (torch.from_numpy(r.boxes).float().reshape(-1, 4), torch.ones(len(r.boxes)), torch.zeros(len(r.boxes)))
        for r in ds.records
    ]
    ds.pseudo = CachedDetections({"person": per_image}, {"person": 0.5}, 0.3)
    torch.manual_seed(0)
    moved = 0
    for i in range(len(ds)):
        sample = ds[i]
        person, animal = sample.targets["person"], sample.targets["animal"]
        assert torch.equal(person["boxes"], animal["boxes"])
        if mosaic == 0.0:
            image = load_image(ds.records[i].path)
            _, scale = letterbox(image, cfg.model.imgsz)
            plain = torch.from_numpy(ds.records[i].boxes).float().reshape(-1, 4) * scale
            moved += plain.shape != animal["boxes"].shape or not torch.allclose(animal["boxes"], plain)
    assert mosaic or moved > 0  # flipped every time: the boxes did move


def _run(world: Path, tmp_path: Path, name: str, *extra: str) -> int:
    fast = [*CLI_FAST, "train.epochs=2", "train.steps_per_epoch=3", f"project={tmp_path}", f"name={name}"]
    return main(["train", str(world / "hydradet.yaml"), *fast, *extra])


def test_results_csv_counts_the_ema_teachers_boxes_from_the_epoch_it_starts(world: Path, tmp_path: Path):
    extra = ["train.pseudo.enabled=true", "train.pseudo.high=0.06", "train.pseudo.low=0.04"]
    assert _run(world, tmp_path, "ema", *extra) == 0
    rows = list(csv.DictReader((tmp_path / "ema" / "results.csv").open()))
    counts = [[int(r[f"pseudo_{w}/{h}"]) for h in ("person", "animal") for w in ("boxes", "ignore")] for r in rows]
    assert counts[0] == [0, 0, 0, 0]  # epoch 1: the strict rule (start_epoch 1)
    assert sum(counts[1]) > 0


def test_a_file_teachers_cache_is_reused_and_an_unreadable_one_computed_again(world: Path, tmp_path: Path):
    fast = ["model.backbone_weights=null", "model.imgsz=96", "train.workers=0"]
    teacher_file = tmp_path / "teacher.safetensors"
    save_weights(tiny_model(load_config(world / "hydradet.yaml", fast)), teacher_file)
    on = ["train.pseudo.enabled=true", f"train.pseudo.teacher={teacher_file}"]
    cfg = load_config(world / "hydradet.yaml", [*fast, *on])
    teacher, sets, lines, cpu = load_teacher(cfg), split_datasets(cfg, "train"), [], torch.device("cpu")

    def same(a: dict, b: dict) -> bool:
        return all(
            torch.equal(x, y)
            for s in a
            for h in a[s]
            for p, q in zip(a[s][h], b[s][h], strict=True)
            for x, y in zip(p, q, strict=True)
        )

    first = cached_detections(teacher, cfg, sets, tmp_path, cpu, lines.append)
    assert {s: set(h) for s, h in first.items()} == {"persons": {"animal"}, "animals": {"person"}}
    assert same(first, cached_detections(teacher, cfg, sets, tmp_path, cpu, lines.append))
    assert lines[-1].startswith("pseudo: the teacher's boxes from")  # read back, not computed
    (tmp_path / CACHE).write_bytes(b"half a file")
    assert same(first, cached_detections(teacher, cfg, sets, tmp_path, cpu, lines.append))
    assert any("unreadable" in line for line in lines[2:])  # said so, and computed again


def test_a_teacher_file_whose_classes_differ_stops_before_training_naming_the_head(world, tmp_path, capsys):
    cfg = load_config(world / "hydradet.yaml", ["model.backbone_weights=null"])
    heads = dict(cfg.heads)
    heads["animal"] = heads["animal"].model_copy(update={"classes": ["cat", "bird", "giraffe"]})
    bad = tmp_path / "other_classes.safetensors"
    save_weights(HydraDetector(cfg.model, heads), bad)
    assert _run(world, tmp_path, "bad", "train.pseudo.enabled=true", f"train.pseudo.teacher={bad}") == 2
    err = capsys.readouterr().err
    assert "train.pseudo.teacher" in err and "'animal'" in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()  # nothing started
    assert (
        _run(world, tmp_path, "missing", "train.pseudo.enabled=true", "train.pseudo.teacher=nowhere.safetensors") == 2
    )
    assert "train.pseudo.teacher: file does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("overrides", "key", "words"),
    [
        (["train.pseudo.high=0.5", "train.pseudo.heads=[nose]"], "train.pseudo.heads", "not a detect head"),
        (["train.pseudo.high=1.5"], "train.pseudo.high", "(0, 1]"),
        (["train.pseudo.high=calibrated"], "train.pseudo.high", "val data"),  # these sources have no val data
        (["train.pseudo.high=0.5", "train.ema.enabled=false"], "train.pseudo.teacher", "train.ema.enabled"),
        (
            ["train.pseudo.high=0.5", "train.distill_old_heads=true", "model.init=x.safetensors"],
            "train.pseudo.enabled",
            "choose one",
        ),
    ],
)
def test_pseudo_settings_that_cannot_work_are_refused_naming_the_key(overrides: list[str], key: str, words: str):
    with pytest.raises(ConfigError) as refused:
        tiny_config("train.pseudo.enabled=true", *overrides)
    assert key in str(refused.value) and words in str(refused.value)


CALIBRATED = ["train.pseudo.enabled=true", "train.pseudo.high=calibrated"]


def test_a_calibrated_ema_teacher_without_an_evaluation_before_it_starts_is_refused(world: Path):
    with pytest.raises(ConfigError) as refused:
        load_config(world / "hydradet.yaml", [*CALIBRATED, "eval.every=2"])
    assert "train.pseudo.high" in str(refused.value) and "eval.every" in str(refused.value)
    load_config(world / "hydradet.yaml", [*CALIBRATED, "eval.every=2", "train.pseudo.start_epoch=2"])
