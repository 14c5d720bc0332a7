"""README.md says what the code does: its Quick start runs top to bottom on a fresh folder (training shortened),
and the keys it says may change on resume are the code's."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

from hydradet.train.resume import RESUMABLE

README = Path(__file__).resolve().parents[1] / "README.md"
# The Quick start trains for minutes; here one short epoch, so that the commands, their order and paths are tested.
SHORT = ["train.epochs=1", "train.steps_per_epoch=2", "model.imgsz=64", "train.workers=0", "train.plots=false"]


def _quick_start() -> list[list[str]]:
    text = README.read_text()
    block = text.split("## Quick start", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [shlex.split(line, comments=True) for line in block.splitlines()]
    return [c for c in commands if c and c[0] != "make"]  # `make demo` is the demo's own job


def test_the_quick_start_runs_top_to_bottom_in_a_fresh_folder(tmp_path: Path):
    commands = _quick_start()
    assert [c[1] for c in commands] == ["synth", "data", "train", "val", "predict"]
    for words in commands:
        assert words[0] == ".venv/bin/hydradet"
        args = words[1:]
        if args[0] == "train":
            args = [a for a in args if not a.startswith(("epochs=", "imgsz="))] + SHORT
        if args[0] == "synth":
            args += ["--train-images", "6", "--val-images", "4"]
        done = subprocess.run(
            [sys.executable, "-m", "hydradet", *args], cwd=tmp_path, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, f"{' '.join(words)}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    assert (tmp_path / "runs" / "train" / "weights" / "best.safetensors").is_file()
    assert (tmp_path / "runs" / "data_check" / "report.txt").is_file()
    assert (tmp_path / "runs" / "predict" / "predictions.json").is_file()


def test_the_resume_keys_in_the_readme_are_the_code_s():
    text = README.read_text()
    paragraph = text.split("**What may change on resume**", 1)[1].split("\n- ", 1)[0]
    listed = set(re.findall(r"`(train\.[a-z_]+)`", paragraph))
    assert listed == set(RESUMABLE)


def test_the_hydranet_example_runs_from_a_copy_outside_the_repository(tmp_path: Path):
    """Its backbone weights are `pretrained` (the file inside the package), not a path into the repository."""
    from hydradet.cli import main

    example = tmp_path / "elsewhere" / "faces.yaml"
    example.parent.mkdir()
    example.write_text((README.parent / "examples" / "hydranet_faces.yaml").read_text())
    assert main(["synth", str(tmp_path / "faces"), "--attributes", "--train-images", "8", "--val-images", "4"]) == 0
    faces = tmp_path / "faces"
    data = [f"sources.faces.train={faces / 'train.csv'}", f"sources.faces.val={faces / 'val.csv'}"]
    run = ["train.epochs=1", "train.steps_per_epoch=1", "train.workers=0", "train.plots=false", f"project={tmp_path}"]
    assert main(["train", str(example), *data, *run]) == 0
