"""Export: ONNX with parity checks (:mod:`.onnx`) and insightface model-zoo packs (:mod:`.modelzoo`).

onnx, onnxruntime and onnxscript (and insightface for :func:`verify_pack`) come
with the ``zoo`` extra: ``pip install lh2face-plugin[zoo]``.
"""
from .modelzoo import PackInfo, pack_model_zoo, verify_pack
from .onnx import ExportReport, check_onnx, export_onnx

__all__ = ["ExportReport", "export_onnx", "check_onnx", "PackInfo", "pack_model_zoo", "verify_pack"]
