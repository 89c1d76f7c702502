"""Focal planes, masks and filters (paper section 3.1) on hand-made depth maps."""

from __future__ import annotations

import numpy as np
import pytest

from defocus_lit.data.planes import (
    PAPER_PLANES,
    PLANES,
    REJECT_REASONS,
    SampleFilter,
    binary_mask,
    depth_grey,
    depth_weight,
    fill_invalid,
    focal_plane,
    focus_band,
    foreground_subject,
    nearness,
    patch_mask,
    random_focus_plane,
    valid_depth,
)
from defocus_lit.errors import UserError


def ramp(lo: float = 1.0, hi: float = 5.0, n: int = 101) -> np.ndarray:
    """(1,n) depth growing left to right."""
    return np.linspace(lo, hi, n, dtype=np.float32)[None, :]


def test_valid_depth():
    depth = np.array([[1.0, 0.0, np.nan], [np.inf, -2.0, 0.5]], np.float32)
    np.testing.assert_array_equal(valid_depth(depth), [[True, False, False], [False, False, True]])


def test_fill_invalid_takes_the_nearest_valid_value():
    depth = np.array([[1.0, 0.0, 0.0, 0.0, 4.0], [1.0, 0.0, np.nan, 0.0, 4.0]], np.float32)
    filled = fill_invalid(depth)
    assert filled.dtype == np.float32
    np.testing.assert_array_equal(filled, [[1, 1, 1, 4, 4], [1, 1, 1, 4, 4]])  # the middle tie goes to one side
    complete = np.full((2, 2), 3.0, np.float32)
    out = fill_invalid(complete)
    np.testing.assert_array_equal(out, complete)
    assert out is not complete
    with pytest.raises(UserError, match="depth"):
        fill_invalid(np.zeros((3, 3), np.float32))


def test_nearness_depth_is_inverse_metres():
    depth = np.array([[2.0, 0.0, 4.0]], np.float32)
    np.testing.assert_allclose(nearness(depth, "depth"), [[0.5, 0.5, 0.25]])


def test_nearness_disparity_is_normalised_by_percentiles():
    disparity = ramp(1.0, 101.0)  # larger = nearer; 0 would mean no measurement
    near = nearness(disparity, "disparity")
    assert near.dtype == np.float32 and near.min() == 0.0 and near.max() == 1.0
    assert near[0, 0] == 0.0 and near[0, 1] == 0.0  # at or below the 1st percentile (2.0)
    np.testing.assert_allclose(near[0, 50], 0.5, atol=1e-6)
    assert np.all(np.diff(near[0]) >= 0)
    with pytest.raises(UserError, match="kind.*normals"):
        nearness(disparity, "normals")


def test_depth_grey_follows_the_paper():
    depth = ramp()  # 1..5 m in 0.04 m steps; percentiles 1.04 and 4.96
    grey = depth_grey(depth, "depth")
    assert grey.dtype == np.float32
    expected = np.clip(255 * (depth - 1.04) / (4.96 - 1.04), 0, 255)
    np.testing.assert_allclose(grey, expected, atol=1e-3)
    assert grey[0, 0] == 0 and grey[0, -1] == 255  # near is black
    np.testing.assert_allclose(grey[0, 50], 127.5, atol=1e-3)


def test_depth_grey_ignores_invalid_pixels_for_the_range_and_fills_them():
    depth = ramp()
    depth[0, 10] = 0.0
    depth[0, 90] = 1000.0  # a valid outlier beyond the 99th percentile is clipped
    grey = depth_grey(depth, "depth")
    assert grey[0, 10] == pytest.approx(grey[0, 9], abs=3.0)  # filled from a neighbour
    assert grey[0, 90] == 255


def test_depth_grey_for_disparity_keeps_near_black():
    disparity = ramp(0.0, 100.0)
    grey = depth_grey(disparity, "disparity")
    assert grey[0, -1] == 0 and grey[0, 0] == 255  # largest disparity = nearest = black
    np.testing.assert_allclose(grey, 255 * (1 - nearness(disparity, "disparity")))


def test_focal_planes():
    grey = np.array([[0.0, 64.0, 128.0, 192.0, 255.0]], np.float32)
    assert PLANES == ("fore", "mid", "back", "random") and PAPER_PLANES == PLANES[:3]
    np.testing.assert_array_equal(focal_plane(grey, "fore"), grey)
    np.testing.assert_array_equal(focal_plane(grey, "back"), 255 - grey)
    mid = focal_plane(grey, "mid")  # median 128: the furthest grey (0) becomes 255
    np.testing.assert_allclose(mid, np.abs(grey - 128) * 255 / 128)
    assert mid[0, 2] == 0 and mid[0, 0] == 255
    custom = focal_plane(grey, "mid", mid=64.0)
    np.testing.assert_allclose(custom, np.abs(grey - 64) * 255 / 191)
    assert custom[0, 1] == 0 and custom[0, 4] == 255
    with pytest.raises(UserError, match="plane.*side"):
        focal_plane(grey, "side")


def test_binary_mask_threshold():
    plane = np.array([[0.0, 59.9, 60.0, 200.0]], np.float32)
    mask = binary_mask(plane)
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, [[0, 0, 255, 255]])
    np.testing.assert_array_equal(binary_mask(plane, threshold=100), [[0, 0, 0, 255]])


def test_patch_mask_thresholds():
    plane = np.array([[0.0, 59.0, 60.0, 149.0, 150.0, 255.0]], np.float32)
    mask = patch_mask(plane)
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, [[0, 0, 128, 128, 255, 255]])
    np.testing.assert_array_equal(patch_mask(plane, (10, 60)), [[0, 128, 255, 255, 255, 255]])
    with pytest.raises(UserError, match="thresholds"):
        patch_mask(plane, (150, 60))


def test_depth_weight():
    weight = depth_weight(np.array([[0.0, 127.5, 255.0]], np.float32))
    assert weight.dtype == np.float32
    np.testing.assert_allclose(weight, [[1.0, 0.5, 0.0]])


def test_fore_plane_mask_keeps_the_near_part_of_a_hand_made_scene():
    depth = np.full((10, 10), 8.0, np.float32)
    depth[:, :3] = 1.0  # a near object on the left
    mask = binary_mask(focal_plane(depth_grey(depth, "depth"), "fore"))
    assert np.all(mask[:, :3] == 0) and np.all(mask[:, 3:] == 255)
    back = binary_mask(focal_plane(depth_grey(depth, "depth"), "back"))
    np.testing.assert_array_equal(back, 255 - mask)


def portrait_depth() -> tuple[np.ndarray, np.ndarray]:
    """A portrait's depth (H,W) metres: background at 10 m, a subject at 4 m in the middle, and clutter at 0.7 m
    along the left border (the nearest thing, as branches in front of a person). Returns (depth, subject)."""
    depth = np.full((120, 160), 10.0, np.float32)
    subject = np.zeros(depth.shape, bool)
    subject[30:, 55:105] = True
    depth[subject] = 4.0
    depth[:, :25] = 0.7
    return depth, subject


def test_foreground_subject_is_the_central_person_not_the_nearest_clutter():
    depth, subject = portrait_depth()
    found = foreground_subject(nearness(depth, "depth"), valid_depth(depth))
    np.testing.assert_array_equal(found, subject)
    paper = binary_mask(focal_plane(depth_grey(depth, "depth"), "fore")) == 0
    assert paper[:, :25].all() and not paper[subject].any()  # the paper's plane focuses the clutter


def test_foreground_subject_of_a_scene_without_depth_gaps_is_all_of_it():
    near = np.random.default_rng(0).uniform(0.1, 1.0, (120, 160)).astype(np.float32)  # every depth equally often
    depth = 1.0 / near
    assert foreground_subject(nearness(depth, "depth"), valid_depth(depth)).all()


def test_focus_band():
    near = ramp(0.0, 1.0)
    in_focus = np.zeros_like(near, dtype=bool)
    in_focus[0, 20:41] = True  # near values 0.2..0.4
    lo, hi = focus_band(near, in_focus)
    assert isinstance(lo, float) and isinstance(hi, float)
    np.testing.assert_allclose((lo, hi), np.percentile(near[in_focus], (1, 99)))
    valid = np.ones_like(in_focus)
    valid[0, 30:] = False
    lo, hi = focus_band(near, in_focus, valid)
    assert hi < 0.3 and lo == pytest.approx(0.2, abs=0.01)
    with pytest.raises(UserError, match="in_focus"):
        focus_band(near, in_focus, np.zeros_like(in_focus))


def test_random_focus_plane():
    grey = ramp(0.0, 255.0, 256)
    g0 = np.random.default_rng(3).uniform(0.0, 255.0)
    plane = random_focus_plane(grey, np.random.default_rng(3))
    np.testing.assert_allclose(plane, np.abs(grey - g0) * 255 / max(g0, 255 - g0), rtol=1e-5)
    assert plane.min() < 1 and plane.max() == pytest.approx(255, abs=1e-3)
    other = random_focus_plane(grey, np.random.default_rng(4))
    assert np.argmin(other) != np.argmin(plane)


def mask_with_focus(fraction: float, size: int = 100) -> np.ndarray:
    mask = np.full((size, size), 255, np.uint8)
    mask.reshape(-1)[: int(round(fraction * size * size))] = 0
    return mask


@pytest.mark.parametrize(
    "focus, invalid, reason",
    [
        (0.30, 0.0, None),
        (0.0, 0.0, "no_focus"),
        (0.01, 0.0, "focus_too_small"),
        (0.70, 0.0, "mostly_in_focus"),
        (0.30, 0.6, "invalid_depth"),
    ],
)
def test_sample_filter_reasons(focus, invalid, reason):
    valid = np.ones((100, 100), bool)
    valid.reshape(-1)[: int(invalid * valid.size)] = False
    assert SampleFilter().reject_reason(mask_with_focus(focus), valid) == reason
    assert reason is None or reason in REJECT_REASONS


def test_sample_filter_settings_and_patch_masks():
    valid = np.ones((100, 100), bool)
    loose = SampleFilter(min_focus=0.005, max_focus=0.9, max_invalid=0.9)
    assert loose.reject_reason(mask_with_focus(0.01), valid) is None
    assert loose.reject_reason(mask_with_focus(0.8), valid) is None
    patch = mask_with_focus(0.3)
    patch[patch == 255] = 128  # partial blur still counts as out of focus
    assert SampleFilter().reject_reason(patch, valid) is None
    with pytest.raises(UserError, match="max_focus"):
        SampleFilter(max_focus=1.5)
    with pytest.raises(UserError, match="min_focus"):
        SampleFilter(min_focus=0.7, max_focus=0.6)


def test_focal_plane_random_needs_a_generator():
    grey = ramp(0.0, 255.0, 64)
    np.testing.assert_array_equal(
        focal_plane(grey, "random", rng=np.random.default_rng(3)), random_focus_plane(grey, np.random.default_rng(3))
    )
    with pytest.raises(ValueError, match="random generator"):
        focal_plane(grey, "random")
