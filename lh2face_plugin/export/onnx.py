"""ONNX export of a face embedding network, with parity and dynamic-batch checks.

The exported graph is what insightface's model zoo expects of a recognition
model: one float input ``[batch, 3, 112, 112]`` (static image size, dynamic
batch), one output ``[batch, D]``, and no input normalisation inside the graph.
insightface feeds ``(bgr_to_rgb(x) - 127.5) / 127.5``, which equals
arcface_torch's ``(x / 255 - 0.5) / 0.5``.

The input is named ``input.1`` by default, like the released insightface packs;
arcface_torch's ``torch2onnx.py`` names it ``data``. Either works:
``ArcFaceONNX`` reads the input name from the session.

Export uses torch's default (dynamo) exporter with a declared dynamic batch
dimension; without it the exporter bakes the example batch into a Reshape.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from ..fileio import atomic_path, sha256_file

__all__ = ["ExportReport", "export_onnx", "check_onnx", "insightface_preprocessing_guess", "sha256_file"]

DEFAULT_OPSET = 18
MIN_OPSET = 17
IMAGE_SIZE = 112


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote and measured.

    Attributes:
        path: the ONNX file.
        sha256: its SHA-256 (hex).
        opset: the ai.onnx opset of the graph.
        input_name / output_name: graph tensor names.
        input_shape: the graph input shape, the symbolic batch as a string.
        embedding_size: ``D``.
        cosine: per checked batch size, the smallest row-wise cosine between
            onnxruntime and torch embeddings.
        max_rel_diff: per checked batch size, ``max |onnx - torch| / max |torch|``.
        dynamic_batch: the batch axis is symbolic and every checked batch size
            ran and returned that many rows.
        renamed_nodes: node names changed so that insightface's
            preprocessing guess stays on mean/std 127.5.
    """

    path: str
    sha256: str
    opset: int
    input_name: str
    output_name: str
    input_shape: List[Union[int, str]]
    embedding_size: int
    cosine: Dict[int, float] = field(default_factory=dict)
    max_rel_diff: Dict[int, float] = field(default_factory=dict)
    dynamic_batch: bool = False
    renamed_nodes: int = 0

    def summary(self) -> str:
        """Human-readable lines: file, shapes, parity per batch size."""
        lines = [
            f"onnx      {self.path}",
            f"sha256    {self.sha256}",
            f"opset {self.opset}, input {self.input_name!r} {self.input_shape}, "
            f"output {self.output_name!r} [batch, {self.embedding_size}]",
        ]
        for b in sorted(self.cosine):
            lines.append(
                f"batch {b:>3}: min cosine(onnxruntime, torch) = {self.cosine[b]:.7f}, "
                f"max |diff| / max |torch| = {self.max_rel_diff[b]:.1e}"
            )
        lines.append(f"dynamic batch: {'yes' if self.dynamic_batch else 'NO'}")
        if self.renamed_nodes:
            lines.append(f"renamed {self.renamed_nodes} leading Sub/Mul node(s) so insightface keeps mean/std 127.5")
        return "\n".join(lines)


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put ``module`` in eval mode for the block, then restore its training flag."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def insightface_preprocessing_guess(model_proto) -> Tuple[float, float]:
    """The (mean, std) insightface's ``ArcFaceONNX`` picks for a graph without manifest.

    ``ArcFaceONNX`` assumes an mxnet-style graph that normalises internally
    (mean 0, std 1) when one of the first 8 node names starts with
    ``Sub``/``_minus`` and one with ``Mul``/``_mul``; otherwise 127.5 / 127.5.
    """
    names = [n.name for n in model_proto.graph.node[:8]]
    sub = any(n.startswith(("Sub", "_minus")) for n in names)
    mul = any(n.startswith(("Mul", "_mul")) for n in names)
    return (0.0, 1.0) if (sub and mul) else (127.5, 127.5)


def _keep_normalisation_guess(model_proto) -> int:
    """Rename leading nodes whose names would flip insightface's guess; returns how many."""
    renamed = 0
    for node in model_proto.graph.node[:8]:
        if node.name.startswith(("Sub", "_minus", "Mul", "_mul")):
            node.name = f"lh2face_{node.name}"
            renamed += 1
    return renamed


def _opset_of(model_proto) -> int:
    return int(next(o.version for o in model_proto.opset_import if o.domain in ("", "ai.onnx")))


def module_device(module: nn.Module) -> torch.device:
    """Device of the first parameter or buffer; CPU for a stateless module."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def _validate_model_io(module: nn.Module, device: torch.device) -> int:
    gen = torch.Generator().manual_seed(0)
    probe = (torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen) * 2 - 1).to(device)
    with torch.no_grad():
        out = module(probe)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 2:
        got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the model must map [B, 3, 112, 112] to one [B, D] tensor; for B=2 it returned {got}")
    if not bool(torch.isfinite(out).all()):
        raise FloatingPointError("the model returns NaN or infinite embeddings for a random input batch (NaN "
                                 "weights?); nothing was exported")
    return int(out.shape[1])


def _session(path: str):
    import onnxruntime as ort  # optional: heavy

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


def check_onnx(
    path: str,
    module: Optional[nn.Module] = None,
    batch_sizes: Sequence[int] = (1, 8),
    seed: int = 0,
) -> Tuple[Dict[int, float], Dict[int, float], bool]:
    """Run an exported embedding model in onnxruntime and compare with torch.

    Args:
        path: ONNX file with one input ``[batch, 3, 112, 112]`` and one output.
        module: the torch model it was exported from (eval mode is used); if
            ``None`` only the dynamic-batch check runs.
        batch_sizes: batch sizes to run; inputs are uniform in ``[-1, 1]``.

    Returns:
        ``(cosine, max_rel_diff, dynamic)``: per batch size the smallest
        row-wise cosine and ``max |onnx - torch| / max |torch|`` (empty without
        ``module``), and whether the batch axis is symbolic and every batch
        size returned that many rows.
    """
    sess = _session(path)
    inputs, outputs = sess.get_inputs(), sess.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(f"{path}: expected one input and one output, got {len(inputs)} and {len(outputs)}")
    dynamic = not isinstance(inputs[0].shape[0], int)
    gen = torch.Generator().manual_seed(seed)
    device = module_device(module) if module is not None else None
    cosine: Dict[int, float] = {}
    diff: Dict[int, float] = {}
    for b in batch_sizes:
        x = torch.rand(b, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen) * 2 - 1
        try:
            got = sess.run(None, {inputs[0].name: x.numpy()})[0]
        except Exception as exc:  # onnxruntime raises its own exception types
            raise RuntimeError(
                f"{path}: onnxruntime failed at batch {b} (graph input shape {inputs[0].shape}): {exc}"
            ) from exc
        dynamic = dynamic and got.shape[0] == b
        if not np.isfinite(got).all():
            raise FloatingPointError(f"{path}: onnxruntime returned NaN or infinite embeddings at batch {b}")
        if module is not None:
            with torch.no_grad(), eval_mode(module):
                ref = module(x.to(device)).float().cpu().numpy()
            if ref.shape != got.shape:
                raise RuntimeError(f"{path}: onnxruntime returned {got.shape}, torch {ref.shape} at batch {b}")
            ref, got = ref.astype(np.float64), got.astype(np.float64)
            num = (ref * got).sum(1)
            den = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
            cosine[b] = float((num / np.maximum(den, 1e-300)).min())
            diff[b] = float(np.abs(ref - got).max() / max(np.abs(ref).max(), 1e-300))
    return cosine, diff, dynamic


def export_onnx(
    module: nn.Module,
    path: Union[str, os.PathLike],
    *,
    opset: int = DEFAULT_OPSET,
    input_name: str = "input.1",
    output_name: str = "embedding",
    batch_sizes: Sequence[int] = (1, 8),
    min_cosine: float = 0.9999,
) -> ExportReport:
    """Export any ``[B, 3, 112, 112] -> [B, D]`` module to ONNX and verify it.

    The module is exported in eval mode (its training flag is restored after)
    with torch's dynamo exporter, a dynamic batch dimension and the given
    opset, written atomically, checked with ``onnx.checker``, then run in
    onnxruntime at every size in ``batch_sizes`` against torch.

    Args:
        module: the embedding network (e.g. an arcface_torch backbone, ours, or
            a render-augmented model whose reconstruction runs in the graph).
        path: output ``.onnx`` file.
        opset: ai.onnx opset, at least 17. 18 is the exporter's own; for another
            value torch runs the ONNX version converter, which fails on some
            graphs (then torch keeps 18 and we raise ``ValueError``).
        min_cosine: parity threshold; below it nothing is written and
            ``RuntimeError`` is raised.

    Returns:
        :class:`ExportReport`.

    Raises:
        ValueError: bad or unreachable opset, or a module that does not map
            ``[B, 3, 112, 112]`` to ``[B, D]``.
        RuntimeError: parity below ``min_cosine`` or a batch axis that is not
            dynamic.
    """
    import onnx  # optional: heavy

    path = os.fspath(path)
    if int(opset) < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET}, got {opset}")
    if not batch_sizes or min(batch_sizes) < 1:
        raise ValueError(f"batch_sizes must be positive integers, got {list(batch_sizes)}")
    with eval_mode(module):
        device = module_device(module)
        dim = _validate_model_io(module, device)
        example = torch.zeros(2, 3, IMAGE_SIZE, IMAGE_SIZE, device=device)
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            opset_version=int(opset),
            input_names=[input_name],
            output_names=[output_name],
            dynamic_shapes=({0: batch},),
            verbose=False,
        )
        with atomic_path(path) as tmp:
            program.save(tmp, external_data=False)
            proto = onnx.load(tmp)
            produced = _opset_of(proto)
            if produced != int(opset):
                raise ValueError(
                    f"torch's exporter could not convert this model to opset {opset} (it produced opset "
                    f"{produced}); export with opset {produced} instead"
                )
            renamed = _keep_normalisation_guess(proto)
            if renamed:
                onnx.save(proto, tmp)
            onnx.checker.check_model(proto)
            cosine, diff, dynamic = check_onnx(tmp, module, batch_sizes)
            worst = min(cosine.values()) if cosine else float("nan")
            if not dynamic:
                raise RuntimeError(f"{path}: the exported batch axis is not dynamic (batch sizes {list(batch_sizes)})")
            if not worst >= min_cosine:
                raise RuntimeError(
                    f"{path}: onnxruntime/torch parity too low: min cosine {worst:.6f} < {min_cosine} "
                    f"(per batch: {cosine})"
                )
    shape: List[Union[int, str]] = [
        d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim
    ]
    return ExportReport(
        path=path,
        sha256=sha256_file(path),
        opset=produced,
        input_name=proto.graph.input[0].name,
        output_name=proto.graph.output[0].name,
        input_shape=shape,
        embedding_size=dim,
        cosine=cosine,
        max_rel_diff=diff,
        dynamic_batch=dynamic,
        renamed_nodes=renamed,
    )
