"""The manual stays true to the code: commands parse, every head and subcommand has its page, results pages are
generated from the committed result files, the docs tooling is pinned once and CI builds the site."""
from __future__ import annotations

import argparse
import configparser
import contextlib
import importlib.util
import inspect
import io
import os
import re
import shlex
from typing import Dict, Iterator, List, Tuple

import pytest

from lh2face_plugin.cli import build_parser
from lh2face_plugin.cli._common import DOCS_PAGES, DOCS_URL
from lh2face_plugin.registry import HEADS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
COMMAND_FILES = ("README.md", "docs/getting-started.md")


def _read(rel: str) -> str:
    with open(os.path.join(ROOT, rel), encoding="utf-8") as fh:
        return fh.read()


# ------------------------------------------------------------------------------------ commands in the docs

def _subparsers(parser: argparse.ArgumentParser) -> Dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _walk(parser: argparse.ArgumentParser, words: Tuple[str, ...] = ()) -> Iterator[Tuple[Tuple[str, ...],
                                                                                            argparse.ArgumentParser]]:
    yield words, parser
    for name, sub in _subparsers(parser).items():
        yield from _walk(sub, words + (name,))


SHELL_FENCES = ("bash", "sh", "shell", "console")


def _logical_lines(text: str) -> Iterator[Tuple[int, str, bool]]:
    """Lines of indented code blocks, with backslash continuations joined, and the code spans of prose lines; fenced
    blocks count only when they are shell (a plain fence shows printed output, a python fence code). The flag says
    whether the text is a whole command line (a code span in prose may name a subcommand without its arguments)."""
    lines = text.split("\n")
    fence = None
    i = 0
    while i < len(lines):
        start, line = i + 1, lines[i]
        if line.lstrip().startswith("```"):
            fence = None if fence is not None else (line.strip()[3:].strip() or "text")
            i += 1
            continue
        while line.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line.rstrip()[:-1] + " " + lines[i].strip()
        i += 1
        if fence is None:
            if line.startswith("    "):  # an indented code block
                yield start, line, True
            for span in re.findall(r"`([^`]+)`", line):
                yield start, span, False
        elif fence in SHELL_FENCES:
            yield start, line, True


def documented_commands(rel: str) -> List[Tuple[str, int, List[str], bool]]:
    """Every ``lh2face ...`` command of a Markdown file: ``(file, line, argv after 'lh2face', whole command)``."""
    found = []
    for lineno, line, whole in _logical_lines(_read(rel)):
        for part in re.split(r"&&|;|\|\|?", line):
            try:
                words = shlex.split(part, comments=True)
            except ValueError:  # an unbalanced quote in prose
                continue
            while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):  # VAR=value lh2face ...
                words = words[1:]
            if words[:1] == ["$"]:
                words = words[1:]
            if len(words) >= 2 and words[0] == "lh2face" and not words[1].startswith("<"):
                found.append((rel, lineno, words[1:], whole))
    return found


ALL_COMMANDS = [c for rel in COMMAND_FILES for c in documented_commands(rel)]


def check_command(argv: List[str], whole: bool = True) -> str:
    """'' when each word of ``lh2face ARGV`` names a subcommand and each flag is in that subcommand's --help, and
    (``whole``) the command line parses, else the reason."""
    parser = build_parser()
    words: Tuple[str, ...] = ()
    node = parser
    for w in argv:
        subs = _subparsers(node)
        if w in subs:
            node, words = subs[w], words + (w,)
        elif subs and not w.startswith("-"):
            return f"'lh2face {' '.join(words + (w,))}' is not a subcommand (choices: {', '.join(subs)})"
        else:
            break
    options = {s for action in node._actions for s in action.option_strings}  # what its --help lists
    for w in argv:
        flag = w.split("=", 1)[0]
        if flag.startswith("--") and flag not in options:  # exact: an abbreviation argparse would accept fails too
            return f"flag {flag} is not in 'lh2face {' '.join(words)} --help'"
    if not whole:
        return ""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(argv)
    except SystemExit as exc:
        if exc.code not in (0, None):
            return err.getvalue().strip().splitlines()[-1]
    return ""


def test_docs_name_lh2face_commands():
    files = {rel for rel, _, _, _ in ALL_COMMANDS}
    assert files == set(COMMAND_FILES), "each file shows lh2face commands"
    assert len(ALL_COMMANDS) >= 20


@pytest.mark.parametrize("rel,line,argv,whole", ALL_COMMANDS, ids=[f"{r}:{n}" for r, n, _, _ in ALL_COMMANDS])
def test_documented_command_parses(rel, line, argv, whole):
    """A renamed flag or subcommand leaves the README or Getting started wrong: this fails and names it."""
    problem = check_command(argv, whole)
    assert not problem, f"{rel}:{line}: lh2face {' '.join(argv)}\n  -> {problem}"


def test_check_command_notices_a_renamed_flag():
    assert check_command(["bench", "--scale", "cpu", "--control"]) == ""
    assert "--scales" in check_command(["bench", "--scales", "cpu"])
    assert "--cont " in check_command(["bench", "--cont"]) + " "  # argparse would take the abbreviation
    assert "not a subcommand" in check_command(["benchmark"])
    assert check_command(["data", "synth", "/tmp/x", "--identities", "four"])  # a bad value, from argparse


# ------------------------------------------------------------------------------------ pages of the CLI and heads

def test_every_subcommand_help_ends_with_its_docs_page():
    for words, parser in _walk(build_parser()):
        text = parser.format_help().rstrip()
        last = text.splitlines()[-1]
        assert last.startswith("documentation: " + DOCS_URL), (words, last)
        page = last[len("documentation: " + DOCS_URL):]
        md = os.path.join(DOCS, (page.rstrip("/") or "index") + ".md")
        if not os.path.exists(md):
            md = os.path.join(DOCS, page, "index.md")
        assert os.path.exists(md), f"lh2face {' '.join(words)}: {page!r} has no page under docs/"


def test_docs_pages_cover_every_subcommand():
    assert set(_subparsers(build_parser())) | {""} == set(DOCS_PAGES)
    assert DOCS_URL.endswith("/") and DOCS_URL.count("https://") == 1


def test_every_registered_head_has_a_page():
    nav = _read("mkdocs.yml")
    for name in HEADS.names():
        page = os.path.join(DOCS, "heads", f"{name}.md")
        assert os.path.exists(page), f"head {name!r} is registered but docs/heads/{name}.md is missing"
        assert f"heads/{name}.md" in nav, f"docs/heads/{name}.md is not in mkdocs.yml's nav"
        text = _read(f"docs/heads/{name}.md")
        for section in ("## Logits", "## Hyperparameters", "## Paper", "## Where it runs", "## Tests"):
            assert section in text, (name, section)
        for p in inspect.signature(HEADS.get(name)).parameters.values():
            row = f"| `{p.name}` | `{p.default!r}` |"
            assert row in text, f"docs/heads/{name}.md: no row {row!r} (parameter or default changed?)"
        index = _read("docs/heads/index.md")
        assert f"[`{name}`]({name}.md)" in index, f"docs/heads/index.md does not link {name}"


def test_every_page_is_in_the_nav():
    nav = _read("mkdocs.yml")
    for dirpath, _, names in os.walk(DOCS):
        for n in names:
            if n.endswith(".md"):
                rel = os.path.relpath(os.path.join(dirpath, n), DOCS).replace(os.sep, "/")
                assert rel in nav, f"docs/{rel} is not in mkdocs.yml's nav"


# ------------------------------------------------------------------------------------ generated results

def _gen_results():
    spec = importlib.util.spec_from_file_location("gen_results", os.path.join(DOCS, "gen_results.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_results_pages_are_generated_from_the_committed_files():
    gen = _gen_results()
    assert gen.folders(), "docs/results/ holds at least one result folder"
    bad = gen.differing()
    assert not bad, f"regenerate with 'python docs/gen_results.py': {bad} differ from the committed result files"


def test_results_pages_name_their_source(tmp_path):
    gen = _gen_results()
    for folder in gen.folders():
        name = os.path.basename(folder)
        page = _read(f"docs/results/{name}.md")
        for what in ("command", "date (UTC)", "machine", "lh2face-plugin", "commit"):
            assert f"| {what} |" in page, (name, what)


def test_step_benchmark_json_renders(tmp_path):
    """The format benchmarks/step.py --json writes (its write_json call) becomes a page with one table per section."""
    import json

    gen = _gen_results()
    folder = tmp_path / "step-cpu"
    folder.mkdir()
    doc = dict(benchmark="step", device="cpu", dtype="fp32", rows=512, dim=512, sample_rate=1.0, records=[
        dict(section="layer C=20000", variant="arcface_torch PartialFC_V2 + CombinedMarginLoss", ms=100.0,
             time_ratio=1.0, peak_mib=80.0, mem_ratio=1.0, mem_ratio_excl_grad=1.0),
        dict(section="layer C=20000", variant="plugin lh2face", ms=95.0, time_ratio=0.95, peak_mib=104.0,
             mem_ratio=1.3, mem_ratio_excl_grad=1.5, time_vs_arcface=1.1, goal=1.15),
        dict(section="layer C=20000", variant="plugin uss", failed="out of memory"),
    ])
    (folder / "step.json").write_text(json.dumps(doc))
    (folder / "source.json").write_text(json.dumps(dict(command="python benchmarks/step.py --json step.json",
                                                        date="2026-12-07", machine="test", version="0.1.0")))
    pages = gen.generate(str(tmp_path))
    page = pages["step-cpu.md"]
    assert "### layer C=20000" in page
    assert "| plugin lh2face | 95.0 | 0.95 | 104 | 1.30 | 1.50 | 1.10 | ≤ 1.15 |" in page
    assert "failed: out of memory" in page
    assert "[benchmarks/step.py: step-cpu](step-cpu.md)" in pages["index.md"]
    (folder / "step.json").write_text(json.dumps(dict(benchmark="other")))
    with pytest.raises(ValueError, match="known formats"):
        gen.generate(str(tmp_path))


# ------------------------------------------------------------------------------------ tooling and CI

def _tox() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(os.path.join(ROOT, "tox.ini"))
    return cfg


def test_docs_tooling_is_pinned_once():
    """tox's docs env installs exactly the docs extra of setup.cfg (it skips the package: the site needs no torch)."""
    setup = configparser.ConfigParser(interpolation=None)
    setup.read(os.path.join(ROOT, "setup.cfg"))
    extra = sorted(ln.strip() for ln in setup["options.extras_require"]["docs"].splitlines() if ln.strip())
    assert extra and all("==" in ln for ln in extra), extra
    env = _tox()["testenv:docs"]
    deps = sorted(ln.strip() for ln in env["deps"].splitlines() if ln.strip())
    assert deps == extra
    assert "mkdocs build --strict" in env["commands"]


def test_ci_builds_the_docs():
    ci = [ln.strip() for ln in _read(".ci/run").splitlines() if ln.strip() and not ln.strip().startswith("#")]
    envs = re.search(r"tox -e (\S+)", ci[-1]).group(1).split(",")
    assert "docs" in envs and "docs" in _tox()["tox"]["envlist"]


def test_readme_is_a_front_page():
    readme = _read("README.md")
    assert len(readme.splitlines()) <= 210
    for needed in ('config.loss = "lh2face"', "PartialFC_V2", "partial_fc_class", DOCS_URL, "## Loss heads"):
        assert needed in readme, needed
    for name in HEADS.names():
        assert f"`{name}`" in readme, f"the README's table of heads lacks {name}"
