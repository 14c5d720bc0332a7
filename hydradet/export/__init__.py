"""Export a trained model for runtimes without hydradet's Python code: ONNX, one group of outputs per head."""

from hydradet.export.onnx import export_onnx

__all__ = ["export_onnx"]
