"""The decoder gate's pixel bound at its edge, for each format it admits (lh2face_plugin/images.py).

MAX_PIXELS = 8192 x 8192 is allowed ("a size of 1 to MAX_PIXELS pixels"); one pixel more is refused. The
gate reads the size from the header, so the files are small ones whose header declares the size
(a PNG's IHDR, a real JPEG's SOF marker rewritten): nothing that large is ever decoded.
1613 x 41605 = 8192 * 8192 + 1 exactly, with both sides within a JPEG's 16-bit dimensions.
"""
from __future__ import annotations

import pytest
from test_images import jpeg_with_size, png_header_bomb

from lh2face_plugin import images
from lh2face_plugin.images import MAX_PIXELS, ImageError

HEADERS = {"PNG": png_header_bomb, "JPEG": jpeg_with_size}
AT_THE_LIMIT = [(8192, 8192), (16384, 4096), (2048, 32768)]
ONE_PIXEL_MORE = [(1613, 41605), (41605, 1613)]


def test_the_sizes_are_where_the_bound_is():
    assert MAX_PIXELS == 8192 * 8192
    assert all(w * h == MAX_PIXELS for w, h in AT_THE_LIMIT)
    assert all(w * h == MAX_PIXELS + 1 and max(w, h) < 1 << 16 for w, h in ONE_PIXEL_MORE)


@pytest.mark.parametrize("fmt", sorted(HEADERS))
@pytest.mark.parametrize("size", AT_THE_LIMIT, ids=lambda s: f"{s[0]}x{s[1]}")
def test_exactly_max_pixels_is_admitted(fmt, size):
    data = HEADERS[fmt](*size)
    assert images.sniff(data) == (fmt, size)
    assert images.admit(data, where="edge") == (fmt, size)


@pytest.mark.parametrize("fmt", sorted(HEADERS))
@pytest.mark.parametrize("size", ONE_PIXEL_MORE + [(8193, 8192), (8192, 8193)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("backend", ["cv2", "pillow"])
def test_one_pixel_more_is_refused_before_decoding(fmt, size, backend):
    data = HEADERS[fmt](*size)
    w, h = size
    with pytest.raises(ImageError, match=rf"^edge: the {fmt} header declares {w}x{h} pixels, .* more than the 67-"):
        images.admit(data, where="edge")
    with pytest.raises(ImageError, match=rf"^edge: the {fmt} header declares {w}x{h} pixels"):
        images.decode(data, where="edge", backend=backend)


@pytest.mark.parametrize("fmt", sorted(HEADERS))
def test_the_lower_bound_is_one_pixel(fmt):
    assert images.admit(HEADERS[fmt](1, 1)) == (fmt, (1, 1))
    for w, h in ((0, 1), (1, 0)):
        with pytest.raises(ImageError, match=rf"the {fmt} header declares {w}x{h} pixels; the file is damaged"):
            images.admit(HEADERS[fmt](w, h))
