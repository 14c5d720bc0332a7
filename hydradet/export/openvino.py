"""Export to OpenVINO IR: the ONNX export (`export/onnx.py`) converted by OpenVINO's own converter.

Layout, as Ultralytics names it: a folder `<stem>_openvino_model/` holding `<stem>.xml` (the graph) and
`<stem>.bin` (the weights, float32). The input, the outputs per head (names, shapes, units: letterboxed pixels,
xyxy), the letterbox and the baked NMS are the ONNX file's, unchanged: see `export/onnx.py`.

Metadata: the ONNX file's `metadata_props`, the same strings, in the IR's rt_info under `hydradet`
(`ov.Core().read_model(xml).get_rt_info(["hydradet", "heads"]).astype(str)`). rt_info rather than a
metadata.yaml beside it (Ultralytics writes both): the .xml is then the whole description, so a copied or
renamed .xml/.bin pair keeps its heads, classes and thresholds, and reading it needs nothing but openvino.
A model that someone converted from our .onnx themselves (`ovc model.onnx`) is read too: OpenVINO's ONNX
frontend puts metadata_props under rt_info `framework`.

Weights stay float32 (`compress_to_fp16=False`, not `save_model`'s default) and the backend asks the CPU for f32
inference: the point of the export is the ONNX model's numbers on another runtime (tests/test_openvino.py).
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hydradet.errors import MissingDependency, WeightsError
from hydradet.export.onnx import export_onnx, require
from hydradet.model.detector import HydraDetector

SUFFIX = "_openvino_model"
SECTION = "hydradet"  # rt_info section we write
FOREIGN_SECTION = "framework"  # where OpenVINO's ONNX frontend puts metadata_props itself


def require_openvino() -> Any:
    """The `openvino` module, or a MissingDependency (exit 2) that says how to install it."""
    try:
        return importlib.import_module("openvino")
    except ImportError:
        raise MissingDependency(
            "OpenVINO export and prediction need openvino: pip install 'hydradet[openvino]'"
        ) from None


def default_folder(weights: Path) -> Path:
    """`runs/x/weights/best.safetensors` -> `runs/x/weights/best_openvino_model` (Ultralytics' name)."""
    return weights.with_name(weights.stem + SUFFIX)


def xml_path(path: Path) -> Path:
    """The IR's .xml: `path` itself, or the one .xml inside the folder `path`."""
    if path.is_dir():
        found = sorted(path.glob("*.xml"))
        if len(found) != 1:
            what = "no .xml" if not found else f"{len(found)} .xml files ({', '.join(p.name for p in found)})"
            raise WeightsError(f"{path}: {what}; pass the folder written by `hydradet export --format openvino`")
        return found[0]
    if not path.is_file():
        raise WeightsError(f"{path}: no such file or folder")
    return path


def export_openvino(model: HydraDetector, out: Path, **options: Any) -> Path:
    """Write the IR into the folder `out` (or to `out` when it ends in .xml) and return the .xml's path.

    options: as `export_onnx` (heads, imgsz, dynamic_batch, raw, conf, iou, max_det, opset): the ONNX graph is
    written to a temporary folder, converted with `openvino.convert_model`, then removed.
    """
    ov = require_openvino()
    onnx = require("onnx")
    out = Path(out)
    xml = out if out.suffix.lower() == ".xml" else out / f"{out.name.removesuffix(SUFFIX) or 'model'}.xml"
    with tempfile.TemporaryDirectory() as tmp:
        onnx_file = export_onnx(model, Path(tmp) / "model.onnx", **options)
        ir = ov.convert_model(str(onnx_file))
        # Written by us rather than left to the frontend's `framework` copy: a section we name and control.
        for prop in onnx.load(str(onnx_file), load_external_data=False).metadata_props:
            ir.set_rt_info(prop.value, [SECTION, prop.key])
    xml.parent.mkdir(parents=True, exist_ok=True)
    # Staged in the same folder, then renamed into place: an interrupted export leaves the old pair intact
    # (or nothing), never an .xml beside a half-written .bin.
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=xml.parent))
    try:
        ov.save_model(ir, str(staging / xml.name), compress_to_fp16=False)
        for suffix in (".bin", ".xml"):  # the .xml last: it is what readers open
            os.replace(staging / xml.with_suffix(suffix).name, xml.with_suffix(suffix))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return xml


def read_metadata(ir: Any, path: Path) -> dict[str, str]:
    """The export's metadata strings from an `openvino.Model`'s rt_info (ours, else the frontend's copy)."""
    for section in (SECTION, FOREIGN_SECTION):
        if ir.has_rt_info([section, "hydradet_format"]):
            return {k: v.astype(str) for k, v in ir.get_rt_info()[section].items()}
    raise WeightsError(f"{path}: no hydradet metadata in its rt_info; was it written by `hydradet export`?")
