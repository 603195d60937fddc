"""Loss heads: one module per loss family (see :mod:`lh2face_plugin.heads.base` for the contract)."""
from .adaface import AdaFace
from .base import Head, HeadInputs, HeadPlan, HeadResult, LogitSpec, RowTerm
from .curricularface import CurricularFace
from .lh2face import LH2Face
from .magface import MagFace
from .margins import ArcFace, CombinedMargin, CosFace
from .mv_softmax import MVSoftmax
from .sv_softmax import SVSoftmax
from .uss import USS

__all__ = ["Head", "HeadInputs", "HeadPlan", "HeadResult", "LogitSpec", "RowTerm", "ArcFace", "CosFace", "CombinedMargin", "LH2Face", "MVSoftmax", "SVSoftmax", "USS", "AdaFace", "MagFace",
           "CurricularFace"]
