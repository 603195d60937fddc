"""Loss heads: one module per loss family (see :mod:`lh2face_plugin.heads.base` for the contract).

Every module here is imported when the registry is first asked for a head, so a new built-in
head is one file that registers itself with :func:`~lh2face_plugin.registry.register_head`.
"""
from .adaface import AdaFace
from .base import Head, HeadInputs, HeadPlan, HeadResult, LogitSpec, RowTerm
from .curricularface import CurricularFace
from .lh2face import LH2Face
from .magface import MagFace
from .margins import ArcFace, CombinedMargin, CosFace
from .mv_softmax import MVSoftmax
from .sv_softmax import SVSoftmax
from .uss import USS

__all__ = ["Head", "HeadInputs", "HeadPlan", "HeadResult", "LogitSpec", "RowTerm", "ArcFace", "CosFace",
           "CombinedMargin", "LH2Face", "MVSoftmax", "SVSoftmax", "USS", "AdaFace", "MagFace", "CurricularFace"]
