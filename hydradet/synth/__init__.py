"""Synthetic data generators for tests, the demo and benchmarks (never read by training itself): they write
ordinary COCO / YOLO / CSV files, which `hydradet.data` then reads like any real dataset.

`world.py`: the two-source partially labelled world (`hydradet synth`); `shapes.py`: its articulated silhouettes;
`attributes.py`: a UTKFace-like image-level set (`hydradet synth --attributes`).
"""
