"""`hydradet.load(path)`: a weights file (.safetensors) or an export (.onnx, OpenVINO folder / .xml) as one object
that predicts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, overload

from hydradet.infer.predict import Backend, TorchBackend, run
from hydradet.infer.results import Result
from hydradet.infer.settings import HeadSettings, PerHead, PerHeadFlag, SettingError, resolve, select_heads
from hydradet.infer.sources import OnSkip, Source, expand, frames
from hydradet.model.weights_check import run_folder_weights


class Model:
    """A trained model ready to predict. `model.predict(source)` or `model(source)`."""

    def __init__(self, backend: Backend, path: Path | None = None) -> None:
        self.backend, self.path = backend, path

    @property
    def heads(self) -> list[str]:
        return list(self.backend.classes)

    @property
    def classes(self) -> dict[str, list[str]]:
        """Every head -> its class names (a class id indexes this list)."""
        return dict(self.backend.classes)

    @property
    def imgsz(self) -> int:
        return self.backend.imgsz

    @overload
    def predict(
        self,
        source: Source,
        heads: list[str] | str | None = ...,
        conf: PerHead | None = ...,
        iou: PerHead | None = ...,
        imgsz: int | None = ...,
        batch: int = ...,
        max_det: int | None = ...,
        stream: Literal[False] = ...,
        agnostic: PerHeadFlag | None = ...,
        on_skip: OnSkip | None = ...,
    ) -> list[Result]: ...

    @overload
    def predict(
        self,
        source: Source,
        heads: list[str] | str | None = ...,
        conf: PerHead | None = ...,
        iou: PerHead | None = ...,
        imgsz: int | None = ...,
        batch: int = ...,
        max_det: int | None = ...,
        *,
        stream: Literal[True],
        agnostic: PerHeadFlag | None = ...,
        on_skip: OnSkip | None = ...,
    ) -> Iterator[Result]: ...

    def predict(
        self,
        source: Source,
        heads: list[str] | str | None = None,
        conf: PerHead | None = None,
        iou: PerHead | None = None,
        imgsz: int | None = None,
        batch: int = 8,
        max_det: int | None = None,
        stream: bool = False,
        agnostic: PerHeadFlag | None = None,
        on_skip: OnSkip | None = None,
    ) -> list[Result] | Iterator[Result]:
        """One Result per image (per frame for a video), in order; an image file that cannot be read gets none.

        source: a path, folder, glob, video file, PIL image, numpy array (HWC RGB uint8, uint16 or float;
            data/image.py) or a list of these.
        heads: the heads to run (default all); the others do not run at all.
        conf, iou: a float for every head or {head: float}; defaults from `predict:` in default.yaml (an NMS
        export: the values baked into it). imgsz: default the model's. batch: images per forward pass.
        stream: a generator instead of a list, so that a long video or a large folder never sits in memory.
        agnostic: a bool for every head or {head: bool}: one NMS over all of a head's classes, so two classes of
        one head never both keep a box on one object (default `predict.agnostic`, false).
        on_skip: called with (path, reason) for each file that is not a readable image (not an image, corrupt,
        truncated), which is skipped; default: a SkippedInputWarning naming it.
        """
        settings, size = self.settings(heads, conf, iou, imgsz, batch, max_det, agnostic)
        items = expand(source)  # before the generator starts, so a missing file raises here, not on first next()
        results = run(self.backend, frames(items, on_skip), settings, size, batch)
        return results if stream else list(results)

    def track(
        self,
        source: Source,
        heads: list[str] | str | None = None,
        conf: PerHead | None = None,
        iou: PerHead | None = None,
        imgsz: int | None = None,
        batch: int = 8,
        max_det: int | None = None,
        stream: bool = False,
        agnostic: PerHeadFlag | None = None,
    ) -> list[Result] | Iterator[Result]:
        """Like `predict`, with each detect head's boxes tracked across frames (ByteTrack, one tracker per head;
        `hydradet.infer.track`): every box has a track id (`HeadResult.track_ids`), and only boxes of a track are
        kept. source: video files (each tracked from scratch) or a list of frames (images or arrays: one
        sequence). conf: each head's threshold to start a track; boxes down to 0.1 keep existing tracks alive.
        Needs `pip install 'hydradet[track]'`."""
        from hydradet.infer.track import require_bytetrack, track

        require_bytetrack()  # here, not on the generator's first next(): a missing package is said at once
        settings, size = self.settings(heads, conf, iou, imgsz, batch, max_det, agnostic)
        results = track(self.backend, expand(source), settings, size, batch)
        return results if stream else list(results)

    def settings(
        self,
        heads: list[str] | str | None = None,
        conf: PerHead | None = None,
        iou: PerHead | None = None,
        imgsz: int | None = None,
        batch: int = 8,
        max_det: int | None = None,
        agnostic: PerHeadFlag | None = None,
    ) -> tuple[dict[str, HeadSettings], int]:
        """The per-head settings and image size `predict` would use; raises SettingError for any bad value."""
        if batch < 1:
            raise SettingError(f"batch: {batch} must be >= 1")
        settings = resolve(select_heads(heads, self.heads), self.backend.defaults(), conf, iou, max_det, agnostic)
        self.backend.check_settings(settings)
        return settings, self.backend.check_imgsz(imgsz)

    __call__ = predict

    def export(self, format: str = "onnx", out: str | Path | None = None, **options: Any) -> Path:
        """Export to `onnx` or `openvino`; options as `hydradet.export.export_onnx`. Default out: next to the
        weights file, with the .onnx suffix, or the folder `<stem>_openvino_model`. Returns the .onnx / .xml."""
        from hydradet.export import export_onnx
        from hydradet.export.openvino import default_folder, export_openvino

        if format not in ("onnx", "openvino"):
            raise SettingError(f"format: {format!r}; hydradet exports onnx or openvino")
        if not isinstance(self.backend, TorchBackend):
            raise SettingError(f"{self.path}: export needs the .safetensors weights, not an export")
        weights = Path(self.path or "model.safetensors")
        if format == "openvino":
            return export_openvino(self.backend.model, Path(out) if out else default_folder(weights), **options)
        return export_onnx(self.backend.model, Path(out) if out else weights.with_suffix(".onnx"), **options)

    def __repr__(self) -> str:
        tasks = getattr(self.backend, "tasks", {})
        heads = ", ".join(
            f"{h}: {'regress' if tasks.get(h) == 'regress' else f'{len(c)} classes'}" for h, c in self.classes.items()
        )
        return f"Model({self.path}; {heads}; imgsz {self.imgsz})"


def load(path: str | Path, device: str = "cpu") -> Model:
    """A .safetensors file from `hydradet train` (never a pickle: loading runs no code from the file), an .onnx
    file from `hydradet export`, or the folder (or its .xml) from `hydradet export --format openvino`."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        from hydradet.infer.onnx_backend import OnnxBackend

        return Model(OnnxBackend(path, device), path)
    if path.suffix.lower() == ".xml" or (path.is_dir() and run_folder_weights(path) is None):
        from hydradet.infer.openvino_backend import OpenVinoBackend

        return Model(OpenVinoBackend(path, device), path)
    from hydradet.model.weights import load_model  # a run folder or checkpoint.pt: WeightsError naming best

    return Model(TorchBackend(load_model(path), device), path)
