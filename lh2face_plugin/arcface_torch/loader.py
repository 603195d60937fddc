"""The one error path of arcface_torch's data loader under the plugin: a bad record ends the run, named.

arcface_torch's ``DataLoaderX`` iterates its ``DataLoader`` in a prefetch thread
(``BackgroundGenerator``); an exception there (a worker's, or the dataset's own with
``num_workers = 0``) ends that thread and leaves the training loop waiting on its queue
forever. :func:`guard_loader` changes one loader, and nothing else, so that:

- an item that fails raises :class:`RecordError` naming its record (``.rec`` path, key and
  byte offset; an image folder's file), from the loader's workers as from the thread;
- a label stored as NaN, an infinity or a fraction, or outside the header record's identities, is
  refused as the record is read (:func:`lh2face_plugin.labels.record_label`, shared with
  :class:`~lh2face_plugin.data.dataset.FaceRecordDataset`), instead of failing later or training
  2.5 as class 2; the header record's count is bounded by the index before the host allocates by
  it (:func:`lh2face_plugin.data.recordio.check_header`, in the reader);
- the exception reaches the training loop: the prefetch thread ends its queue as at the end
  of an epoch, and the loader raises the exception instead of stopping.

The process then exits with the error, and torchrun stops the other ranks. The rebound
``get_dataloader`` (:mod:`.activate`) applies it to every loader the trainer builds.
"""
from __future__ import annotations

import os
from typing import Any, Optional

from torch.utils.data import DataLoader, Dataset

from ..data.recordio import unpack
from ..labels import record_label

__all__ = ["RecordError", "guard_loader", "describe_item"]


class RecordError(ValueError):
    """A training item the host's loader could not use; the message names its record, in one line.

    A ``DataLoader`` worker's exception reaches the main process rebuilt from the worker's
    traceback; the one line it ended with is kept.
    """

    def __init__(self, message: str):
        lines = str(message).rstrip().splitlines()
        tag = f"{__name__}.{type(self).__qualname__}: "
        if len(lines) > 1 and lines[-1].startswith(tag):
            message = lines[-1][len(tag):]
        super().__init__(message)


def describe_item(dataset: Any, index: int) -> str:
    """Where item ``index`` of one of arcface_torch's datasets comes from, for messages."""
    records, keys = getattr(dataset, "imgrec", None), getattr(dataset, "imgidx", None)
    if records is not None and keys is not None:
        key = int(keys[index])
        offset = getattr(records, "idx", {}).get(key)
        rec = os.path.join(getattr(dataset, "root_dir", ""), "train.rec")
        at = f" at byte {offset}" if offset is not None else ""
        return f"{rec}: record {key}{at} (item {index} of {len(keys)})"
    samples = getattr(dataset, "samples", None)
    if samples is not None:
        return f"{samples[index][0]} (item {index} of {len(samples)})"
    return f"item {index} of {type(dataset).__name__}"


class _CheckedRecords:
    """An indexed RecordIO reader whose ``read_idx`` refuses a record whose label is not a whole number."""

    def __init__(self, records: Any, num_classes: Optional[int] = None):
        self.records = records
        self.num_classes = num_classes

    def read_idx(self, key: Any) -> bytes:
        payload = self.records.read_idx(key)  # key 0: recordio.check_header bounds the header's count
        if key != 0 or self.num_classes is None:  # key 0 of a file with a header record is that header
            record_label(unpack(payload)[0].label, f"record {key}", self.num_classes)
        return payload

    def __getattr__(self, name: str) -> Any:
        if name == "records" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.records, name)


class _NamedItems(Dataset):
    """Placed before a dataset's own class: an item that fails raises :class:`RecordError` naming it."""

    _host: type

    def __getitem__(self, index):
        try:
            return super().__getitem__(index)
        except Exception as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise RecordError(f"{describe_item(self, index)}: {reason}") from exc

    def __reduce__(self):
        return _named_copy, (self._host, getattr(self, "__getstate__", lambda: self.__dict__)())


def _named_copy(host: type, state: Optional[dict]) -> Any:
    """Unpickles a guarded dataset (DataLoader workers started by spawn or forkserver)."""
    dataset = host.__new__(host)
    if hasattr(dataset, "__setstate__"):
        dataset.__setstate__(state)
    elif state:
        dataset.__dict__.update(state)
    return _name_items(dataset)


def _name_items(dataset: Any) -> Any:
    if isinstance(dataset, _NamedItems) or not isinstance(dataset, Dataset):
        return dataset
    host = type(dataset)
    dataset.__class__ = type(host.__name__, (_NamedItems, host), {"_host": host, "__module__": host.__module__})
    return dataset


class _PrefetchErrors(DataLoader):
    """Sits between a ``DataLoader`` subclass and ``DataLoader`` in a guarded loader's class: the
    batches the subclass hands to its prefetch thread end at the first exception, kept for the loader."""

    def __iter__(self):
        self._lh2face_failure, self._lh2face_stop = None, False
        return self._until_failure(super().__iter__())

    def _until_failure(self, batches):
        try:
            for batch in batches:
                yield batch
                if self._lh2face_stop:
                    return
        except Exception as exc:
            self._lh2face_failure = exc


class _RaisesPrefetchErrors(DataLoader):
    """Placed before the subclass: the end of its batches raises the exception that ended them."""

    def __next__(self):
        try:
            return super().__next__()
        except StopIteration:
            failure, self._lh2face_failure = getattr(self, "_lh2face_failure", None), None
            if failure is None:
                raise
        raise failure

    def end_epoch(self) -> None:
        """End an epoch left early (``config.steps_per_epoch``): the prefetch thread stops after the
        batch it is handing over, and the epoch's workers with it, instead of waiting forever."""
        self._lh2face_stop = True
        try:
            while True:
                self.__next__()
        except StopIteration:
            pass


def guard_loader(loader: Any) -> Any:
    """Give ``loader`` (as arcface_torch's ``get_dataloader`` returned it) the module's error path.

    Its dataset's items name their record when they fail and refuse labels that are not whole
    numbers; a ``DataLoader`` subclass that is its own iterator (``DataLoaderX``, whose
    ``__next__`` reads the prefetch thread's queue) raises the thread's exception in the
    training loop, and gains ``end_epoch()`` to stop that thread when an epoch is left early.
    Other loaders (DALI) are returned as they are.

    Returns:
        ``loader``, changed in place (idempotent).
    """
    if not isinstance(loader, DataLoader):
        return loader
    dataset = loader.dataset
    if hasattr(dataset, "imgrec") and not isinstance(dataset.imgrec, _CheckedRecords):
        header0 = getattr(dataset, "header0", None)
        classes = header0[1] - header0[0] if isinstance(header0, tuple) and len(header0) == 2 else None
        dataset.imgrec = _CheckedRecords(dataset.imgrec, classes)
    _name_items(dataset)
    host = type(loader)
    if hasattr(host, "__next__") and not isinstance(loader, _PrefetchErrors):
        loader.__class__ = type(host.__name__, (_RaisesPrefetchErrors, host, _PrefetchErrors),
                                {"__module__": host.__module__})
    return loader
