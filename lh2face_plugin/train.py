"""Entry point for ``torchrun [...] -m lh2face_plugin.train RECIPE`` (same options as ``lh2face train``)."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from .cli.train import add_arguments, run


def main(argv: Optional[List[str]] = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(
        prog="python -m lh2face_plugin.train",
        description="Train a recipe with arcface_torch's train_v2 and lh2face_plugin active."))
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ValueError, KeyError, TypeError, FileNotFoundError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"lh2face_plugin.train: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
