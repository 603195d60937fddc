"""``lh2face doctor``: checkout, revision, stack and what a recipe resolves to."""
from __future__ import annotations

import argparse

from ._common import add_command

EXAMPLES = """
  lh2face doctor
  lh2face doctor --arcface-root ~/insightface/recognition/arcface_torch --recipe recipes/ms1mv3_r50_lh2face.py
"""


def run(args: argparse.Namespace) -> int:
    from ..arcface_torch.doctor import diagnose, format_report  # lazy: start-up

    findings = diagnose(args.recipe, args.arcface_root, args.strict)
    print(format_report(findings))
    return 1 if any(f.status == "fail" for f in findings) else 0


def register(subparsers) -> None:
    p = add_command(subparsers, "doctor", "report what the plugin finds (checkout, stack, recipe) and what to fix",
                    EXAMPLES, run)
    p.add_argument("--arcface-root", help="arcface_torch folder (default: $ARCFACE_TORCH_ROOT, then the cwd)")
    p.add_argument("--recipe", help="also show what this recipe resolves to")
    p.add_argument("--strict", action="store_true", help="count an unknown checkout revision as a failure")
