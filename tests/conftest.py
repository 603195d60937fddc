import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pytest


@pytest.fixture
def arcface_root():
    root = os.environ.get("ARCFACE_TORCH_ROOT")
    if not root:
        pytest.skip("set ARCFACE_TORCH_ROOT to an insightface recognition/arcface_torch checkout")
    return root
