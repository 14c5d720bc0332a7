"""The OpenVINO backend: an IR from `hydradet export --format openvino` behind the same Result type.

The IR is the ONNX export converted, with the same inputs, outputs and metadata, so everything but running the
graph is the ONNX backend's: reading the metadata, baked-NMS checks, batching over a batch-1 file, turning the
padded outputs into detections (`OnnxBackend`). Only the session differs: a compiled OpenVINO model, with
just the requested heads' outputs (OpenVINO drops the nodes no remaining output needs, as the ONNX backend's
graph cut does for onnxruntime).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from hydradet.errors import WeightsError
from hydradet.export.onnx import output_names
from hydradet.export.openvino import read_metadata, require_openvino, xml_path
from hydradet.infer.onnx_backend import OnnxBackend
from hydradet.infer.settings import SettingError


class OpenVinoBackend(OnnxBackend):
    def __init__(self, path: Path, device: str = "cpu") -> None:
        ov = require_openvino()
        self._ov, self._core = ov, ov.Core()
        self.path = xml_path(Path(path))
        try:
            self._ir = self._core.read_model(str(self.path))
        except RuntimeError as e:  # OpenVINO reports unreadable or mismatched .xml/.bin as RuntimeError
            raise WeightsError(f"{self.path}: OpenVINO cannot read it ({e})") from None
        self._read_metadata(read_metadata(self._ir, self.path))
        self._device = _device(device, self._core.available_devices)
        self._config = {
            # float32 as in onnxruntime: CPUs with bf16 units would otherwise default to bf16 and move scores.
            "INFERENCE_PRECISION_HINT": "f32",
            # The same thread count as torch and the ONNX backend, so the three compare like for like.
            "INFERENCE_NUM_THREADS": torch.get_num_threads(),
            "PERFORMANCE_HINT": "LATENCY",
        }
        self._sessions = {}

    def _session(self, heads: tuple[str, ...]) -> _Compiled:
        """A compiled model whose outputs are these heads' only (once per set of heads)."""
        if heads not in self._sessions:
            wanted = set(output_names(list(heads), self.raw, self.tasks))
            results = [r for r, o in zip(self._ir.get_results(), self._ir.outputs, strict=True) if o.names & wanted]
            part = self._ov.Model(results, self._ir.get_parameters(), f"hydradet_{'_'.join(heads)}")
            self._sessions[heads] = _Compiled(self._core.compile_model(part, self._device, self._config))
        return self._sessions[heads]


class _Compiled:
    """A compiled OpenVINO model with the two methods of an onnxruntime session that `OnnxBackend.detect` calls:
    `get_outputs()` (objects with `.name`) and `run(None, {"images": array})` (arrays in that order)."""

    def __init__(self, compiled: Any) -> None:
        self.compiled, self.request = compiled, compiled.create_infer_request()

    def get_outputs(self) -> list[SimpleNamespace]:
        return [SimpleNamespace(name=o.get_any_name()) for o in self.compiled.outputs]

    def run(self, _names: None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        results = self.request.infer(feeds)  # copies of the outputs (share_outputs=False), safe past the next run
        return [results[o] for o in self.compiled.outputs]


def _device(device: str, available: list[str]) -> str:
    """hydradet's `cpu` -> OpenVINO's `CPU`; `gpu`/`npu` (Intel) when OpenVINO sees one."""
    name = device.upper()
    if name not in available:
        raise SettingError(
            f"device: {device!r}; OpenVINO runs on {', '.join(a.lower() for a in available)} here "
            "(for an NVIDIA GPU use the .onnx export with device cuda)"
        )
    return name
