"""hydradet: one detector, a head per label space.

`hydradet.load("best.safetensors")` (or an .onnx from `hydradet export`) gives a model;
`model.predict("images/", conf={"person": 0.4, "animal": 0.3})` gives one result per image.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hydradet.infer.model import Model

__all__ = ["load"]


def load(path: str | Path, device: str = "cpu") -> Model:
    """A trained model ready to predict, from its weights file alone (see `hydradet.infer.model.load`)."""
    # Imported here so that `import hydradet` stays light: torch and friends load on first use.
    from hydradet.infer.model import load as _load

    return _load(path, device)
