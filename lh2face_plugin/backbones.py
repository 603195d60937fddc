"""A backbone by name with the weights of a ``model.pt``: one of ours (:mod:`lh2face_plugin.compact`) or the
checkout's (:func:`load_backbone`); the compact backbones and the weights readers are named here too."""
from __future__ import annotations

import os
from typing import Any, Optional, Union

from torch import nn

from .arcface_torch.networks import checkout_get_model
from .compact import CompactFaceNet, available_backbones, build_backbone, is_compact
from .weights import infer_embedding_size, load_weights, read_state_dict

__all__ = ["CompactFaceNet", "build_backbone", "available_backbones", "load_backbone", "load_weights",
           "read_state_dict"]


def load_backbone(
    path: Union[str, os.PathLike],
    network: str,
    *,
    arcface_root: Optional[str] = None,
    embedding_size: Optional[int] = None,
    **kwargs: Any,
) -> nn.Module:
    """Load an arcface_torch ``model.pt`` (or one of ours) into its network, in eval mode.

    Args:
        path: backbone state dict (see :func:`read_state_dict`).
        network: one of :func:`available_backbones`, or an arcface_torch network
            name (``r18``, ``r50``, ``r100``, ``mbf``, ``vit_t``, ...) built by
            ``backbones.get_model`` imported from the checkout at
            ``arcface_root`` (default: ``$ARCFACE_TORCH_ROOT``).
        embedding_size: ``D``; inferred from the checkpoint's final BatchNorm1d
            when omitted.
        kwargs: further network arguments (e.g. ``width`` for ours).

    Returns:
        The network with the weights loaded, on CPU, in eval mode.

    Raises:
        FileNotFoundError: missing model file or checkout.
        ValueError: unknown network name, or a checkpoint that does not match
            the network (the message lists missing / unexpected keys and
            shape mismatches).
    """
    state = read_state_dict(path)
    dim = int(embedding_size) if embedding_size is not None else (infer_embedding_size(state) or 512)
    if is_compact(network):
        model: nn.Module = build_backbone(network, embedding_size=dim, **kwargs)
    else:
        get_model = checkout_get_model(arcface_root)
        try:
            model = get_model(network, dropout=0.0, fp16=False, num_features=dim, **kwargs)
        except ValueError as exc:
            raise ValueError(
                f"unknown network {network!r}: arcface_torch's backbones.get_model does not know it "
                f"(it knows r18, r34, r50, r100, r200, r2060, mbf, mbf_large, vit_*); ours: "
                f"{', '.join(available_backbones())}"
            ) from exc
    return load_weights(model, path, network, state=state).eval()
