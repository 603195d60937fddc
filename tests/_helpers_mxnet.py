"""The real mxnet for the cross-checks: skipped where it is not installed, except under
``LH2FACE_REQUIRE_MXNET=1`` (tox -e mxnet sets it), where a missing or broken mxnet fails
the test instead of turning the real-mxnet evidence into skips."""
from __future__ import annotations

import os

import pytest


def real_mxnet():
    """The ``mxnet`` module, or a skip (a failure under ``LH2FACE_REQUIRE_MXNET=1``)."""
    if os.environ.get("LH2FACE_REQUIRE_MXNET") == "1":
        try:
            import mxnet
        except Exception as exc:  # noqa: BLE001  (a broken install raises anything)
            pytest.fail(f"LH2FACE_REQUIRE_MXNET=1 and mxnet does not import: {type(exc).__name__}: {exc}",
                        pytrace=False)
        return mxnet
    return pytest.importorskip("mxnet")
