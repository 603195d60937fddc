import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
# tests/ and each tests/<area>/ are importable, so helpers are imported by their (unique) module names
for _d in [_HERE] + sorted(os.path.join(_HERE, d) for d in os.listdir(_HERE)):
    if os.path.isdir(_d) and not os.path.basename(_d).startswith((".", "__")) and _d not in sys.path:
        sys.path.insert(0, _d)

import pytest


@pytest.fixture
def arcface_root():
    root = os.environ.get("ARCFACE_TORCH_ROOT")
    if not root:
        pytest.skip("set ARCFACE_TORCH_ROOT to an insightface recognition/arcface_torch checkout")
    return root
