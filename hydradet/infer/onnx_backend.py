"""The onnxruntime backend: a file from `hydradet export` behind the same Result type as the PyTorch model.

An NMS export has its thresholds baked in (metadata `nms`): predicting with a higher conf or a lower max_det
filters its outputs; a lower conf or another IoU needs a re-export (or a `--raw` export, on which NMS runs here).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from hydradet.errors import WeightsError
from hydradet.export.nms import select
from hydradet.export.onnx import output_names, require
from hydradet.infer.settings import HeadSettings, SettingError, default_settings
from hydradet.model.detect_head import Detections


class OnnxBackend:
    def __init__(self, path: Path, device: str = "cpu") -> None:
        ort = require("onnxruntime")
        self.path = Path(path)
        self._opts = ort.SessionOptions()
        # The same thread count as torch (OMP_NUM_THREADS), so the two backends compare like for like.
        self._opts.intra_op_num_threads = torch.get_num_threads()
        # No busy-waiting between runs: the letterboxing, decoding and drawing between two batches need those
        # cores (and torch's threads, in the same process). On a loaded 2-core machine spinning doubled latency.
        self._opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else None
        try:
            full = ort.InferenceSession(str(self.path), self._opts, providers=self._providers)
        except Exception as e:  # onnxruntime raises its own types for unreadable files
            raise WeightsError(f"{self.path}: onnxruntime cannot load it ({e})") from None
        self._read_metadata(full.get_modelmeta().custom_metadata_map)
        self._sessions = {tuple(self.heads): full}

    def _read_metadata(self, meta: dict[str, str]) -> None:
        """The export's metadata (`hydradet.export.onnx.metadata`: string -> string, structured values as JSON),
        shared with the OpenVINO backend, whose IR carries the same strings."""
        if "hydradet_format" not in meta:
            raise WeightsError(f"{self.path}: no hydradet metadata; was it written by `hydradet export`?")
        self.heads: list[str] = json.loads(meta["heads"])
        self.classes: dict[str, list[str]] = json.loads(meta["classes"])
        self.tasks: dict[str, str] = {h: "detect" for h in self.heads} | json.loads(meta.get("tasks", "{}"))
        self.imgsz = int(meta["imgsz"])
        self.raw = meta["outputs"] == "raw"
        self.baked = {h: HeadSettings(**s) for h, s in json.loads(meta.get("nms", "{}")).items()}
        self.max_batch = None if meta["batch"] == "dynamic" else int(meta["batch"])

    def defaults(self) -> dict[str, HeadSettings]:
        # Image-level heads take no thresholds; they get the defaults so that every head has settings.
        return default_settings(self.heads, {}) | self.baked

    def check_imgsz(self, imgsz: int | None) -> int:
        if imgsz not in (None, self.imgsz):
            raise SettingError(f"imgsz: {self.path} was exported at {self.imgsz}; re-export with --imgsz {imgsz}")
        return self.imgsz

    def check_settings(self, settings: dict[str, HeadSettings]) -> None:
        for h, s in settings.items():
            b = self.baked.get(h)
            if b is None:
                continue
            # Files from before `agnostic` was baked in did per-class NMS: HeadSettings' default, False.
            if s.conf < b.conf or s.iou != b.iou or s.max_det > b.max_det or s.agnostic != b.agnostic:
                raise SettingError(
                    f"head {h}: {self.path} has NMS baked in with conf {b.conf}, iou {b.iou}, max_det {b.max_det}, "
                    f"agnostic {b.agnostic}; asked for conf {s.conf}, iou {s.iou}, max_det {s.max_det}, agnostic "
                    f"{s.agnostic}. A higher conf and a lower max_det work; otherwise re-export with those values "
                    "(hydradet export --conf/--iou/--max-det/--agnostic, or --raw)"
                )

    def detect(self, images: Tensor, settings: dict[str, HeadSettings]) -> dict[str, list[Detections | Tensor]]:
        heads = tuple(h for h in self.heads if h in settings)
        session = self._session(heads)
        step = self.max_batch or len(images)
        out: dict[str, list[Detections | Tensor]] = {h: [] for h in heads}
        for start in range(0, len(images), step):
            x = np.ascontiguousarray(images[start : start + step].numpy(), dtype=np.float32)
            arrays = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"images": x}), strict=True))
            for h in heads:
                if self.tasks[h] == "detect":
                    out[h] += self._detections(h, arrays, settings[h])
                else:  # per image: (C,) probabilities or a () value, as the PyTorch backend gives them
                    kind = "probs" if self.tasks[h] == "classify" else "value"
                    out[h] += list(torch.from_numpy(arrays[f"{h}_{kind}"]))
        return out

    def _detections(self, head: str, arrays: dict[str, np.ndarray], s: HeadSettings) -> list[Detections]:
        boxes, scores = torch.from_numpy(arrays[f"{head}_boxes"]), torch.from_numpy(arrays[f"{head}_scores"])
        if self.raw:
            return select(boxes, scores, s.conf, s.iou, s.max_det, agnostic=s.agnostic)
        ids = torch.from_numpy(arrays[f"{head}_class_ids"])
        result = []
        for i in range(len(ids)):
            # Padding rows have class id -1; a conf above the baked one drops more (> as in postprocess).
            keep = ((ids[i] >= 0) & (scores[i] > s.conf)).nonzero().squeeze(1)[: s.max_det]
            result.append(Detections(boxes[i, keep], scores[i, keep], ids[i, keep]))
        return result

    def _session(self, heads: tuple[str, ...]):  # type: ignore[no-untyped-def]
        """A session that computes only these heads: onnxruntime runs the whole graph whatever outputs are
        asked for, so skipping a head means cutting it out of the graph (once per set of heads)."""
        if heads not in self._sessions:
            onnx, ort = require("onnx"), require("onnxruntime")
            extractor = require("onnx.utils").Extractor(onnx.load(str(self.path)))
            part = extractor.extract_model(["images"], output_names(list(heads), self.raw, self.tasks))
            self._sessions[heads] = ort.InferenceSession(
                part.SerializeToString(), self._opts, providers=self._providers
            )
        return self._sessions[heads]
