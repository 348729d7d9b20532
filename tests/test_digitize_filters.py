"""The fast map filters give scipy's numbers (to the bit), and the maps' rotation its canvas."""

import numpy as np
import pytest
from scipy import ndimage

from ecgscan_cli.digitize.filters import square_max, vertical_opening


@pytest.mark.parametrize("shape", [(1, 1), (2, 7), (5, 3), (37, 61), (64, 48, 3)])
@pytest.mark.parametrize("radius", [1, 2, 4])
def test_square_max_is_scipys_maximum_filter(shape, radius):
    a = np.random.default_rng(radius).random(shape).astype(np.float32)
    size = (2 * radius + 1,) * 2 + (1,) * (len(shape) - 2)
    out = square_max(a, radius)
    assert out.dtype == a.dtype and out.shape == a.shape
    assert np.array_equal(out, ndimage.maximum_filter(a, size=size))
    assert np.array_equal(square_max(a > 0.9, radius), ndimage.maximum_filter(a > 0.9, size=size))


def test_square_max_leaves_its_input_alone_and_of_radius_0_copies_it():
    a = np.random.default_rng(0).random((20, 30)).astype(np.float32)
    before = a.copy()
    out = square_max(a, 2)
    assert np.array_equal(a, before) and out.max() == a.max() and (out >= a).all() and (out > a).any()
    assert np.array_equal(square_max(a, 0), a)


@pytest.mark.parametrize("size", [3, 4, 8, 21])
def test_vertical_opening_is_scipys_grey_opening(size):
    rng = np.random.default_rng(size)
    a = np.where(rng.random((90, 70)) > 0.8, rng.random((90, 70)), 0.0).astype(np.float32)
    a[10:40, 5] = 1.0       # a tall stroke survives, a short one does not
    a[:, 9] = 0.0
    a[50:52, 9] = 1.0
    out = vertical_opening(a, size)
    assert out.flags.c_contiguous and out.shape == a.shape
    assert np.array_equal(out, ndimage.grey_opening(a, size=(size, 1)))
    assert (out[10:40, 5] == 1.0).all() and (out[50:52, 9] == 0.0).all()


@pytest.mark.parametrize("angle", [0.7, -4.3, 12.0])
def test_rotate_map_draws_scipys_rotation_on_its_canvas(angle):
    """PIL's resampling on ``rotation_to_source``'s canvas: scipy's bilinear rotation where the
    source is inside the map, its cubic spline to a few hundredths on a smooth map, and a
    dot lands where the homography says."""
    from ecgscan_cli.digitize.geometry import rotate_map, rotation_to_source

    rng = np.random.default_rng(0)
    m = ndimage.gaussian_filter(rng.random((160, 240)).astype(np.float32), 2)
    m = (m - m.min()) / (m.max() - m.min())
    to_source, shape = rotation_to_source(angle, m.shape)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    sx, sy = (to_source[0, 0] * xx + to_source[0, 1] * yy + to_source[0, 2],
              to_source[1, 0] * xx + to_source[1, 1] * yy + to_source[1, 2])
    inside = (sx > 2) & (sy > 2) & (sx < m.shape[1] - 3) & (sy < m.shape[0] - 3)
    for order, tol in ((1, 1e-5), (3, 0.05)):
        ours = rotate_map(m, angle, order)
        theirs = np.clip(ndimage.rotate(m, angle, reshape=True, order=order, mode="constant", cval=0.0), 0, 1)
        assert ours.shape == theirs.shape == shape and ours.dtype == np.float32
        assert np.abs(ours - theirs)[inside].max() < tol
        assert ours.min() >= 0.0 and ours.max() <= 1.0 and (ours[~inside & ((sx < -2) | (sy < -2))] == 0).all()
    gy, gx = np.mgrid[:m.shape[0], :m.shape[1]]
    dot = np.exp(-((gx - 151.0) ** 2 + (gy - 71.0) ** 2) / 8.0).astype(np.float32)
    # PIL's bicubic moves a smooth stroke by up to 0.09 px with the sub-pixel phase
    for order, tol in ((1, 0.005), (3, 0.1)):
        r = rotate_map(dot, angle, order)
        src = to_source @ np.array([(r * xx).sum() / r.sum(), (r * yy).sum() / r.sum(), 1.0])
        assert abs(src[0] - 151) < tol and abs(src[1] - 71) < tol
    assert rotate_map(m, 0.0) is m
