"""The one label check: class ids in ``[0, num_classes)``, optionally ``-1`` for "not here".

An out-of-range label makes a row with no positive anywhere, which arcface_torch's
Partial FC trains on silently with a loss stuck at ``-ln(1e-30) = 69.08``; every
caller (heads, the classifier, the Partial FC) raises this error instead.

Labels as a dataset stores them (RecordIO headers hold floats) pass :func:`whole_labels`
first: a NaN or a fraction would otherwise fail or truncate (2.5 trains as class 2) in
``torch.tensor(label, dtype=torch.long)``.
"""
from __future__ import annotations

import numbers
from typing import Any, Callable, Optional

import torch

__all__ = ["check_labels", "whole_labels"]


def check_labels(labels: torch.Tensor, num_classes: int, *, allow_ignore: bool = False,
                 describe_row: Optional[Callable[[int], str]] = None, hint: str = "") -> torch.Tensor:
    """Flatten ``labels`` to int64 [N] and check their range.

    Args:
        labels: integer tensor of any shape.
        num_classes: labels must be below this.
        allow_ignore: also accept ``-1``.
        describe_row: names a row in the message (default ``"row R"``).
        hint: appended to the message.

    Returns:
        The flattened int64 labels.

    Raises:
        TypeError: float or bool labels.
        ValueError: ``label out of range at row R: V`` plus the expected range.
    """
    labels = labels.reshape(-1)
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
    labels = labels.long()
    low = -1 if allow_ignore else 0
    bad = (labels < low) | (labels >= num_classes)
    if bool(bad.any()):
        row = int(torch.nonzero(bad)[0])
        where = describe_row(row) if describe_row is not None else f"row {row}"
        expected = f"a label in [0, {num_classes})" + (" or -1" if allow_ignore else "")
        raise ValueError(
            f"label out of range at {where}: {int(labels[row])} (expected {expected}"
            f"{'; ' + hint if hint else ''}). Check num_classes against your dataset: an out-of-range label "
            "otherwise trains as a loss stuck at 69.08."
        )
    return labels


def whole_labels(values, *, describe_row: Optional[Callable[[int], str]] = None, hint: str = "") -> torch.Tensor:
    """Stored label values (any numbers, e.g. the floats of RecordIO headers) as int64 [N].

    Args:
        values: a number, sequence or tensor of label values.
        describe_row: names a row in the message (default ``"row R"``).
        hint: appended to the message.

    Raises:
        ValueError: ``label is not a whole number at R: V`` (NaN, infinite, fractional, or beyond int64).
    """
    values = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    bad = ~torch.isfinite(values) | (values != torch.round(values)) | (values.abs() >= 2.0 ** 63)
    if bool(bad.any()):
        row = int(torch.nonzero(bad)[0])
        where = describe_row(row) if describe_row is not None else f"row {row}"
        raise ValueError(f"label is not a whole number at {where}: {float(values[row])!r} (expected an integer "
                         f"class id{'; ' + hint if hint else ''}); fix or drop the record")
    return values.long()


def record_label(label: Any, where: str, num_classes: Optional[int] = None) -> int:
    """The class id of one record's header label (a number, or the first of its labels), checked:
    a whole number (:func:`whole_labels`), ``>= 0``, and ``< num_classes`` when the header record
    gives it (``K > 0``; else below 2**31). The one label check of
    :class:`~lh2face_plugin.data.dataset.FaceRecordDataset` and of the host loader's guard
    (:mod:`lh2face_plugin.arcface_torch.loader`).

    Raises:
        ValueError: one line naming ``where`` (the record).
    """
    first = label if isinstance(label, numbers.Number) else label[:1]
    value = int(whole_labels(first, describe_row=lambda _: where)[0])
    if num_classes is not None and num_classes <= 0:  # a header without identity records: no class count
        num_classes = None
    top = num_classes if num_classes is not None else 2 ** 31
    if not 0 <= value < top:
        known = f"the header record's {num_classes} identities" if num_classes is not None else "int32"
        raise ValueError(f"label {value} at {where} is outside [0, {top}) ({known}); fix or drop the record")
    return value
