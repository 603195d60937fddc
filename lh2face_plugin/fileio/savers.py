"""Writers of one file each, all through :func:`~.atomic.atomic_path`: text, JSON (and a locked
read-modify-write of it), ``.npy``, a copy, a figure; and :func:`derived`, the rule for outputs drawn from
results already written."""
from __future__ import annotations

import json
import os
import shutil
import sys
from typing import Any, Callable, Optional

import numpy as np

from .atomic import atomic_path
from .locks import locked_folder

__all__ = ["write_text", "write_json", "save_npy", "copy_file", "save_figure", "derived", "update_json"]


def write_text(path: str, text: str) -> None:
    """Write UTF-8 text (``\\n`` line ends) atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)


def write_json(path: str, obj: Any, *, compact: bool = False) -> None:
    """Write ``obj`` as JSON (indented, or compact), atomically."""
    text = json.dumps(obj, separators=(",", ":")) if compact else json.dumps(obj, indent=2, sort_keys=False)
    write_text(path, text + "\n")


def save_npy(path: str, array: np.ndarray) -> None:
    """``np.save`` atomically."""
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array)


def copy_file(src: str, dst: str) -> None:
    """Copy ``src`` to ``dst`` atomically (nothing to do when they are the same file)."""
    if os.path.exists(dst) and os.path.samefile(src, dst):
        return
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def save_figure(fig: Any, path: str, dpi: int = 110) -> str:
    """Save a matplotlib figure as PNG atomically and close it (pyplot figures too). Returns ``path``."""
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    finally:
        import matplotlib.pyplot as plt  # optional: heavy

        plt.close(fig)
    return path


def derived(what: str, make: Callable[[], Any], *, results: str,
            warn: Optional[Callable[[str], None]] = None) -> Any:
    """Make an output derived from measured results that are already written (a plot, a table).

    Measured results are written first, atomically; what is drawn or printed from them comes after,
    through this function: a failure there warns in one line (naming ``what`` and the ``results``
    file, which stays as written) and returns ``None`` instead of losing the run.
    """
    try:
        return make()
    except Exception as exc:  # noqa: BLE001 - any failure of a derived output leaves the results
        first = (str(exc).splitlines() or [""])[0][:160]
        line = f"warning: {what} not made ({type(exc).__name__}: {first}); the results are in {results}"
        (warn or (lambda text: print(text, file=sys.stderr)))(line)
        return None


def update_json(path: str, update: Callable[[Optional[Any]], Any]) -> Any:
    """Read-modify-write a JSON file under an exclusive lock on its folder, atomically.

    ``update`` gets the current document (``None`` when the file does not exist) and returns the
    new one; it may raise to refuse. An unreadable file raises ``ValueError`` naming it.
    """
    path = os.path.abspath(os.fspath(path))
    with locked_folder(os.path.dirname(path)):
        old = None
        if os.path.exists(path):
            try:
                with open(path, encoding="utf-8") as fh:
                    old = json.load(fh)
            except (OSError, ValueError) as exc:
                raise ValueError(f"{path}: unreadable JSON ({type(exc).__name__}: {exc}); move it away or "
                                 "choose another output folder") from None
        new = update(old)
        write_json(path, new)
    return new
