"""Five-point face alignment onto the ArcFace 112x112 template.

The similarity transform (rotation, uniform scale, translation) mapping the detected
landmarks onto the template is the least-squares estimate of Umeyama, "Least-squares
estimation of transformation parameters between two point patterns", TPAMI 1991
(eq. 40-43, with the reflection correction of eq. 39).
"""
from __future__ import annotations

import numpy as np

ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)
"""Left eye, right eye, nose tip, left and right mouth corner in a 112x112 crop."""


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform taking ``src`` points onto ``dst``.

    Sums and the SVD run in the points' own precision (float32 landmarks stay float32,
    as in the reference IJB pipeline), so warps match it pixel for pixel.

    Args:
        src, dst: ``(K, 2)`` corresponding points, ``K >= 2``.
    Returns:
        ``(2, 3)`` float64 affine matrix ``M`` with ``dst ~ M @ [x, y, 1]``.
    """
    src, dst = np.asarray(src), np.asarray(dst)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need matching (K>=2, 2) point sets, got {src.shape} and {dst.shape}")
    s0 = src - src.mean(axis=0)
    d0 = dst - dst.mean(axis=0)
    cov = d0.T @ s0 / len(src)
    sign = np.ones(2)
    if np.linalg.det(cov) < 0:
        sign[1] = -1.0
    u, sig, vt = np.linalg.svd(cov)
    rank = np.count_nonzero(sig > sig.max() * 2 * np.finfo(float).eps)
    if rank == 0:
        raise ValueError("degenerate landmarks: all points coincide")
    if rank == 1 and np.linalg.det(u) * np.linalg.det(vt) <= 0:
        rot = u @ np.diag([1.0, -1.0]) @ vt
    elif rank == 1:
        rot = u @ vt
    else:
        rot = u @ np.diag(sign) @ vt
    scale = 1.0 / s0.var(axis=0).sum() * (sig @ sign)
    m = np.empty((2, 3))
    m[:, 2] = dst.mean(axis=0) - scale * (rot @ src.mean(axis=0))
    m[:, :2] = rot * scale
    return m


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """Warp ``image`` so that its 5 ``landmarks`` land on the ArcFace template.

    Bilinear interpolation, black outside the image (``cv2.warpAffine`` defaults).

    Args:
        image: ``(H, W, C)`` uint8.
        landmarks: ``(5, 2)`` pixel coordinates in ``image``.
        size: output side; the template is scaled by ``size / 112``.
    Returns:
        ``(size, size, C)`` uint8.
    """
    import cv2  # optional: heavy

    lmk = np.asarray(landmarks, dtype=np.float32).reshape(5, 2)
    m = similarity_transform(lmk, ARCFACE_TEMPLATE * (size / 112.0))
    return cv2.warpAffine(image, m, (size, size), borderValue=0.0)
