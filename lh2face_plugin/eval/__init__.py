"""Evaluation: arcface_torch verification sets (.bin) and IJB-B/IJB-C 1:1 and 1:N.

The two entry points take an *embed function* (``(B, H, W, 3)`` uint8 RGB -> ``(B, D)``)::

    from lh2face_plugin.eval import evaluate_verification, evaluate_ijb, torch_embedder
    embed = torch_embedder(backbone)           # or onnx_embedder("model.onnx"), load_embedder(...)
    evaluate_verification(embed, "lfw.bin")    # accuracy, accuracy_std, xnorm, tar_at_far, ...
    evaluate_ijb(embed, "IJB_release/IJBC", "IJBC")  # tar_at_far, auc, identification, ...
"""
from .embed import load_embedder, onnx_embedder, torch_embedder
from .ijb import evaluate_ijb
from .verification import evaluate_verification

__all__ = ["evaluate_verification", "evaluate_ijb", "torch_embedder", "onnx_embedder", "load_embedder"]
