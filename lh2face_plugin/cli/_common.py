"""Shared helpers for subcommand modules."""
from __future__ import annotations

import argparse


def add_command(subparsers, name: str, help: str, examples: str, func) -> argparse.ArgumentParser:
    """Add a subcommand whose ``--help`` ends with an Examples section."""
    p = subparsers.add_parser(
        name,
        help=help,
        description=help,
        epilog="examples:\n" + examples.strip("\n"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=func, _prog=p.prog)
    return p
