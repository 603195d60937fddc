"""A stand-in for the parts of torchvision that arcface_torch's ``dataset.py`` uses.

PyPI's torchvision wheels are built against one torch build each; next to a CPU-only
or locally built torch they fail to import (``operator torchvision::nms does not
exist``), and arcface_torch imports torchvision at the top of ``dataset.py``. Where
torchvision is missing or fails to import, :func:`build_torchvision_shim` provides
module objects to install in ``sys.modules`` with:

- ``transforms``: ``Compose``, ``ToPILImage`` (an [H, W, C] uint8 array to a PIL image),
  ``RandomHorizontalFlip(p)``, ``ToTensor`` (a PIL image or [H, W, C] uint8 array to a
  [C, H, W] float tensor in [0, 1]) and ``Normalize(mean, std)`` on tensors.
- ``datasets.ImageFolder(root, transform)``: ``root/<class>/<image>``, classes in sorted
  folder order, ``(image, class index)`` items, RGB PIL images.

These cover the training data path (``MXFaceDataset`` and the image-folder loader);
anything else raises an ``AttributeError`` saying that the stand-in does not provide it.
"""
from __future__ import annotations

import os
import types
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from ..images import read

__all__ = ["build_torchvision_shim", "SHIM_VERSION", "IMAGE_EXTENSIONS"]

SHIM_VERSION = "lh2face-shim"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class Compose:
    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x


class ToPILImage:
    """[H, W, C] (or [H, W]) uint8 array, or [C, H, W] float tensor in [0, 1], to a PIL image."""

    def __call__(self, pic):
        if isinstance(pic, torch.Tensor):
            arr = pic.detach().cpu()
            if arr.is_floating_point():
                arr = (arr * 255).round().clamp(0, 255).to(torch.uint8)
            pic = arr.permute(1, 2, 0).numpy() if arr.dim() == 3 else arr.numpy()
        arr = np.asarray(pic)
        if arr.dtype != np.uint8:
            raise TypeError(f"ToPILImage (lh2face stand-in) takes uint8 arrays, got {arr.dtype}")
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        return Image.fromarray(np.ascontiguousarray(arr))


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, img):
        if torch.rand(1).item() >= self.p:
            return img
        if isinstance(img, torch.Tensor):
            return img.flip(-1)

        return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


class ToTensor:
    """PIL image or [H, W, C] uint8 array -> [C, H, W] float32 tensor in [0, 1]."""

    def __call__(self, pic):
        if getattr(pic, "mode", "RGB") not in ("L", "RGB"):
            pic = pic.convert("RGB")
        arr = np.array(pic)       # a copy: PIL's buffers are read-only
        if arr.ndim == 2:
            arr = arr[:, :, None]
        out = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
        return out.float().div(255) if out.dtype == torch.uint8 else out.float()


class Normalize:
    """``(x - mean) / std`` per channel of a [C, H, W] tensor."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], inplace: bool = False):
        self.mean, self.std = list(mean), list(std)

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        mean = torch.as_tensor(self.mean, dtype=tensor.dtype).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=tensor.dtype).view(-1, 1, 1)
        return (tensor - mean) / std


class ImageFolder(torch.utils.data.Dataset):
    """``root/<class>/<image>`` images as ``(transform(RGB PIL image), class index)``.

    Args:
        root: folder with one sub-folder per class (sorted names give indices 0..K-1).
        transform: applied to each image.

    Raises:
        FileNotFoundError: ``root`` has no class folder holding an image.
    """

    def __init__(self, root: str, transform: Optional[Callable] = None, target_transform: Optional[Callable] = None):
        self.root, self.transform, self.target_transform = root, transform, target_transform
        self.classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.samples: List[Tuple[str, int]] = []
        for c in self.classes:
            for dirpath, _, files in sorted(os.walk(os.path.join(root, c))):
                self.samples += [(os.path.join(dirpath, f), self.class_to_idx[c]) for f in sorted(files)
                                 if f.lower().endswith(IMAGE_EXTENSIONS)]
        if not self.samples:
            raise FileNotFoundError(f"{root}: no images in class sub-folders (extensions {', '.join(IMAGE_EXTENSIONS)})")
        self.targets = [t for _, t in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, target = self.samples[index]
        sample = Image.fromarray(read(path, "rgb"))
        if self.transform is not None:
            sample = self.transform(sample)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return sample, target


class _ShimModule(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(
            f"{self.__name__}.{name} is not provided by lh2face_plugin's torchvision stand-in (torchvision is "
            "missing or does not import next to this torch). Install the torchvision build that matches your torch "
            "for this part of arcface_torch."
        )


def build_torchvision_shim() -> dict:
    """Module objects to install in ``sys.modules``: ``torchvision``, ``torchvision.transforms``, ``.datasets``."""
    tv = _ShimModule("torchvision", "lh2face_plugin stand-in for the parts of torchvision arcface_torch uses")
    tv.__version__ = SHIM_VERSION
    tv.__file__ = __file__
    tv.__path__ = []
    transforms = _ShimModule("torchvision.transforms")
    for cls in (Compose, ToPILImage, RandomHorizontalFlip, ToTensor, Normalize):
        setattr(transforms, cls.__name__, cls)
    datasets = _ShimModule("torchvision.datasets")
    datasets.ImageFolder = ImageFolder
    tv.transforms, tv.datasets = transforms, datasets
    return {"torchvision": tv, "torchvision.transforms": transforms, "torchvision.datasets": datasets}
