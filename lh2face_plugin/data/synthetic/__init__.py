"""Synthetic 3D faces with ground truth: identities, single renders and whole datasets.

Identity lives in a latent vector (:data:`~lh2face_plugin.data.face3d.PARAM_NAMES`: head
shape, brow, eye sockets, nose, cheeks, mouth, chin, skin tone, features and texture);
nuisance is per image: pose, light, expression, background and quality degradations
(blur, low resolution, noise, JPEG). "Hard" identities come in families that share a base
vector and differ by small offsets, so close identity pairs exist at every quality level.

Images are 112x112 RGB aligned like ArcFace's 5-point template at yaw 0; every render comes
with its ground-truth depth (:func:`~lh2face_plugin.data.face3d.depth_from_height`), face
mask, 5 landmarks, canonical frontal image and a quality score.

:func:`generate_dataset` writes a training RecordIO set in insightface's layout, a
verification ``.bin`` in arcface_torch's format, an IJB-style 1:1 template set and a
renderer-evaluation archive, all from one seed.

Modules: ``identities`` (identities and families), ``quality`` (degradations and the quality
score), ``views`` (per-image nuisance, clean renders), ``render`` (:func:`render_face`,
:func:`render_faces`), ``plans`` (what each dataset image shows), ``runner`` (rendering in
worker processes), ``crops`` (loose crops), one writer per output format (``train_set``,
``verification``, ``ijb``, ``render_eval``) and ``dataset`` (:func:`generate_dataset`).
"""
from ..face3d import NEUTRAL_LIGHT, Light
from .dataset import FORMAT_VERSION, generate_dataset
from .identities import Identity, make_eval_identities, make_identities
from .ijb import IJB_TARGET
from .quality import HIGH_QUALITY, STORE_JPEG_QUALITY, Degradation, degradation_with_quality, degrade, quality_score
from .render import FaceSample, render_face, render_faces

__all__ = [
    "Identity",
    "Degradation",
    "FaceSample",
    "Light",
    "NEUTRAL_LIGHT",
    "HIGH_QUALITY",
    "STORE_JPEG_QUALITY",
    "IJB_TARGET",
    "FORMAT_VERSION",
    "make_identities",
    "make_eval_identities",
    "render_face",
    "render_faces",
    "quality_score",
    "degradation_with_quality",
    "degrade",
    "generate_dataset",
]
