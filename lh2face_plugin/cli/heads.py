"""``lh2face heads``: list the registered heads and their parameters."""
from __future__ import annotations

import inspect

from ..registry import HEADS, describe_parameters
from ._common import add_command


def run(args) -> int:
    names = [args.name] if args.name else HEADS.names()
    for name in names:
        factory = HEADS.get(name)
        doc = (inspect.getdoc(factory) or "").splitlines()
        origin = getattr(factory, "__module__", "?")
        print(f"{name:<12} {doc[0] if doc else ''}")
        print(f"{'':<12} parameters: {describe_parameters(factory)}")
        print(f"{'':<12} from: {origin}")
    return 0


def register(subparsers) -> None:
    p = add_command(subparsers, "heads", "list the registered loss heads and their parameters", """
  lh2face heads              # every head, built-in and from third-party entry points
  lh2face heads lh2face      # one head
""", run)
    p.add_argument("name", nargs="?", help="show only this head")
