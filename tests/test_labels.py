"""whole_labels: stored label values (RecordIO's floats) become class ids only when they are whole numbers."""
import re

import numpy as np
import pytest
import torch

from lh2face_plugin.labels import whole_labels


def test_whole_values_become_int64():
    out = whole_labels(np.array([0.0, 3.0, -1.0], np.float32))
    assert out.dtype == torch.int64 and out.tolist() == [0, 3, -1]
    assert whole_labels(7.0).tolist() == [7]


@pytest.mark.parametrize("bad, shown", [(2.5, "2.5"), (float("nan"), "nan"), (float("inf"), "inf"), (1e19, "1e+19")])
def test_other_values_are_refused_with_the_row_named(bad, shown):
    expected = (rf"^label is not a whole number at record 9: {re.escape(shown)} "
                r"\(expected an integer class id; see the index\)")
    with pytest.raises(ValueError, match=expected):
        whole_labels([1.0, bad], describe_row=lambda r: f"record {8 + r}", hint="see the index")
