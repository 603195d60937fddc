"""A torch ``Dataset`` over an insightface ``train.rec`` (no mxnet needed)."""
from __future__ import annotations

import os
from typing import Optional, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from .. import images
from ..labels import record_label
from . import recordio
from .recordio import MXIndexedRecordIO, unpack

__all__ = ["FaceRecordDataset", "resolve_rec"]


def resolve_rec(path: Union[str, "os.PathLike[str]"]) -> Tuple[str, str]:
    """``(rec, idx)`` paths for a dataset folder (``train.rec``/``train.idx``) or a ``.rec`` file."""
    path = os.fspath(path)
    if os.path.isdir(path):
        rec = os.path.join(path, "train.rec")
    else:
        rec = path
    if not os.path.exists(rec):
        raise FileNotFoundError(f"{rec}: no RecordIO file (expected a .rec or a folder holding train.rec)")
    return rec, os.path.splitext(rec)[0] + ".idx"


class FaceRecordDataset(Dataset):
    """Face images and labels from a RecordIO file, as arcface_torch's ``MXFaceDataset`` reads them.

    With an insightface header record (key 0, ``flag > 0``, labels ``[N+1, ...]``, no image)
    the samples are keys ``1..N``; otherwise (im2rec layout) every key of the
    index. An image record's label is its scalar label, or the first of its labels. An image at
    key 0 with vector labels is refused: the host's reader would take it for the header.

    Args:
        root: a folder holding ``train.rec``/``train.idx``, or the ``.rec`` path
            (its ``.idx`` sits beside it with the same stem).
        random_flip: flip each image horizontally with probability 0.5 (torch's RNG,
            so DataLoader workers draw independent flips).
        image_size: expected ``(H, W)`` of every image; a mismatch raises ``ValueError``.

    Returns per item:
        image: float32 tensor ``(3, H, W)``, **RGB**, ``(x / 255 - 0.5) / 0.5`` in [-1, 1].
        label: int64 scalar tensor.

    Safe with ``DataLoader(num_workers > 0)``: each worker process maps the file itself.
    """

    def __init__(self, root: Union[str, "os.PathLike[str]"], random_flip: bool = True,
                 image_size: Tuple[int, int] = (112, 112)) -> None:
        super().__init__()
        self.rec_path, self.idx_path = resolve_rec(root)
        self.random_flip = random_flip
        self.image_size = tuple(image_size)
        self.record = MXIndexedRecordIO(self.idx_path, self.rec_path, "r")
        self.header0: Optional[Tuple[int, int]] = None
        if not self.record.keys:
            raise ValueError(f"{self.idx_path}: the index is empty, the dataset has no images")
        first = self.record.keys[0]
        payload = self.record.read_idx(first)  # key 0: recordio.check_header bounds the count by the index
        header, _ = unpack(payload)
        if header.flag > 0 and first == 0:
            self.header0 = recordio.check_header(payload, len(self.record.keys), os.path.getsize(self.rec_path),
                                                 f"{self.rec_path}, key 0 (the header record)")
            if self.header0 is None:
                raise ValueError(f"{self.rec_path}, key 0: a header record needs 2 labels [N + 1, N + 1 + K], "
                                 f"found {header.flag}")
            self.imgidx = np.arange(1, self.header0[0], dtype=np.int64)
        else:
            self.imgidx = np.asarray(self.record.keys)

    @property
    def num_classes(self) -> Optional[int]:
        """Number of identities from the header record (``None`` without one)."""
        if self.header0 is None:
            return None
        return self.header0[1] - self.header0[0]

    def __len__(self) -> int:
        return len(self.imgidx)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        key = self.imgidx[index].item()
        where = f"{self.rec_path}, key {key}"
        try:
            header, payload = unpack(self.record.read_idx(key))
        except recordio.RecordIOError:
            raise
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        label = record_label(header.label, f"{self.rec_path}, record {key}", self.num_classes)
        bgr = images.decode(payload, "bgr", where=where, backend=recordio.IMAGE_BACKEND)
        if bgr.shape[:2] != self.image_size:
            raise ValueError(f"{self.rec_path}, key {key}: image is {bgr.shape[0]}x{bgr.shape[1]}, expected "
                             f"{self.image_size[0]}x{self.image_size[1]} (aligned faces)")
        rgb = bgr[:, :, ::-1]
        if self.random_flip and torch.rand(()) < 0.5:
            rgb = rgb[:, ::-1]
        image = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float()
        image = image.div_(255.0).sub_(0.5).div_(0.5)
        return image, torch.tensor(label, dtype=torch.long)
