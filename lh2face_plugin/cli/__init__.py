"""``lh2face``: one command, one subcommand per module of this package.

Every module in ``lh2face_plugin/cli/`` that defines ``register(subparsers)``
adds its subcommand; the handler is stored as ``func`` on the parsed args.
A user error ends the command with one line on stderr (see :func:`describe_error`).
"""
from __future__ import annotations

import argparse
import errno
import importlib
import os
import pkgutil
import sys
from typing import List, Optional, Tuple

from .. import __version__
from ._common import DOCS_URL

EXTRAS = {
    "onnx": "zoo", "onnxruntime": "eval", "onnxscript": "zoo", "insightface": "zoo", "cv2": "eval",
    "easydict": "arcface", "torchvision": "arcface", "tensorboard": "arcface", "sklearn": "reference",
    "pandas": "reference", "prettytable": "reference", "skimage": "reference", "matplotlib": None,
}
"""Top-level module -> the extra of lh2face-plugin that installs it."""

_OS_HINTS = {
    errno.EROFS: "the file system is read-only: choose a writable location (e.g. another --out)",
    errno.EACCES: "check its permissions, or choose another location (e.g. another --out)",
    errno.EPERM: "check its permissions, or choose another location (e.g. another --out)",
    errno.ENOSPC: "the disk is full: free some space or choose another --out",
    errno.EFBIG: "the file is larger than this file system or the process's file-size limit (ulimit -f) "
                 "allows: choose another --out or raise the limit",
    errno.EDQUOT: "the disk quota is exhausted: free some space or choose another --out",
    errno.ENOENT: "check the path",
    errno.EEXIST: "a file of that name is in the way (a folder was expected there): choose another path",
    errno.EISDIR: "a folder is in the way: give a file path",
    errno.ENOTDIR: "part of the path is a file, not a folder",
    errno.ENAMETOOLONG: "use a shorter path",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n) or lower --workers",
}


def debug_enabled() -> bool:
    """``LH2FACE_DEBUG`` is set to something other than empty, 0, false, no or off."""
    return os.environ.get("LH2FACE_DEBUG", "").strip().lower() not in ("", "0", "false", "no", "off")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _os_error(exc: OSError) -> str:
    names = [n for n in (exc.filename, getattr(exc, "filename2", None)) if n is not None]
    what = " -> ".join(os.fsdecode(n) if isinstance(n, bytes) else str(n) for n in names)
    reason = (exc.strerror or _one_line(exc) or type(exc).__name__).rstrip(".")
    hint = _OS_HINTS.get(exc.errno)
    if not names:
        return _one_line(exc) + (f"; {hint}" if hint and hint not in str(exc) else "")
    return f"{what}: {reason[:1].lower() + reason[1:]}" + (f"; {hint}" if hint else "")


def describe_error(exc: BaseException) -> Optional[Tuple[str, int]]:
    """``(one-line message, exit status)`` for an error a user can act on; ``None`` for a bug.

    User errors: bad values and files (ValueError, KeyError, TypeError, LookupError), operating
    system errors (read-only folder, disk full, permissions), non-finite numbers, missing optional
    packages (with the extra that installs them), a CUDA device on a CPU build, OpenCV and
    onnxruntime failures, and Ctrl-C.
    """
    module = type(exc).__module__ or ""
    if isinstance(exc, KeyboardInterrupt):
        return ("interrupted; nothing half-written was kept: run the same command again to finish (what was "
                "complete is reused)", 130)
    if isinstance(exc, ImportError):
        name = (exc.name or "").split(".")[0]
        extra = EXTRAS.get(name)
        how = f"pip install 'lh2face-plugin[{extra}]'" if extra else f"pip install {name or 'the missing package'}"
        return f"the optional package {name or '?'!r} is needed here but cannot be imported ({_one_line(exc)}); " \
               f"install it: {how}", 2
    if isinstance(exc, AssertionError):
        text = _one_line(exc) or "an internal check failed"
        if "cuda" in text.lower():
            text += "; this torch cannot use a GPU: use --device cpu, or install a CUDA build of torch"
        return text, 2
    if isinstance(exc, KeyError):
        return _one_line(exc.args[0] if exc.args else exc), 2
    if isinstance(exc, (FileNotFoundError, FileExistsError)) and not exc.filename:
        return _one_line(exc), 2
    if isinstance(exc, OSError):
        return _os_error(exc), 2
    if isinstance(exc, FloatingPointError):
        return _one_line(exc), 2
    if isinstance(exc, MemoryError):
        return f"out of memory{': ' + _one_line(exc) if str(exc) else ''}; lower --batch-size or use a machine " \
               "with more memory", 2
    if isinstance(exc, (ValueError, TypeError, LookupError, RuntimeError)):
        return _one_line(exc), 2
    if module.startswith("cv2"):
        text = _one_line(exc)
        return "OpenCV failed: " + (text.split(" error: ", 1)[-1] if " error: " in text else text), 2
    if module.startswith("onnxruntime"):
        return f"onnxruntime failed ({type(exc).__name__}): {_one_line(exc)}", 2
    if module.startswith(("onnx", "google.protobuf")):
        return f"{module.split('.')[0]} failed ({type(exc).__name__}): {_one_line(exc)}", 2
    return None


def _print_error(prog: str, message: str) -> None:
    line = f"{prog}: error: {message}\n"
    enc = getattr(sys.stderr, "encoding", None) or "utf-8"
    sys.stderr.write(line.encode(enc, "backslashreplace").decode(enc))
    sys.stderr.flush()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lh2face",
        description="LH2Face and friends for insightface's arcface_torch.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'lh2face SUBCOMMAND --help' for examples. Errors print one line; LH2FACE_DEBUG=1 shows the "
               "traceback.\n\ndocumentation: " + DOCS_URL,
    )
    parser.add_argument("--version", action="version", version=f"lh2face-plugin {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(mod, "register"):
            mod.register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    prog = getattr(args, "_prog", None) or f"lh2face {args.command}"
    if debug_enabled():
        return int(args.func(args) or 0)
    try:
        rc = args.func(args)
    except (Exception, KeyboardInterrupt) as exc:
        described = describe_error(exc)
        if described is None:
            raise
        message, code = described
        _print_error(prog, message)
        return code
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
