import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
# tests/ and each tests/<area>/ are importable, so helpers are imported by their (unique) module names
for _d in [_HERE] + sorted(os.path.join(_HERE, d) for d in os.listdir(_HERE)):
    if os.path.isdir(_d) and not os.path.basename(_d).startswith((".", "__")) and _d not in sys.path:
        sys.path.insert(0, _d)

import importlib.util

import pytest

# What arcface_torch's train_v2 imports besides torch (torchvision and mxnet have stand-ins).
TRAIN_REQUIREMENTS = ("easydict", "tensorboard", "sklearn")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def host_problem(train: bool = False):
    """Why the arcface_torch checkout of ``ARCFACE_TORCH_ROOT`` cannot be tested here, or ``None``."""
    from lh2face_plugin.arcface_torch.locate import ENV_VAR, locate_checkout

    root = os.environ.get(ENV_VAR)
    if not root:
        return f"set {ENV_VAR} to an insightface recognition/arcface_torch checkout"
    try:
        locate_checkout(environ={ENV_VAR: root})
    except FileNotFoundError as exc:
        return " ".join(line.strip() for line in str(exc).splitlines()[:2])
    if train:
        missing = [m for m in TRAIN_REQUIREMENTS if importlib.util.find_spec(m) is None]
        if missing:
            return f"arcface_torch's train_v2 imports {', '.join(missing)}: pip install 'lh2face-plugin[arcface]'"
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """A test that takes the ``arcface_root`` fixture is an ``arcface_torch`` test."""
    for item in items:
        if "arcface_root" in getattr(item, "fixturenames", ()) and item.get_closest_marker("arcface_torch") is None:
            item.add_marker(pytest.mark.arcface_torch)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """The one gate of host tests: ``@pytest.mark.arcface_torch`` (``train=True``: also train_v2's
    requirements). Without a usable checkout they skip, or fail under ``CI=true`` so that the
    host tests never go silently missing on landing."""
    marker = item.get_closest_marker("arcface_torch")
    if marker is None:
        return
    problem = host_problem(train=bool(marker.kwargs.get("train", False)))
    if problem is not None:
        if _in_ci():
            pytest.fail(f"CI=true and the arcface_torch host tests cannot run: {problem}", pytrace=False)
        pytest.skip(problem)


@pytest.fixture(scope="session")
def arcface_root():
    """The checkout of ``ARCFACE_TORCH_ROOT`` (the ``arcface_torch`` marker has checked it)."""
    return os.environ["ARCFACE_TORCH_ROOT"]
