"""The layers that evaluate heads.

A head (:mod:`lh2face_plugin.heads`) describes its logits and terms; a layer turns the
description into a loss:

- :mod:`.engine`: the one evaluator (:func:`~.engine.head_loss`): logits, online logsumexp
  and row terms over column blocks, the formula in :mod:`.formula`;
- :mod:`.dense`: on a given [N, C] cosine matrix (the classifier, the plugin's dense Partial FC),
  and the dense logits for arcface_torch's own ``PartialFC_V2``;
- :mod:`.blockwise`: on products formed block by block, never holding [N, C];
- :mod:`.products`: row statistics of large products that heads need (``matmul_logsumexp``);
- the plugin's Partial FC on arcface_torch's ``PartialFC_V2``:
  :mod:`lh2face_plugin.arcface_torch.partial_fc` (only ``arcface_torch/`` knows the host).
"""
from .blockwise import blockwise_head_loss
from .dense import dense_head_loss
from .engine import Columns, head_loss

__all__ = ["head_loss", "dense_head_loss", "blockwise_head_loss", "Columns"]
