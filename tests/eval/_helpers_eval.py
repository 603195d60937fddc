"""Synthetic inputs for the evaluation tests: a tiny embedding net, .bin files, IJB-style sets."""
from __future__ import annotations

import os
import pickle

import numpy as np
import torch
from torch import nn

TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                     [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)


class TinyNet(nn.Module):
    """(B, 3, 112, 112) -> (B, dim); cheap, deterministic and not mirror-symmetric."""

    def __init__(self, dim: int = 16, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 4, 4, stride=4)
        self.pool = nn.AvgPool2d(7)
        self.fc = nn.Linear(4 * 16, dim)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


def identity_image(ident: int, rng: np.random.Generator, size: int = 112, noise: float = 40.0) -> np.ndarray:
    """A smooth pattern, partly shared by all identities, plus per-image noise; uint8 RGB."""
    shared = np.random.default_rng(999).uniform(0, 255, (8, 8, 3))
    base = 0.8 * shared + 0.2 * np.random.default_rng(1000 + ident).uniform(0, 255, (8, 8, 3)) \
        + rng.normal(0, 12, (8, 8, 3))
    img = np.kron(base, np.ones((size // 8 + 1, size // 8 + 1, 1)))[:size, :size]
    img = img + rng.normal(0, noise, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_pairs(num_pairs: int, seed: int = 0, size: int = 112):
    """``(images, issame)``: 2P uint8 images, pair i = images[2i], images[2i+1]."""
    rng = np.random.default_rng(seed)
    images, issame = [], []
    for p in range(num_pairs):
        same = p % 2 == 0
        a = int(rng.integers(0, 10 ** 6))
        b = a if same else a + 1 + int(rng.integers(0, 10 ** 6))
        images += [identity_image(a, rng, size), identity_image(b, rng, size)]
        issame.append(same)
    return images, issame


def write_bin(path: str, images, issame, encoding: str = "jpeg", protocol: int = 2) -> str:
    """Write an arcface_torch-style .bin: JPEG/PNG bytes or raw uint8 arrays, and booleans."""
    import cv2

    if encoding == "array":
        bins = list(images)
    else:
        ext = ".jpg" if encoding == "jpeg" else ".png"
        bins = [cv2.imencode(ext, cv2.cvtColor(im, cv2.COLOR_RGB2BGR))[1].tobytes() for im in images]
    with open(path, "wb") as f:
        pickle.dump((bins, list(issame)), f, protocol=protocol)
    return path


def make_ijb(root: str, target: str = "SYNTH", identities: int = 6, templates_per_id: int = 3,
             seed: int = 0, crop: int = 150, onen: bool = True) -> dict:
    """Write a small IJB-style set (meta + loose crops with landmarks in crop coordinates).

    Each template holds 1-3 media of 1-3 images; every template pair is listed; with
    ``onen`` the first template of each of the first identities forms G1/G2 and the
    others are probes (the last identity is in no gallery: non-mated probes).
    """
    import cv2

    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "meta"), exist_ok=True)
    os.makedirs(os.path.join(root, "loose_crop"), exist_ok=True)
    t = target.lower()
    tid_rows, lmk_rows, subjects = [], [], {}
    tid, mid, n = 100, 7, 0
    for ident in range(identities):
        for _ in range(templates_per_id):
            tid += int(rng.integers(1, 4))
            subjects[tid] = ident
            for _ in range(int(rng.integers(1, 4))):
                mid += int(rng.integers(1, 3))
                for _ in range(int(rng.integers(1, 4))):
                    face = identity_image(ident, rng)
                    scale = rng.uniform(0.9, 1.1)
                    angle = rng.uniform(-15, 15)
                    m = cv2.getRotationMatrix2D((56, 56), angle, scale)
                    m[:, 2] += rng.uniform(5, crop - 117, 2)
                    img = cv2.warpAffine(face, m, (crop, crop), borderMode=cv2.BORDER_REFLECT)
                    lmk = TEMPLATE @ m[:, :2].T + m[:, 2] + rng.normal(0, 0.5, (5, 2))
                    name = f"{n}.jpg"
                    cv2.imwrite(os.path.join(root, "loose_crop", name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
                    tid_rows.append(f"{name} {tid} {mid}")
                    score = rng.uniform(0.5, 1.0)
                    lmk_rows.append(name + " " + " ".join(f"{v:.3f}" for v in lmk.ravel()) + f" {score:.6f}")
                    n += 1
    tids = sorted(subjects)
    pairs = [f"{a} {b} {int(subjects[a] == subjects[b])}" for i, a in enumerate(tids) for b in tids[i + 1:]]
    for name, rows in (("face_tid_mid", tid_rows), ("name_5pts_score", lmk_rows), ("template_pair_label", pairs)):
        with open(os.path.join(root, "meta", f"{t}_{name}.txt"), "w") as f:
            f.write("\n".join(rows) + "\n")
    if onen:
        first = {}
        for tt in tids:
            first.setdefault(subjects[tt], tt)
        gal_ids = [i for i in range(identities - 1)]
        g1 = [first[i] for i in gal_ids[::2]]
        g2 = [first[i] for i in gal_ids[1::2]]
        probes = [tt for tt in tids if tt not in g1 + g2]
        for name, ids in (("1N_gallery_G1", g1), ("1N_gallery_G2", g2), ("1N_probe_mixed", probes)):
            with open(os.path.join(root, "meta", f"{t}_{name}.csv"), "w") as f:
                f.write("TEMPLATE_ID,SUBJECT_ID,FILENAME\n")
                f.write("".join(f"{tt},{subjects[tt]},img/{tt}.jpg\n" for tt in ids))
    return {"images": n, "templates": len(tids), "pairs": len(pairs), "subjects": subjects}


def export_onnx(module: nn.Module, path: str) -> str:
    """Static 3x112x112 input, dynamic batch."""
    import warnings

    x = torch.zeros(2, 3, 112, 112)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module.eval(), (x,), path, input_names=["input"], output_names=["embedding"],
                          dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}}, dynamo=False)
    return path
