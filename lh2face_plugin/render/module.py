"""The ``"render"`` input module: reconstruction, frontalisation and fusion for recognition.

Usage with any backbone (3x112x112 in ``[-1, 1]`` -> embedding)::

    render = build_input_module("render", mode="frozen", checkpoint="render.pt")  # the measured default terms
    model = render.wrap(backbone)           # model(images) -> embeddings; exports to ONNX
    emb, out = model.forward_train(images)  # out = render(images): input / canonical / depth / aux
    terms = render.losses(out, embed_fn=model.backbone, input_embedding=emb,
                          canon_loss_fn=lambda e: head_loss(e, labels))
    loss = head_loss(emb, labels) + terms["total"]

``terms["total"] = lambda_reco * L_reco + lambda_canon * L_FR^canon + lambda_view * L_view``
(:mod:`lh2face_plugin.render.losses` defines the terms). ``lambda_canon`` and ``lambda_view``
default to 0: both terms lowered accuracy where they were measured (docs/render.md, "Defaults"), and
with both at 0 no canonical embedding is computed. A loss that only sees the
embeddings, as in arcface_torch's ``train_v2``, gets ``out`` from the model instead: in
training mode ``model(images)`` keeps it as a pending item (:class:`RenderAugmentedModel`).
"""
from __future__ import annotations

import inspect
import os
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from ..fileio import atomic_path
from ..registry import register_input_module
from .fusion import adapt_backbone, fuse
from .losses import cosine_distance, photometric_nll
from .network import Reconstruction, ReconstructionNet
from .renderer import Renderer

__all__ = ["RenderInputModule", "RenderAugmentedModel", "MODES", "CHANNELS", "read_checkpoint"]

MODES = ("joint", "frozen")
ALBEDO_SOURCES = ("predicted", "frontalised")
CHANNELS = ("all", "depth", "canonical")
EmbedFn = Callable[[Tensor], Tensor]


def _check_weight(name: str, value: float) -> float:
    value = float(value)
    if not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value}")
    return value


@register_input_module("render")
class RenderInputModule(nn.Module):
    """Renderer-augmented input: canonical face and depth fed to recognition with the RGB.

    Args:
        lambda_reco: weight of ``L_reco`` (photometric + symmetry + identity).
        lambda_canon: weight of ``L_FR^canon``, the head's loss on the canonical embedding.
            Default 0: measured to lower hard-HQ TAR@1e-2 (docs/render.md, "Defaults").
        lambda_view: weight of ``L_view``, input / canonical embedding agreement. Default 0,
            as ``lambda_canon``. With both at 0 (and no identity term) :meth:`losses` makes
            no extra backbone pass.
        mode: ``"joint"`` trains the reconstruction with recognition; ``"frozen"``
            keeps the ``checkpoint``'s fixed (e.g. after ``lh2face render pretrain``).
        checkpoint: reconstruction weights written by :meth:`save_reconstruction`;
            required with ``mode="frozen"``.
        width: channel width of :class:`ReconstructionNet`.
        max_depth: depth range in half-image-width units.
        fov: camera field of view in degrees (0 = orthographic).
        photo_weight: weight of the photometric term in ``L_reco``.
        flip_weight: weight of the symmetry (flipped) photometric term in ``L_reco``.
        identity_weight: weight of the identity term in ``L_reco``.
        inverse_iterations: fixed-point steps of the re-rendering warp.
        canon_fraction: fraction of the batch (first rows) whose canonical face and
            re-rendered view are embedded for ``L_FR^canon``, ``L_view`` and the identity
            term: one extra backbone call on ``2 * canon_fraction`` of the batch (on
            ``canon_fraction`` when the identity term is off). Default 0.125, the setting
            measured (docs/render.md); it costs nothing when no term needs the pass.
        fusion: how :meth:`wrap` feeds the 7 channels to a backbone: ``"widen"`` its
            first 3-channel convolution or prepend an ``"adapter"`` (see :mod:`.fusion`).
        albedo: the canonical albedo that ``L_reco`` re-renders: ``"predicted"``, the
            network's albedo maps (Unsup3d); or ``"frontalised"``, the canonical face
            divided by the predicted shading, so that the photometric term measures how well
            the warp inverts and the symmetry term how symmetric the frontalised face is.
        channels: what the backbone is given beside the RGB image: ``"all"`` (canonical face and
            depth), ``"depth"`` (the canonical channels zeroed) or ``"canonical"`` (the depth
            channel zeroed); the ablations of which channel carries a gain, at the same size and cost.

    Shape:
        - Input: ``(B, 3, H, W)`` RGB in ``[-1, 1]`` (H, W divisible by 16).
        - Output: dict with ``"input"`` ``(B, 7, H, W)`` (fused RGB, canonical RGB,
          depth), ``"canonical"`` ``(B, 3, H, W)``, ``"depth"`` ``(B, 1, H, W)``,
          ``"aux"`` (``"images"``, ``"reconstruction"``: :class:`Reconstruction`,
          ``"grid"``: the frontalisation grid).
    """

    PREVIOUS_DEFAULTS = {"lambda_canon": 0.5, "lambda_view": 0.1, "canon_fraction": 1.0}
    """Defaults these parameters had before the measured ones (issue 26). A run recorded then (a
    ``train.json`` without ``"resolved"``) that did not name them trained with these values; a run key
    always names them (:func:`lh2face_plugin.training.run_key`), so such a run is not reused as a new one."""

    def __init__(
        self,
        lambda_reco: float = 1.0,
        lambda_canon: float = 0.0,
        lambda_view: float = 0.0,
        mode: str = "joint",
        checkpoint: Optional[str] = None,
        width: int = 16,
        max_depth: float = 0.6,
        fov: float = 10.0,
        photo_weight: float = 1.0,
        flip_weight: float = 0.5,
        identity_weight: float = 0.1,
        inverse_iterations: int = 6,
        canon_fraction: float = 0.125,
        fusion: str = "widen",
        albedo: str = "predicted",
        channels: str = "all",
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "frozen" and checkpoint is None:
            raise ValueError("checkpoint is required with mode='frozen': the path of the reconstruction to keep fixed "
                             "(written by `lh2face render pretrain --out FILE`); without one it would stay random. "
                             "Use mode='joint' to train the reconstruction with recognition")
        self.lambda_reco = _check_weight("lambda_reco", lambda_reco)
        self.lambda_canon = _check_weight("lambda_canon", lambda_canon)
        self.lambda_view = _check_weight("lambda_view", lambda_view)
        self.photo_weight = _check_weight("photo_weight", photo_weight)
        self.flip_weight = _check_weight("flip_weight", flip_weight)
        self.identity_weight = _check_weight("identity_weight", identity_weight)
        if not 0 < float(canon_fraction) <= 1:
            raise ValueError(f"canon_fraction must be in (0, 1], got {canon_fraction}")
        self.canon_fraction = float(canon_fraction)
        if fusion not in ("widen", "adapter"):
            raise ValueError(f"fusion must be 'widen' or 'adapter', got {fusion!r}")
        self.fusion = fusion
        if albedo not in ALBEDO_SOURCES:
            raise ValueError(f"albedo must be one of {ALBEDO_SOURCES}, got {albedo!r}")
        self.albedo = albedo
        if channels not in CHANNELS:
            raise ValueError(f"channels must be one of {CHANNELS}, got {channels!r}")
        self.channels = channels
        self.mode = mode
        self.net = ReconstructionNet(width=width, max_depth=max_depth)
        self.renderer = Renderer(fov=fov, inverse_iterations=inverse_iterations)
        if checkpoint is not None:
            self.load_reconstruction(checkpoint)
        if mode == "frozen":
            self.net.requires_grad_(False)

    @classmethod
    def resolved_kwargs(cls, kwargs: Dict[str, object]) -> Dict[str, object]:
        """``kwargs`` with every other constructor parameter at its default: what a module built with
        ``kwargs`` uses (recorded in ``train.json`` as ``"resolved"``)."""
        params = inspect.signature(cls.__init__).parameters
        out = {n: p.default for n, p in params.items() if n != "self" and p.default is not inspect.Parameter.empty}
        out.update(kwargs)
        return out

    @property
    def max_depth(self) -> float:
        return self.net.max_depth

    @property
    def reco_on(self) -> bool:
        """Whether :meth:`losses` computes ``L_reco`` (joint mode with ``lambda_reco > 0``)."""
        return self.mode == "joint" and self.lambda_reco > 0

    @property
    def has_loss_terms(self) -> bool:
        """Whether :meth:`losses` can add anything to the loss: ``L_reco`` in joint mode, or a canonical
        term with a weight above 0. Without any, a wrapped model keeps no pending item."""
        return self.reco_on or self.lambda_canon > 0 or self.lambda_view > 0

    def train(self, mode: bool = True) -> "RenderInputModule":
        super().train(mode)
        if self.mode == "frozen":
            self.net.eval()
        return self

    # -- forward --------------------------------------------------------------------------
    def fuse(self, rgb: Tensor, canonical: Tensor, depth: Tensor) -> Tensor:
        """``(B, 7, H, W)`` backbone input from RGB, canonical RGB and depth (the channels
        :attr:`channels` leaves out are zeros)."""
        if self.channels == "depth":
            canonical = torch.zeros_like(canonical)
        elif self.channels == "canonical":
            depth = torch.zeros_like(depth)
        return fuse(rgb, canonical, depth, self.max_depth)

    def forward(self, images: Tensor) -> Dict[str, object]:
        rec = self.net(images)
        canonical, grid = self.renderer.frontalise(images, rec.depth, rec.view)
        return {
            "input": self.fuse(images, canonical, rec.depth),
            "canonical": canonical,
            "depth": rec.depth,
            "aux": {"images": images, "reconstruction": rec, "grid": grid},
        }

    def rerender(self, out: Dict[str, object]) -> Dict[str, Tensor]:
        """Re-render the input view from the canonical maps, and from their mirror image.

        Returns:
            dict of ``"shaded"`` (canonical albedo x shading, ``[0, 1]``), ``"view"`` and
            ``"view_flip"`` ``(B, 3, H, W)`` in ``[0, 1]``, ``"valid"`` and ``"valid_flip"``
            ``(B, 1, H, W)`` masks.
        """
        rec: Reconstruction = out["aux"]["reconstruction"]
        shading = self.renderer.shading(rec.depth, rec.light)
        if self.albedo == "frontalised":
            shaded = (out["canonical"] + 1) / 2
            albedo = shaded / shading.clamp_min(0.05)
        else:
            albedo = rec.albedo
            shaded = albedo * shading
        view, valid = self.renderer.render_view(shaded, rec.depth, rec.view)
        depth_f, albedo_f = rec.depth.flip(-1), albedo.flip(-1)
        shaded_f = albedo_f * self.renderer.shading(depth_f, rec.light)
        view_f, valid_f = self.renderer.render_view(shaded_f, depth_f, rec.view)
        return {"shaded": shaded, "view": view, "view_flip": view_f, "valid": valid, "valid_flip": valid_f}

    # -- losses ---------------------------------------------------------------------------
    def losses(
        self,
        out: Dict[str, object],
        embed_fn: Optional[EmbedFn] = None,
        input_embedding: Optional[Tensor] = None,
        canon_loss_fn: Optional[Callable[[Tensor], Tensor]] = None,
    ) -> Dict[str, Tensor]:
        """Named loss terms for one batch.

        Args:
            out: this module's output for the batch.
            embed_fn: the recognition backbone on fused ``(N, 7, H, W)`` inputs
                (``model.backbone`` of :meth:`wrap`); ``None`` = reconstruction only.
            input_embedding: ``(B, D)`` embedding of ``out["input"]``; needed for the
                identity and view terms.
            canon_loss_fn: the recognition head's loss on ``(K, D)`` canonical embeddings of
                the first ``K = max(1, round(canon_fraction * B))`` rows (the caller slices labels
                with ``terms["canon_rows"]``); the identity and view terms use the same rows.

        Returns:
            dict of scalars ``"photo"``, ``"flip"``, ``"identity"``, ``"reco"``, ``"canon"``,
            ``"view"``, ``"total"`` (weighted sum), plus ``"canon_embedding"`` ``(K, D)``
            and ``"canon_rows"`` (K) when the canonical pass ran. Terms that cannot be
            computed from the arguments, or whose weight is 0, are zero.

        The canonical pass (one ``embed_fn`` call) runs only for a term with a weight above 0:
        ``L_FR^canon`` (``lambda_canon``, needs ``canon_loss_fn``), ``L_view`` (``lambda_view``) or
        the identity term of ``L_reco`` (joint mode); ``canon_loss_fn`` is called only for
        ``lambda_canon > 0``. The decision depends on the module's settings and on which arguments
        are given, never on the data, so every rank of a distributed run makes the same calls.
        """
        images: Tensor = out["aux"]["images"]
        rec: Reconstruction = out["aux"]["reconstruction"]
        zero = images.new_zeros(())
        terms: Dict[str, Tensor] = {k: zero for k in ("photo", "flip", "identity", "reco", "canon", "view")}
        target = (images + 1) / 2
        reco_on = self.reco_on
        canonical, depth = out["canonical"], out["depth"]
        renders = None
        if reco_on:
            renders = self.rerender(out)
            terms["photo"] = photometric_nll(renders["view"], target, rec.confidence[:, :1], renders["valid"])
            terms["flip"] = photometric_nll(renders["view_flip"], target, rec.confidence[:, 1:], renders["valid_flip"])
        batches = []
        want_identity = reco_on and self.identity_weight > 0 and input_embedding is not None
        want_canon = self.lambda_canon > 0 and canon_loss_fn is not None
        want_view = self.lambda_view > 0 and input_embedding is not None
        if embed_fn is not None and (want_identity or want_canon or want_view):
            k = max(1, int(round(self.canon_fraction * images.shape[0])))
            batches.append(self.fuse(canonical[:k], canonical[:k], depth[:k]))
            if want_identity:
                batches.append(self.fuse(renders["view"][:k] * 2 - 1, canonical[:k], depth[:k]))
            emb = embed_fn(torch.cat(batches, dim=0))
            e_canon = emb[:k]
            terms["canon_embedding"] = e_canon
            terms["canon_rows"] = k
            if want_identity:
                terms["identity"] = cosine_distance(emb[k:], input_embedding[:k].detach())
            if want_view:
                terms["view"] = cosine_distance(input_embedding[:k], e_canon)
            if want_canon:
                terms["canon"] = canon_loss_fn(e_canon)
        terms["reco"] = (self.photo_weight * terms["photo"] + self.flip_weight * terms["flip"]
                         + self.identity_weight * terms["identity"])
        terms["total"] = (
            self.lambda_reco * terms["reco"] + self.lambda_canon * terms["canon"] + self.lambda_view * terms["view"]
        )
        return terms

    # -- integration ----------------------------------------------------------------------
    def wrap(self, backbone: nn.Module, fusion: Optional[str] = None) -> "RenderAugmentedModel":
        """A model taking plain ``(B, 3, H, W)`` faces; it computes exactly what ``backbone``
        computed until the stem's zero-started channels train (:func:`.fusion.adapt_backbone`).

        Args:
            backbone: maps ``(B, 3, H, W)`` to embeddings; modified in place for ``"widen"``.
            fusion: overrides the module's ``fusion``.
        """
        return RenderAugmentedModel(self, adapt_backbone(backbone, fusion or self.fusion))

    def save_reconstruction(self, path: str) -> None:
        """Write the reconstruction network's weights atomically (:func:`lh2face_plugin.fileio.atomic_path`)."""
        config = {"width": self.net.stem[0].out_channels, "max_depth": self.max_depth, "fov": self.renderer.fov}
        with atomic_path(os.fspath(path), suffix=".pt") as tmp:
            torch.save({"format": "lh2face-render/1", "config": config, "state_dict": self.net.state_dict()}, tmp)

    @classmethod
    def from_checkpoint(cls, path: str, **kwargs) -> "RenderInputModule":
        """A module with the architecture stored in ``path`` and its weights."""
        cfg = read_checkpoint(path)["config"]
        return cls(checkpoint=path, **{**cfg, **kwargs})

    def load_reconstruction(self, path: str) -> None:
        """Load weights written by :meth:`save_reconstruction`."""
        blob = read_checkpoint(path)
        cfg = blob["config"]
        mine = {"width": self.net.stem[0].out_channels, "max_depth": self.max_depth, "fov": self.renderer.fov}
        if cfg != mine:
            raise ValueError(f"render checkpoint {path!r} was trained with {cfg}, this module has {mine}")
        self.net.load_state_dict(blob["state_dict"])


def read_checkpoint(path: str) -> dict:
    """The content of a render checkpoint (``format`` ``lh2face-render/1``); ``ValueError`` for any other file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"render checkpoint {path!r} does not exist")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"cannot read render checkpoint {path!r}: {exc}") from None
    if not isinstance(blob, dict) or blob.get("format") != "lh2face-render/1":
        raise ValueError(f"{path!r} is not a render checkpoint (expected key format='lh2face-render/1')")
    return blob


class RenderAugmentedModel(nn.Module):
    """``backbone(render(images)["input"])``: a recognition model with a plain RGB input.

    A training loop that hands only the embeddings to its loss (arcface_torch's
    ``loss = module_partial_fc(backbone(img), labels)``) gets the render terms through a
    *pending item*: in training mode :meth:`forward` runs :meth:`forward_train`, returns the
    embeddings and keeps the batch's render output; the loss paired with the model takes it
    with :meth:`pop_pending` and adds :meth:`pending_losses` ``["total"]`` (the plugin's
    ``PartialFC`` does, see :mod:`lh2face_plugin.arcface_torch.partial_fc`). Each training
    forward replaces the item, :meth:`pop_pending` and ``eval()`` clear it, copies and pickles
    of the model carry none, and evaluation-mode forwards keep nothing, so evaluation and
    export are unchanged. A module without loss terms (:attr:`RenderInputModule.has_loss_terms`:
    frozen, ``lambda_canon = lambda_view = 0``) leaves no item, so the loss is the head's alone.

    Attributes:
        render: the :class:`RenderInputModule`.
        backbone: the backbone adapted to the fused 7-channel input (the ``embed_fn``
            of :meth:`RenderInputModule.losses`).
    """

    def __init__(self, render: RenderInputModule, backbone: nn.Module) -> None:
        super().__init__()
        self.render = render
        self.backbone = backbone
        self._pending: Optional[Dict[str, object]] = None

    def forward(self, images: Tensor) -> Tensor:
        if not self.training:
            return self.backbone(self.render(images)["input"])
        embeddings, out = self.forward_train(images)
        self._pending = out if self.render.has_loss_terms else None
        return embeddings

    def forward_train(self, images: Tensor) -> Tuple[Tensor, Dict[str, object]]:
        """``(embeddings, render output)`` for the loss terms (keeps no pending item)."""
        out = self.render(images)
        return self.backbone(out["input"]), out

    def pop_pending(self) -> Optional[Dict[str, object]]:
        """The render output kept by the last training forward, or ``None``; clears it."""
        pending, self._pending = self._pending, None
        return pending

    def pending_losses(
        self,
        pending: Dict[str, object],
        input_embedding: Tensor,
        canon_loss_fn: Optional[Callable[[Tensor], Tensor]] = None,
    ) -> Dict[str, Tensor]:
        """:meth:`RenderInputModule.losses` of a popped item, with ``embed_fn = self.backbone``.

        Args:
            pending: what :meth:`pop_pending` returned.
            input_embedding: ``(B, D)`` the embeddings the loss received for that batch.
            canon_loss_fn: the head's loss on the ``(K, D)`` canonical embeddings of the
                first ``K = terms["canon_rows"]`` rows.

        Raises:
            ValueError: ``input_embedding`` has another row count than the batch of ``pending``.
        """
        rows = pending["aux"]["images"].shape[0]
        if input_embedding.dim() != 2 or input_embedding.shape[0] != rows:
            raise ValueError(
                f"the loss got embeddings of shape {tuple(input_embedding.shape)}, but the render-wrapped model's "
                f"last training forward saw {rows} images; call the model once per loss call, on the same batch"
            )
        return self.render.losses(pending, embed_fn=self.backbone, input_embedding=input_embedding,
                                  canon_loss_fn=canon_loss_fn)

    def train(self, mode: bool = True) -> "RenderAugmentedModel":
        if not mode:
            self._pending = None
        return super().train(mode)

    def __getstate__(self) -> Dict[str, object]:
        state = dict(self.__dict__)
        state["_pending"] = None
        return state
