"""Ctrl-C and SIGTERM during training (train/interrupt.py): the run finishes the step in progress, writes its
checkpoint at that step, names the resume command and exits 130 / 143; resumed, it ends bit-identical to a run that
was never interrupted. A second signal stops at once; a signal before training starts stops at once too."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import CLI_FAST
from test_resume import _assert_same_state, _ckpt

from hydradet.cli import main
from hydradet.train import trainer

STEPS = 8
RUN = [*CLI_FAST, "train.epochs=3", f"train.steps_per_epoch={STEPS}", "eval.every=2"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world")
    assert main(["synth", str(root), "--train-images", "8", "--val-images", "4", "--seed", "5"]) == 0
    return root


def test_ctrl_c_to_the_process_group_mid_epoch_checkpoints_that_step_and_resumes_bit_identical(
    world: Path, tmp_path: Path
):
    """As a terminal sends it: SIGINT to the trainer and its two loader workers, with the default save_period
    (no periodic checkpoint inside these epochs), in the middle of epoch 2."""
    config = str(world / "hydradet.yaml")
    args = [*RUN, "train.workers=2", f"project={tmp_path}"]
    assert main(["train", config, *args, "name=whole"]) == 0

    cmd = [sys.executable, "-m", "hydradet", "train", config, *args, "name=stopped"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True, text=True)
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(iter(lambda: proc.stderr.read(64), "")), daemon=True)
    reader.start()
    shown = re.compile(rf"epoch 2/3:[^\r\n]*\| ([1-5])/{STEPS}")
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline and not shown.search("".join(err)):
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be interrupted in epoch 2"
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=120)
    reader.join(timeout=10)
    text = "".join(err)
    assert proc.returncode == 130, text[-2000:]
    said = re.search(rf"interrupted at epoch 2, step (\d)/{STEPS}; resume: hydradet train --resume (\S+)", text)
    assert said, text[-2000:]
    assert "Traceback" not in text
    stopped = tmp_path / "stopped"
    assert Path(said[2]) == stopped
    progress = _ckpt(stopped)["progress"]
    assert (progress["epoch"], progress["in_epoch"]) == (2, int(said[1]))  # the checkpoint of that very step
    assert 0 < progress["in_epoch"] < STEPS

    assert main(["train", "--resume", str(stopped), "train.workers=0"]) == 0
    _assert_same_state(tmp_path / "whole", stopped)


def _signal_at(monkeypatch: pytest.MonkeyPatch, call: int, signals: list[int]) -> None:
    """train_step raises `signals` (to this process) during its `call`-th call (1-based), then steps as usual."""
    real, calls = trainer.train_step, [0]

    def step(*args, **kwargs):
        calls[0] += 1
        if calls[0] == call:
            for s in signals:
                signal.raise_signal(s)
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_step", step)


def test_an_interrupt_in_the_first_epoch_leaves_a_checkpoint_to_resume_from(
    world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    """Before any periodic checkpoint (save_period 10 minutes), SIGTERM at step 2 of epoch 1: exit 143, a
    checkpoint at step 2, and the resumed run equals the whole one."""
    config = str(world / "hydradet.yaml")
    args = [*RUN, "train.workers=0", f"project={tmp_path}"]
    assert main(["train", config, *args, "name=whole"]) == 0
    _signal_at(monkeypatch, 2, [signal.SIGTERM])
    assert main(["train", config, *args, "name=stopped"]) == 143
    err = capsys.readouterr().err
    resume = f"resume: hydradet train --resume {tmp_path / 'stopped'}"
    assert f"SIGTERM: interrupted at epoch 1, step 2/{STEPS}; {resume}" in err
    progress = _ckpt(tmp_path / "stopped")["progress"]
    assert (progress["epoch"], progress["in_epoch"], progress["step"]) == (1, 2, 2)
    monkeypatch.undo()
    assert main(["train", "--resume", str(tmp_path / "stopped")]) == 0
    _assert_same_state(tmp_path / "whole", tmp_path / "stopped")


def test_a_second_ctrl_c_stops_at_once_without_writing(
    world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    config = str(world / "hydradet.yaml")
    _signal_at(monkeypatch, 2, [signal.SIGINT, signal.SIGINT])
    assert main(["train", config, *RUN, "train.workers=0", f"project={tmp_path}", "name=twice"]) == 130
    err = capsys.readouterr().err
    assert "stopped at once" in err and "Traceback" not in err
    assert not (tmp_path / "twice" / "weights" / "checkpoint.pt").exists()  # nothing written by the stop
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are given back


def test_the_last_step_of_an_epoch_interrupted_stops_after_the_epoch_with_its_row(
    world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    config = str(world / "hydradet.yaml")
    _signal_at(monkeypatch, STEPS, [signal.SIGINT])
    assert main(["train", config, *RUN, "train.workers=0", f"project={tmp_path}", "name=edge"]) == 130
    assert "SIGINT: interrupted at the end of epoch 1; resume" in capsys.readouterr().err
    progress = _ckpt(tmp_path / "edge")["progress"]
    assert (progress["epoch"], progress["in_epoch"], len(progress["rows"])) == (2, 0, 1)


def test_a_crash_with_loader_workers_still_exits(world: Path, tmp_path: Path):
    """Workers ignore only SIGINT: an uncaught error ends the process (multiprocessing ends its children with
    SIGTERM at exit), rather than leaving it waiting for workers that ignore SIGTERM."""
    script = f"""
import sys
from hydradet.cli import main
from hydradet.train import trainer
def broken(*a, **k):
    raise RuntimeError("an evaluation that fails")
trainer.evaluate = broken
sys.exit(main({["train", str(world / "hydradet.yaml"), *RUN, "train.workers=2", f"project={tmp_path}"]!r}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "an evaluation that fails" in done.stderr


def test_a_signal_before_training_starts_stops_at_once_with_its_code(
    world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    real = trainer.check_totals

    def totals(*args, **kwargs):
        signal.raise_signal(signal.SIGTERM)  # as a scheduler's stop while the data is read
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "check_totals", totals)
    assert main(["train", str(world / "hydradet.yaml"), *RUN, f"project={tmp_path}"]) == 143
    err = capsys.readouterr().err
    assert "train: stopped at once by SIGTERM" in err and "Traceback" not in err
    assert not (tmp_path / "train").exists()
