"""Shared helpers for subcommand modules."""
from __future__ import annotations

import argparse
import shlex
import sys
from typing import Optional

DOCS_URL = "https://lh2face-plugin.readthedocs.io/en/latest/"
"""Base address of the documentation site (built from ``docs/`` by ``mkdocs``); the one place it is named."""

DOCS_PAGES = {
    "": "",
    "bench": "bench/",
    "data": "data/",
    "doctor": "training/",
    "eval": "evaluation/",
    "export": "export/",
    "heads": "heads/",
    "quickstart": "getting-started/",
    "render": "render/",
    "train": "training/",
}
"""Subcommand (first word after ``lh2face``) -> its page under :data:`DOCS_URL` (``docs/<page>.md``)."""


def docs_url(prog: str) -> str:
    """The documentation page of the subcommand whose ``prog`` is e.g. ``"lh2face data build"``."""
    words = prog.split()[1:]
    key = words[0] if words else ""
    if key not in DOCS_PAGES:
        raise KeyError(f"lh2face {key}: no documentation page in lh2face_plugin.cli._common.DOCS_PAGES")
    return DOCS_URL + DOCS_PAGES[key]


def command_line(subcommand: str) -> Optional[str]:
    """The command as typed (``lh2face bench --out ...``) when this process runs ``subcommand`` from the
    command line, else ``None`` (called through :func:`lh2face_plugin.cli.main` with other arguments)."""
    if sys.argv[1:2] != [subcommand]:
        return None
    return "lh2face " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def add_command(subparsers, name: str, help: str, examples: str, func) -> argparse.ArgumentParser:
    """Add a subcommand whose ``--help`` ends with an Examples section and a link to its documentation page."""
    p = subparsers.add_parser(
        name,
        help=help,
        description=help,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.epilog = "examples:\n" + examples.strip("\n") + "\n\ndocumentation: " + docs_url(p.prog)
    p.set_defaults(func=func, _prog=p.prog)
    return p


def input_module_model(model: str, network: Optional[str], arcface_root: Optional[str]):
    """The model saved at ``model`` when it was trained behind an input module (its ``model.pt`` is the
    wrapped model), rebuilt from the ``train.json`` beside it (``lh2face bench`` ``@render`` specs) or from
    the ``lh2face_input_module.json`` that an arcface_torch run with ``config.input_module`` wrote beside
    it, its parameters checked finite; ``None`` for other models (an ``.onnx`` file, a plain backbone).

    Raises:
        ValueError: ``network`` given and not the one the run trained.
    """
    if model.lower().endswith(".onnx"):
        return None
    from ..arcface_torch.input_record import load_model, read_record  # lazy: start-up
    from ..finite import require_finite_parameters  # lazy: start-up
    from ..training import load_trained_model, trained_info  # lazy: start-up

    info = trained_info(model)
    record = read_record(model) if info is None else None
    if record is not None:
        if network and network != record["network"]:
            raise ValueError(f"{model} was trained with config.network = {record['network']!r} behind the "
                             f"{record['name']!r} input module, not --network {network}")
        net = load_model(model, record, arcface_root=arcface_root)
    elif info is not None and info.get("input_module"):
        if network and network != info.get("network"):
            raise ValueError(f"{model} was trained with --network {info.get('network')} behind the "
                             f"{info['input_module']['name']!r} input module, not {network}")
        net = load_trained_model(model)
    else:
        return None
    require_finite_parameters(net, model)
    return net
