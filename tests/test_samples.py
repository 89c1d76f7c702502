"""The per-frame pipeline shared by `data build`, `evaluate` and `render`: radius maps, rendering, samples."""

import numpy as np
import pytest

from defocus_lit.data.planes import PAPER_PLANES, SampleFilter
from defocus_lit.data.samples import blur_radius, clean_depth, frame_maps, frame_samples, mean_radius, shrink
from defocus_lit.render import RenderSettings, render_uint8

H, W = 48, 96


def numpy_scene():
    rng = np.random.default_rng(0)
    image = (rng.random((H, W, 3)) * 255).astype(np.uint8)
    depth = np.where(np.arange(W) < W // 2, 1.0, 4.0)[None, :].repeat(H, 0).astype(np.float32)
    depth[:4, :4] = 0  # missing measurements are filled
    return image, depth


def render_one(image, depth, settings, **focus):
    near, radius = frame_maps(depth, "depth", settings, **focus)
    return render_uint8(image[None], near[None], radius[None], settings.layers)[0]


def test_thin_lens_keeps_the_masked_region_sharp():
    image, depth = numpy_scene()
    in_focus = depth == 1.0
    out = render_one(image, depth, RenderSettings(), in_focus=in_focus)
    assert out.shape == image.shape and out.dtype == np.uint8
    sharp = in_focus & (np.arange(W) < W // 2 - 1)[None, :]
    assert np.abs(out[sharp].astype(int) - image[sharp]).max() <= 1
    assert np.abs(out[:, W // 2 + 20 :].astype(int) - image[:, W // 2 + 20 :]).mean() > 10


def test_blur_map_uses_the_plane_map():
    image, depth = numpy_scene()
    plane = np.where(np.arange(W) < W // 2, 0.0, 255.0)[None, :].repeat(H, 0).astype(np.float32)
    settings = RenderSettings(blur_model="blur_map", max_radius=8.0)
    _, radius = frame_maps(depth, "depth", settings, plane_map=plane)
    assert radius.min() == 0 and radius.max() == pytest.approx(8.0)
    out = render_one(image, depth, settings, plane_map=plane)
    assert np.abs(out[:, : W // 2 - 1].astype(int) - image[:, : W // 2 - 1]).max() <= 1
    assert np.abs(out[:, W // 2 + 12 :].astype(int) - image[:, W // 2 + 12 :]).mean() > 10
    with pytest.raises(ValueError):
        frame_maps(depth, "depth", settings)


def test_a_band_in_nearness_units_gives_the_thin_lens_radius():
    _, depth = numpy_scene()
    near, radius = frame_maps(clean_depth(depth), "depth", RenderSettings(k=10.0), band=(1.0, 1.0))
    assert radius[:, : W // 2].max() == 0  # depth 1 m = nearness 1: in the band
    assert radius[10, -1] == pytest.approx(10.0 * (1.0 - 0.25))  # k * |1/4 m - 1|


def test_frame_samples_match_rendering_each_plane_alone():
    """The batched render of a frame's kept planes (what `data build` and `evaluate` store) equals rendering each
    focusing by itself, and the recorded mean radius is the radius map's mean over the blurred pixels."""
    image, depth = numpy_scene()
    depth = clean_depth(depth)
    settings = RenderSettings()
    samples, rejected = frame_samples(image, depth, "depth", PAPER_PLANES, settings, SampleFilter(max_focus=0.9))
    assert samples is not None and len(samples.plane) + len(rejected) == 3
    for i in range(len(samples.plane)):
        in_focus = samples.mask[i] == 0
        single = render_one(image, depth, settings, in_focus=in_focus)
        assert np.abs(samples.target[i].astype(int) - single).max() <= 1
    radius = blur_radius(
        frame_maps(depth, "depth", settings, in_focus=samples.mask[0] == 0)[0],
        settings,
        in_focus=samples.mask[:1] == 0,
        valid=depth > 0,
    )
    assert samples.mean_radius[0] == pytest.approx(float(mean_radius(radius, samples.mask[:1] > 0)[0]))
    assert samples.mean_radius[0] == pytest.approx(float(radius[0, 0].numpy()[samples.mask[0] > 0].mean()), rel=1e-5)


def test_a_frame_with_every_plane_filtered_has_no_samples():
    image, depth = numpy_scene()
    samples, rejected = frame_samples(
        image, clean_depth(depth), "depth", PAPER_PLANES, RenderSettings(), SampleFilter(min_focus=0.99, max_focus=1.0)
    )
    assert samples is None and len(rejected) == 3


def test_shrink_keeps_the_aspect_and_small_frames():
    image, depth = numpy_scene()
    small_image, small_depth = shrink(image, depth, 48)
    assert small_image.shape == (24, 48, 3) and small_depth.shape == (24, 48)
    assert shrink(image, depth, 200)[0] is image
