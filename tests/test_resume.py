"""Resume, exactly: a CLI training run killed with SIGKILL in the middle of an epoch and resumed with
`hydradet train --resume` ends with weights, EMA, optimizer state and every other piece of training state
bit-identical to an uninterrupted run of the same config (CPU, fixed seed), with 0 and 2 loader workers, with
uncertainty balancing (learned s_i) and with alternate sampling plus DWA (a loss history)."""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import CLI_FAST, tiny_config, tiny_model
from safetensors.torch import load_file

from hydradet.cli import main
from hydradet.model.weights import load_model
from hydradet.train.checkpoint import CHECKPOINT

STEPS = 5
RUN = [*CLI_FAST, "train.epochs=3", f"train.steps_per_epoch={STEPS}", "train.save_period=0", "eval.every=2"]
TIME_COLUMNS = {"time_s", "eval_s"}
# train.pseudo with thresholds an untrained teacher reaches, so that its boxes and ignore regions are many
PSEUDO_LOW = ["train.pseudo.enabled=true", "train.pseudo.high=0.06", "train.pseudo.low=0.04"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world")
    assert main(["synth", str(root), "--train-images", "8", "--val-images", "4", "--seed", "5"]) == 0
    return root


def _ckpt(run: Path) -> dict:
    return torch.load(run / "weights" / CHECKPOINT, map_location="cpu", weights_only=True)


def _kill_mid_epoch(cmd: list[str], run: Path, epoch: int, env: dict | None = None) -> dict:
    """Start the CLI run, SIGKILL it (and every process it started: torchrun's workers, loader workers) as soon as
    a checkpoint shows it inside `epoch` (not at its start or end)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    ckpt_file, seen = run / "weights" / CHECKPOINT, None
    try:
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None:
            if ckpt_file.is_file() and ckpt_file.stat().st_mtime_ns != seen:
                seen = ckpt_file.stat().st_mtime_ns
                progress = _ckpt(run)["progress"]
                if progress["epoch"] == epoch and 0 < progress["in_epoch"] < STEPS:
                    _kill_tree(proc.pid)
                    proc.wait()
                    return progress
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            _kill_tree(proc.pid)
    raise AssertionError(f"the run ended (code {proc.returncode}) before it could be killed inside epoch {epoch}")


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants at once (torchrun starts its workers in sessions of their own,
    so killing its process group would leave them running). Linux: parents read from /proc/PID/stat."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    for p in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


def _assert_same_state(a: Path, b: Path) -> None:
    ca, cb = _ckpt(a), _ckpt(b)
    for part in ("model", "ema"):
        assert ca[part].keys() == cb[part].keys()
        for k in ca[part]:
            assert torch.equal(ca[part][k], cb[part][k]), f"{part}.{k} differs"
    assert ca["ema_updates"] == cb["ema_updates"]
    oa, ob = ca["optimizer"], cb["optimizer"]
    assert oa["param_groups"] == ob["param_groups"]
    assert oa["state"].keys() == ob["state"].keys()
    for i in oa["state"]:
        for k, v in oa["state"][i].items():
            assert torch.equal(v, ob["state"][i][k]), f"optimizer state {i}.{k} differs"
    for k, v in ca["balancer"].items():
        assert (torch.equal(v, cb["balancer"][k])) if isinstance(v, torch.Tensor) else v == cb["balancer"][k]
    assert ca["sampler"] == cb["sampler"]
    pa, pb = ca["progress"], cb["progress"]
    assert (pa["epoch"], pa["step"], pa["best_fitness"]) == (pb["epoch"], pb["step"], pb["best_fitness"])
    for name in ("best.safetensors", "last.safetensors"):
        ta, tb = load_file(a / "weights" / name), load_file(b / "weights" / name)
        assert all(torch.equal(ta[k], tb[k]) for k in ta), name
    rows_a, rows_b = (list(csv.DictReader((r / "results.csv").open())) for r in (a, b))
    assert len(rows_a) == len(rows_b) == 3  # no duplicate, no missing row
    for ra, rb in zip(rows_a, rows_b, strict=True):
        assert {k: v for k, v in ra.items() if k not in TIME_COLUMNS} == {
            k: v for k, v in rb.items() if k not in TIME_COLUMNS
        }


@pytest.mark.parametrize(
    "extra",
    [
        ["train.workers=0"],
        ["train.workers=2"],
        ["train.workers=0", "train.balance.method=uncertainty"],
        ["train.workers=0", "train.sampling.mode=alternate", "train.balance.method=dwa", "augment.mosaic=0.5"],
        # train.pseudo with the EMA teacher, which starts in epoch 2 (the killed one): its boxes on every batch
        ["train.workers=0", *PSEUDO_LOW],
    ],
    ids=["workers0", "workers2", "uncertainty", "alternate_dwa_mosaic", "pseudo_ema"],
)
def test_a_run_killed_mid_epoch_resumes_to_the_bit_identical_end_state(world: Path, tmp_path: Path, extra: list[str]):
    config = str(world / "hydradet.yaml")
    args = [*RUN, *extra, f"project={tmp_path}"]
    assert main(["train", config, *args, "name=whole"]) == 0

    cmd = [sys.executable, "-m", "hydradet", "train", config, *args, "name=killed"]
    killed = tmp_path / "killed"
    progress = _kill_mid_epoch(cmd, killed, epoch=2)
    rows = list(csv.DictReader((killed / "results.csv").open()))
    assert [r["epoch"] for r in rows] == ["1"]  # epoch 2 never finished, so it has no row
    # A write interrupted by a kill leaves a temporary; resume removes it.
    (killed / "weights" / ".last.safetensors.tmp-99999").write_bytes(b"half")

    assert main(["train", "--resume", str(killed), "train.workers=0"]) == 0
    assert not (killed / "weights" / ".last.safetensors.tmp-99999").exists()
    assert progress["in_epoch"] > 0
    _assert_same_state(tmp_path / "whole", killed)


def test_a_pseudo_run_with_a_teacher_file_resumes_bit_identical_reusing_the_cached_boxes(world: Path, tmp_path: Path):
    config = str(world / "hydradet.yaml")
    assert main(["train", config, *RUN, "train.epochs=1", f"project={tmp_path}", "name=teacher"]) == 0
    teacher = tmp_path / "teacher" / "weights" / "best.safetensors"
    args = [*RUN, "train.workers=0", "augment.mosaic=0.5", *PSEUDO_LOW, f"train.pseudo.teacher={teacher}"]
    assert main(["train", config, *args, f"project={tmp_path}", "name=whole"]) == 0

    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "hydradet", "train", config, *args, f"project={tmp_path}", "name=killed"]
    _kill_mid_epoch(cmd, killed, epoch=2)
    cache = killed / "pseudo_labels.pt"
    written = cache.stat().st_mtime_ns
    assert main(["train", "--resume", str(killed)]) == 0
    assert cache.stat().st_mtime_ns == written  # reused, not computed again
    _assert_same_state(tmp_path / "whole", killed)
    rows = list(csv.DictReader((killed / "results.csv").open()))
    assert all(int(r["pseudo_boxes/person"]) + int(r["pseudo_ignore/person"]) > 0 for r in rows)


def test_resume_refuses_a_changed_config_naming_the_key_but_lets_epochs_grow(world: Path, tmp_path: Path, capsys):
    config = str(world / "hydradet.yaml")
    assert main(["train", config, *RUN, "train.epochs=1", f"project={tmp_path}", "name=r"]) == 0
    run = tmp_path / "r"
    capsys.readouterr()

    assert main(["train", "--resume", str(run), "train.batch=2", "augment.hflip=0"]) == 2
    err = capsys.readouterr().err
    assert "train.batch" in err and "augment.hflip" in err and "train.epochs" in err  # the keys and what may change
    assert main(["train", "--resume", str(run)]) == 2
    assert "nothing left to resume" in capsys.readouterr().err

    assert main(["train", "--resume", str(run), "train.epochs=2", "train.workers=0"]) == 0
    assert [r["epoch"] for r in csv.DictReader((run / "results.csv").open())] == ["1", "2"]
    # The same through the config key, with the run's config file given whole.
    assert main(["train", str(run / "config.yaml"), f"train.resume={run}", "train.epochs=3"]) == 0
    assert len(list(csv.DictReader((run / "results.csv").open()))) == 3


def test_resume_of_a_folder_without_checkpoint_says_so(tmp_path: Path, capsys):
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_a_kill_during_a_save_leaves_the_previous_file_intact_and_loadable(tmp_path: Path):
    """Killed at random moments while it rewrites its weights in a loop (two versions in turn), the target always
    loads completely, and as one version, not a mix."""
    target = tmp_path / "last.safetensors"
    script = f"""
import pathlib, torch
from conftest import tiny_config, tiny_model
from hydradet.model.weights import save_weights
target = pathlib.Path({str(target)!r})
a, b = (tiny_model(tiny_config("model.neck_width=128")) for _ in range(2))
with torch.no_grad():
    for p in b.parameters():
        p.add_(1.0)
save_weights(a, target)
print("ready", flush=True)
while True:  # nothing but saves: a kill lands in one
    save_weights(b, target)
    save_weights(a, target)
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    initial = tiny_model(tiny_config("model.neck_width=128"))
    mid_save = 0
    for attempt in range(6):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(0.5 + 0.37 * attempt)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".last.safetensors.tmp-")]
        mid_save += bool(leftovers)
        model = load_model(target)  # complete and consistent: every tensor, the metadata
        own = dict(initial.named_parameters())
        offsets = {round(float((p - own[n]).detach().mean())) for n, p in model.named_parameters() if p.ndim}
        assert len(offsets) == 1  # every tensor from the same save: one version, not a mix of two
        for p in leftovers:
            p.unlink()
        if mid_save:
            break
    assert mid_save >= 1, "no kill landed during a save; the test did not test anything"
