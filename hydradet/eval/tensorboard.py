"""TensorBoard event files of a run (`train.tensorboard`), in its folder: `tensorboard --logdir runs`.

The `tensorboard` package is optional (pip install tensorboard, or the `hydradet[tensorboard]` extra); torch's
SummaryWriter writes the files. Imported only when the key is on."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from hydradet.errors import ConfigError


def require_tensorboard() -> None:
    """A ConfigError naming the key and the fix when `train.tensorboard` is on without the package: checked
    before the run starts, so that it never ends in an ImportError halfway."""
    try:
        import tensorboard  # noqa: F401  (only its presence matters here)
    except ImportError:
        raise ConfigError(
            "train.tensorboard is true but the tensorboard package is not installed: pip install tensorboard "
            "(or pip install 'hydradet[tensorboard]'), or set train.tensorboard=false"
        ) from None


class TensorBoardLog:
    """One SummaryWriter on the run folder: each epoch's results.csv row as scalars (step = epoch), and pictures."""

    def __init__(self, run_dir: Path) -> None:
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir))

    def scalars(self, row: dict[str, object], step: int) -> None:
        """Every numeric cell of a results.csv row under its column name (`loss/<head>`, `<head>/<metric>`, `lr`,
        `balance/<head>`, ...: TensorBoard groups them by the part before the slash); empty cells are skipped."""
        for key, value in row.items():
            if key == "epoch":
                continue
            try:
                number = float(value)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                continue
            if math.isfinite(number):
                self.writer.add_scalar(key, number, step)

    def image(self, tag: str, picture: Image.Image, step: int) -> None:
        self.writer.add_image(tag, np.asarray(picture.convert("RGB")), step, dataformats="HWC")

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
