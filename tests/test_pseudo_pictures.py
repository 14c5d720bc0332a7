"""Train batch pictures with `train.pseudo` (eval/batch_pictures.py, eval/run_log.py), on small synthetic batches:
a teacher's boxes are dashed in their head's colour, ignore regions (a teacher's or a source's own) hatched inside,
real labels keep solid edges, each sample's chips tell labels from teacher, and without `taught` the picture is
what it always was; RunLog finds the teacher's targets itself and draws the first batches that carry them, three at
most per run folder, a resumed run included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_batch, tiny_config
from PIL import Image

from hydradet.data.dataset import Batch
from hydradet.eval import batch_pictures, run_log
from hydradet.eval.batch_pictures import batch_picture
from hydradet.eval.run_log import RunLog
from hydradet.palette import head_colour

SIDE = 160  # one tile per sample at this size (no resizing): box coordinates are picture pixels
CFG = tiny_config()
CLASSES = {h: CFG.heads[h].classes for h in CFG.heads}
PERSON_BOX = [10, 60, 50, 150]  # sample 0 (source "persons"): its own label
TEACHER_BOX = [70, 60, 110, 150]  # sample 0: the animal head's teacher, a positive
TEACHER_IGNORE = [120, 60, 155, 150]  # sample 0: the animal head's teacher, a doubtful box
ANIMAL_BOX = [10, 60, 50, 150]  # sample 1 (source "both"): its own label
CROWD = [70, 60, 140, 150]  # sample 1: its own person ignore region (a COCO crowd)
TAUGHT = [{"animal"}, set()]  # per sample, the heads its targets hold from the teacher


def _targets(boxes: list[list[int]], ignore: list[list[int]] | None = None) -> dict[str, torch.Tensor]:
    t = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.zeros(len(boxes)).long()}
    if ignore:
        t["ignore"], t["ignore_labels"] = torch.tensor(ignore, dtype=torch.float32), torch.zeros(len(ignore)).long()
    return t


def _batch(ignore: bool = True) -> Batch:
    """Black images, so that a head's colour can only come from what was drawn for it."""
    targets = [
        {"person": _targets([PERSON_BOX]), "animal": _targets([TEACHER_BOX], [TEACHER_IGNORE] if ignore else None)},
        {"person": _targets([], [CROWD] if ignore else None), "animal": _targets([ANIMAL_BOX])},
    ]
    n = len(targets)
    return Batch(
        torch.zeros(n, 3, SIDE, SIDE), targets, ["persons", "both"], list(range(n)), [1.0] * n, [(SIDE,) * 2] * n
    )


def _draw(batch: Batch, taught: list[set[str]] | None) -> np.ndarray:
    return np.asarray(batch_picture(batch.images, batch.targets, batch.sources, CLASSES, taught=taught))


def _in_colour(picture: np.ndarray, sample: int, head: str) -> np.ndarray:
    """(SIDE, SIDE) bool: the sample's tile pixels in the head's colour (2 samples: tiles side by side)."""
    rgb = np.array(Image.new("RGB", (1, 1), head_colour(head, list(CLASSES))).getpixel((0, 0)))
    return (picture[:SIDE, sample * SIDE : (sample + 1) * SIDE] == rgb).all(-1)


def _edges(mask: np.ndarray, box: list[int]) -> dict[str, np.ndarray]:
    """The box's left, right and bottom edge lines without corners (the top one holds the class name's chip)."""
    x1, y1, x2, y2 = box
    return {"left": mask[y1 + 2 : y2 - 1, x1], "right": mask[y1 + 2 : y2 - 1, x2], "bottom": mask[y2, x1 + 2 : x2 - 1]}


def test_teacher_boxes_are_dashed_in_their_heads_colour():
    animal = _in_colour(_draw(_batch(), TAUGHT), 0, "animal")
    for side, line in _edges(animal, TEACHER_BOX).items():
        assert 0.3 < line.mean() < 0.7, (side, line.astype(int))  # dashes and gaps alike, never solid or absent


def test_real_labels_keep_solid_edges_beside_teacher_boxes():
    picture = _draw(_batch(), TAUGHT)
    for sample, head, box in [(0, "person", PERSON_BOX), (1, "animal", ANIMAL_BOX)]:
        for side, line in _edges(_in_colour(picture, sample, head), box).items():
            assert line.all(), (sample, head, side)
    # The same teacher box, taught as a label, is solid: the dashes come from `taught` alone.
    untaught = _in_colour(_draw(_batch(), [set(), set()]), 0, "animal")
    assert all(line.all() for line in _edges(untaught, TEACHER_BOX).values())


@pytest.mark.parametrize(
    ("sample", "head", "region"), [(0, "animal", TEACHER_IGNORE), (1, "person", CROWD)], ids=["teacher", "crowd"]
)
def test_ignore_regions_are_hatched_inside_and_clipped_to_the_region(sample: int, head: str, region: list[int]):
    mask = _in_colour(_draw(_batch(), TAUGHT), sample, head)
    x1, y1, x2, y2 = region
    inside = mask[y1 + 3 : y2 - 2, x1 + 3 : x2 - 2]  # away from the border: a mere outline would leave it empty
    assert 0.05 < inside.mean() < 0.6, inside.mean()  # lines with gaps, not a fill
    assert inside.any(0).all() or inside.any(1).all()  # diagonals cross the whole region
    below = mask[y2 + 2 : y2 + 8, x1:x2]  # both regions end 10 pixels above the tile's bottom
    right = mask[y1 + 2 : y2 - 1, x2 + 2 : x2 + 4]
    assert not below.any() and not right.any()  # nothing spills out of the region


def test_chips_tell_the_heads_a_sample_learns_from_labels_from_those_it_learns_from_its_teacher(monkeypatch):
    written: list[str] = []
    text = batch_pictures._text
    monkeypatch.setattr(
        batch_pictures, "_text", lambda pen, xy, s, *a, **k: written.append(s) or text(pen, xy, s, *a, **k)
    )
    _draw(_batch(), TAUGHT)
    chips = [s for s in written if s not in ("person", "dog")]  # without the boxes' class names
    assert chips == [
        "persons supervises:",
        "person (1)",
        "animal: teacher (1 box, 1 ignore)",
        "both supervises:",
        "person (0, 1 ignore)",
        "animal (1)",
    ]


def test_without_taught_the_picture_is_todays_teacher_boxes_solid_ignore_regions_undrawn():
    """taught=None (val pictures, every other caller) must not change a byte: the extra keys are not drawn and a
    teacher's boxes are drawn as labels, so it equals the labels-only rendering of the batch without ignore keys
    (which ignores nothing new: no dashes, no hatching, plain `head (n)` chips)."""
    plain = _draw(_batch(), None)
    assert plain.tobytes() == _draw(_batch(ignore=False), [set(), set()]).tobytes()
    assert plain.tobytes() == _draw(_batch(ignore=False), None).tobytes()
    assert plain.tobytes() != _draw(_batch(), TAUGHT).tobytes()  # the new marks do show when asked for
    x1, y1, x2, y2 = TEACHER_IGNORE
    assert not _in_colour(plain, 0, "animal")[y1:y2, x1:x2].any()


def _run_batch(teacher: bool) -> Batch:
    """A source "persons" sample that, with a teacher, holds the animal head's targets as well."""
    batch = make_batch(CFG, ["persons", "animals"])
    if teacher:
        batch.targets[0]["animal"] = _targets([[8, 8, 30, 30]], [[32, 32, 60, 60]])
    return batch


def test_run_log_draws_the_first_batches_that_carry_teacher_targets_and_no_more_on_resume(tmp_path: Path, monkeypatch):
    taught: list[list[set[str]]] = []
    draw = run_log.batch_picture
    monkeypatch.setattr(run_log, "batch_picture", lambda *a, **k: taught.append(k["taught"]) or draw(*a, **k))
    log = RunLog(CFG)
    log.start(tmp_path)
    for step in range(10):  # as the EMA teacher: no teacher targets before step 5
        log.train_batch(step, _run_batch(teacher=step >= 5))
    drawn = sorted(int(p.stem.removeprefix("train_batch")) for p in tmp_path.glob("train_batch*.jpg"))
    assert drawn == [0, 1, 2, 5, 6, 7]
    assert taught[:3] == [[set(), set()]] * 3 and taught[3:] == [[{"animal"}, set()]] * 3
    resumed = RunLog(CFG)  # a resumed run: its folder already holds three teacher pictures
    resumed.start(tmp_path)
    for step in range(10, 14):
        resumed.train_batch(step, _run_batch(teacher=True))
    assert len(list(tmp_path.glob("train_batch*.jpg"))) == 6


def test_run_log_draws_only_the_first_batches_when_the_teacher_labels_them_from_the_start(tmp_path: Path):
    log = RunLog(CFG)  # as a file teacher: its boxes are on every batch from step 0
    log.start(tmp_path)
    for step in range(8):
        log.train_batch(step, _run_batch(teacher=True))
    assert sorted(p.name for p in tmp_path.glob("train_batch*.jpg")) == [f"train_batch{k}.jpg" for k in range(3)]
