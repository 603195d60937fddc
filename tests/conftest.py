import os

import pytest


@pytest.fixture
def arcface_root():
    root = os.environ.get("ARCFACE_TORCH_ROOT")
    if not root:
        pytest.skip("set ARCFACE_TORCH_ROOT to an insightface recognition/arcface_torch checkout")
    return root
