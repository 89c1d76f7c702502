import math

import numpy as np
import pytest
import torch
from PIL import Image

from defocus_lit.cli import main
from defocus_lit.errors import UserError
from defocus_lit.ops.blur import disk_kernel
from defocus_lit.ops.color import linear_to_srgb, srgb_to_linear
from defocus_lit.render import RenderSettings, blur_radius_blur_map, blur_radius_thin_lens, render_defocus

H, W = 48, 96


def texture(b: int = 1, h: int = H, w: int = W, seed: int = 0) -> torch.Tensor:
    """(b,3,h,w) sRGB in [0.05, 0.95]: noise plus stripes, plenty of detail for blur to remove."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(b, 3, h, w, generator=g)
    stripes = 0.5 + 0.5 * torch.sin(torch.arange(w) * 0.9)[None, None, None, :]
    return 0.05 + 0.9 * (0.6 * noise + 0.4 * stripes)


def full(value: float, b: int = 1, h: int = H, w: int = W) -> torch.Tensor:
    return torch.full((b, 1, h, w), value)


def thin_lens(near: torch.Tensor, lo: float, hi: float, k: float = 30.0, max_radius: float = 16.0):
    band = torch.tensor([[lo, hi]] * near.shape[0])
    return blur_radius_thin_lens(near, band, k, max_radius)


def mad(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().mean())


# ----------------------------------------------------------------------------------------------- radius models


def test_thin_lens_radius_is_k_times_distance_to_band_clamped():
    near = torch.tensor([0.1, 0.4, 0.5, 0.6, 0.7, 2.0]).view(1, 1, 1, 6)
    radius = thin_lens(near, 0.4, 0.6, k=30.0, max_radius=16.0).flatten()
    assert torch.allclose(radius, torch.tensor([9.0, 0.0, 0.0, 0.0, 3.0, 16.0]), atol=1e-5)


def test_blur_map_radius_scales_plane_to_max_radius():
    plane = torch.tensor([0.0, 127.5, 255.0]).view(1, 1, 1, 3)
    assert torch.allclose(blur_radius_blur_map(plane, 16.0).flatten(), torch.tensor([0.0, 8.0, 16.0]))


def test_disk_kernel_is_normalised_symmetric_and_has_the_disk_area():
    for radius in (0.7, 3.0, 9.5):
        k = disk_kernel(radius)
        assert k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
        assert float(k.sum()) == pytest.approx(1.0, abs=1e-6)
        assert torch.equal(k, k.flip(0)) and torch.equal(k, k.T)
        # unnormalised weights are 1 in the middle, so 1 / centre weight is the covered area
        assert 1 / float(k[k.shape[0] // 2, k.shape[1] // 2]) == pytest.approx(math.pi * radius**2, rel=0.08)
    assert torch.equal(disk_kernel(0.3), torch.ones(1, 1))


def test_srgb_round_trip_and_known_value():
    x = torch.linspace(0, 1, 1001)
    assert torch.allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-5)
    assert float(srgb_to_linear(torch.tensor(0.5))) == pytest.approx(0.21404, abs=1e-4)


# ----------------------------------------------------------------------------------------------- rendering


def test_in_focus_plane_stays_sharp_next_to_a_blurred_background():
    image = texture()
    near = torch.where(torch.arange(W) < W // 2, 1.0, 0.2).expand(1, 1, H, W).clone()
    radius = thin_lens(near, 0.9, 1.1)  # near plane in focus, background 24 px -> clamped to 16
    out = render_defocus(image, radius, near)
    left = slice(None), slice(None), slice(None), slice(0, W // 2)
    assert mad(out[left], image[left]) <= 1 / 255
    right = slice(None), slice(None), slice(None), slice(W // 2 + 16, None)
    assert mad(out[right], image[right]) > 20 / 255  # the background really is blurred


def test_all_in_focus_returns_the_input():
    image = texture()
    out = render_defocus(image, full(0.0), full(0.5))
    assert mad(out, image) <= 1 / 255


def edge_spread_radius(out: torch.Tensor) -> float:
    """Blur radius from a vertical step edge: the line spread function (derivative of the linear-light
    profile) of a disk of radius r has variance r^2 / 4."""
    profile = srgb_to_linear(out)[0, 1, H // 4 : 3 * H // 4].mean(0).double()
    lsf = profile.diff()
    x = torch.arange(len(lsf), dtype=torch.float64)
    mean = (lsf * x).sum() / lsf.sum()
    var = (lsf * (x - mean) ** 2).sum() / lsf.sum()
    return 2 * math.sqrt(float(var))


@pytest.mark.parametrize("near_value", [0.2, 0.4, 0.45])
def test_edge_spread_matches_thin_lens_radius(near_value):
    image = torch.where(torch.arange(W) < W // 2, 0.1, 0.9).expand(1, 3, H, W).clone()
    near = full(near_value)
    radius = thin_lens(near, 0.5, 0.6, k=30.0, max_radius=16.0)
    expected = 30.0 * (0.5 - near_value)  # 9, 3 and 1.5 px
    assert float(radius.max()) == pytest.approx(expected, rel=1e-5)
    measured = edge_spread_radius(render_defocus(image, radius, near))
    assert measured == pytest.approx(expected, rel=0.10)


@pytest.mark.parametrize("focus", ["near", "far"])
def test_no_seam_at_an_occlusion_edge(focus):
    a = torch.tensor([0.85, 0.30, 0.20]).view(1, 3, 1, 1)
    b = torch.tensor([0.15, 0.55, 0.90]).view(1, 3, 1, 1)
    left = (torch.arange(W) < W // 2).view(1, 1, 1, W)
    image = torch.where(left, a, b).expand(1, 3, H, W).clone()
    near = torch.where(left, 1.0, 0.2).expand(1, 1, H, W).clone()
    band = (0.9, 1.1) if focus == "near" else (0.15, 0.25)
    out = render_defocus(image, thin_lens(near, *band, k=40.0, max_radius=12.0), near)
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    assert float((lo - out).max()) <= 2 / 255
    assert float((out - hi).max()) <= 2 / 255


def test_no_seams_between_layers_of_a_slanted_surface():
    """A flat-coloured floor receding in depth crosses many layers; compositing must not leave lines."""
    colour = torch.tensor([0.7, 0.4, 0.25]).view(1, 3, 1, 1)
    image = colour.expand(1, 3, H, W).clone()
    near = torch.linspace(1.0, 0.1, H).view(1, 1, H, 1).expand(1, 1, H, W).clone()
    out = render_defocus(image, thin_lens(near, 0.9, 1.0, k=30.0, max_radius=16.0), near)
    assert float((out - colour).abs().max()) <= 2 / 255


def random_scene(b: int, seed: int, h: int = 32, w: int = 48):
    g = torch.Generator().manual_seed(seed)
    image = texture(b, h, w, seed)
    coarse = torch.rand(b, 1, 4, 5, generator=g)
    near = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    near = near + 0.05 * (torch.rand(b, 1, h, w, generator=g) > 0.9)  # some depth edges
    band = torch.stack([torch.full((b,), 0.45), torch.full((b,), 0.5)], 1)
    return image, blur_radius_thin_lens(near, band, k=60.0, max_radius=18.0), near


def test_fft_matches_direct():
    image, radius, near = random_scene(2, seed=1)
    assert float(radius.max()) > 16  # exercises the reduced-resolution path of large radii
    fast = render_defocus(image, radius, near, method="fft")
    direct = render_defocus(image, radius, near, method="direct")
    assert mad(fast, direct) <= 1 / 255
    assert float((fast - direct).abs().max()) <= 8 / 255


def test_batched_equals_per_sample_and_is_deterministic():
    image, radius, near = random_scene(2, seed=2)
    batched = render_defocus(image, radius, near, layers=12)
    for i in range(2):
        single = render_defocus(image[i : i + 1], radius[i : i + 1], near[i : i + 1], layers=12)
        assert torch.allclose(batched[i : i + 1], single, atol=1e-6)
    assert torch.equal(batched, render_defocus(image, radius, near, layers=12))


def test_fewer_layers_still_render_and_differ_little():
    image, radius, near = random_scene(1, seed=3)
    many = render_defocus(image, radius, near, layers=32)
    few = render_defocus(image, radius, near, layers=4)
    assert mad(many, few) < 6 / 255


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    image, radius, near = random_scene(2, seed=4)
    cpu = render_defocus(image, radius, near)
    gpu = render_defocus(image.cuda(), radius.cuda(), near.cuda())
    assert gpu.is_cuda
    assert mad(gpu.cpu(), cpu) <= 0.1 / 255
    assert torch.equal(gpu, render_defocus(image.cuda(), radius.cuda(), near.cuda()))


def test_rejects_bad_shapes_and_method():
    image, radius, near = random_scene(1, seed=5)
    with pytest.raises(ValueError):
        render_defocus(image, radius[..., :-1], near)
    with pytest.raises(ValueError):
        render_defocus(image, radius, near, method="magic")
    with pytest.raises(ValueError, match="finite"):
        render_defocus(image, radius, near * float("nan"))


# ----------------------------------------------------------------------------------------------- numpy API


def test_settings_validate_and_serialise():
    assert RenderSettings().to_dict() == {"blur_model": "thin_lens", "k": 30.0, "max_radius": 16.0, "layers": 12}
    with pytest.raises(UserError, match="render.blur_model"):
        RenderSettings(blur_model="gauss")
    with pytest.raises(UserError, match="render.layers"):
        RenderSettings(layers=0)


# ----------------------------------------------------------------------------------------------- CLI


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(1)
    image = (rng.random((H, W, 3)) * 255).astype(np.uint8)
    depth_mm = np.where(np.arange(W) < W // 2, 1000, 4000)[None, :].repeat(H, 0).astype(np.uint16)
    paths = {"image": tmp_path / "photo.png", "depth": tmp_path / "depth.png", "out": tmp_path / "out" / "o.png"}
    Image.fromarray(image).save(paths["image"])
    Image.fromarray(depth_mm).save(paths["depth"])
    mask = np.where(np.arange(W) < W // 2, 0, 255)[None, :].repeat(H, 0).astype(np.uint8)
    paths["mask"] = tmp_path / "mask.png"
    Image.fromarray(mask).save(paths["mask"])
    return paths


def cli(files, *extra):
    return main(
        ["render", "--image", str(files["image"]), "--depth", str(files["depth"]), "--out", str(files["out"]), *extra]
    )


@pytest.mark.parametrize(
    "focus",
    [
        ["--plane", "fore"],
        ["--mask", "MASK"],
        ["--focus-depth", "1.0"],
        ["--plane", "back", "--blur-model", "blur_map"],
        ["--mask", "MASK", "--blur-model", "blur_map", "--max-radius", "6"],
    ],
)
def test_cli_writes_the_render(files, capsys, focus):
    focus = [str(files["mask"]) if f == "MASK" else f for f in focus]
    assert cli(files, *focus) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and str(files["out"]) in lines[0] and "px" in lines[0]
    out = np.asarray(Image.open(files["out"]))
    assert out.shape == (H, W, 3)


def test_cli_disparity_input(files, capsys, tmp_path):
    disparity = np.where(np.arange(W) < W // 2, 200, 40)[None, :].repeat(H, 0).astype(np.uint8)
    Image.fromarray(np.stack([disparity] * 3, -1)).save(tmp_path / "disp.jpg", quality=100)
    files["depth"] = tmp_path / "disp.jpg"
    assert cli(files, "--depth-kind", "disparity", "--plane", "fore") == 0
    assert "0.0-16.0 px" in capsys.readouterr().out
    assert cli(files, "--depth-kind", "disparity", "--focus-depth", "2") == 2
    assert "--focus-depth" in capsys.readouterr().err


def test_cli_fore_plane_keeps_the_subject_sharp_and_blurs_the_clutter_in_front(files, tmp_path):
    rng = np.random.default_rng(3)
    image = (rng.random((120, 160, 3)) * 255).astype(np.uint8)
    depth_mm = np.full((120, 160), 10000, np.uint16)
    depth_mm[30:, 55:105] = 4000  # the subject
    depth_mm[:, :25] = 700  # clutter along the left border, nearer than the subject
    Image.fromarray(image).save(files["image"])
    Image.fromarray(depth_mm).save(files["depth"])
    assert cli(files, "--plane", "fore") == 0
    diff = np.abs(np.asarray(Image.open(files["out"])).astype(int) - image)
    assert diff[40:, 65:95].mean() < 1  # the subject's inside
    assert diff[:, :20].mean() > 20 and diff[:20, 120:].mean() > 20  # clutter and background


def expect_error(files, capsys, *extra, names: list[str]):
    assert cli(files, *extra) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    for name in names:
        assert name in lines[0]
    assert not files["out"].exists()


def test_cli_missing_image(files, capsys):
    files["image"] = files["image"].with_name("nope.png")
    expect_error(files, capsys, "--plane", "fore", names=["nope.png"])


def test_cli_mask_of_another_size(files, capsys, tmp_path):
    Image.fromarray(np.zeros((H, W + 8), np.uint8)).save(tmp_path / "small.png")
    expect_error(files, capsys, "--mask", str(tmp_path / "small.png"), names=["small.png", f"{W + 8}x{H}", f"{W}x{H}"])


def test_cli_depth_of_another_size(files, capsys, tmp_path):
    Image.fromarray(np.full((H + 2, W), 1000, np.uint16)).save(tmp_path / "big.png")
    files["depth"] = tmp_path / "big.png"
    expect_error(files, capsys, "--plane", "fore", names=["big.png", f"{W}x{H + 2}", f"{W}x{H}"])


def test_cli_depth_without_valid_pixel(files, capsys, tmp_path):
    Image.fromarray(np.zeros((H, W), np.uint16)).save(tmp_path / "zeros.png")
    files["depth"] = tmp_path / "zeros.png"
    expect_error(files, capsys, "--plane", "fore", names=["zeros.png"])


def test_cli_mask_without_in_focus_pixel(files, capsys, tmp_path):
    Image.fromarray(np.full((H, W), 255, np.uint8)).save(tmp_path / "white.png")
    expect_error(files, capsys, "--mask", str(tmp_path / "white.png"), names=["white.png"])
