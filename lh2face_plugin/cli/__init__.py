"""``lh2face``: one command, one subcommand per module of this package.

Every module in ``lh2face_plugin/cli/`` that defines ``register(subparsers)``
adds its subcommand; the handler is stored as ``func`` on the parsed args.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from typing import List, Optional

from .. import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lh2face",
        description="LH2Face and friends for insightface's arcface_torch.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'lh2face SUBCOMMAND --help' for examples. Errors print one line; LH2FACE_DEBUG=1 shows the traceback.",
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
    if os.environ.get("LH2FACE_DEBUG"):
        return int(args.func(args) or 0)
    try:
        rc = args.func(args)
    except (ValueError, KeyError, FileNotFoundError, TypeError, RuntimeError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"lh2face {args.command}: error: {msg}", file=sys.stderr)
        print("(set LH2FACE_DEBUG=1 for the full traceback)", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
