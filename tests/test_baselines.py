import pytest
import torch
import torch.nn.functional as F

from defocus_lit.baselines import (
    NAMES,
    GlobalBlur,
    _layers,
    baselines,
    identity,
    level_errors,
    mask_blur,
    oracle_blur_fn,
    radius_grid,
    refine,
    uniform_blur,
)
from defocus_lit.data.build import build_dataset
from defocus_lit.data.datamodule import DefocusDataModule
from defocus_lit.data.sources import open_source
from defocus_lit.metrics import MetricSet
from defocus_lit.ops.blur import disk_kernel, disk_stack, fft_blur, spread_blur
from defocus_lit.ops.masks import keep_focus
from defocus_lit.render import RenderSettings

H, W = 24, 40


def step_batch(radii: list[float]) -> dict[str, torch.Tensor]:
    """Black left half, white right half; nothing in focus except (for checking) the top-left 4x4 corner."""
    b = len(radii)
    image = -torch.ones(b, 3, H, W)
    image[..., W // 2 :] = 1
    focus = torch.zeros(b, 1, H, W)
    focus[..., :4, :4] = 1
    return {"image": image, "focus": focus, "mean_radius": torch.tensor(radii)}


def edge_spread(out: torch.Tensor) -> int:
    """Number of pixels in the middle row of (3,H,W) [-1,1] that are neither black nor white."""
    row = out[0, H // 2]
    return int(((row > -0.99) & (row < 0.99)).sum())


def test_registry_names_the_four_and_leaves_global_blur_out_until_fitted():
    assert tuple(baselines(GlobalBlur({1.0: 2.0}), 8.0)) == NAMES
    assert tuple(baselines(None, 8.0)) == ("identity", "mask_blur", "oracle_blur")
    assert tuple(baselines(None, 8.0, names=["mask_blur"])) == ("mask_blur",)
    assert radius_grid(2.0) == [0.5, 1.0, 1.5, 2.0]


def test_identity_returns_the_photo():
    batch = step_batch([3.0])
    assert torch.equal(identity(batch), batch["image"])


def test_mask_blur_keeps_focus_pixels_exactly():
    g = torch.Generator().manual_seed(0)
    batch = {
        "image": torch.rand(2, 3, H, W, generator=g) * 2 - 1,
        "focus": (torch.rand(2, 1, H, W, generator=g) > 0.5).float(),
        "mean_radius": torch.tensor([2.0, 4.5]),
    }
    out = mask_blur(batch)
    assert out.shape == batch["image"].shape
    focus = batch["focus"].bool().expand_as(out)
    assert torch.equal(out[focus], batch["image"][focus])
    assert not torch.allclose(out[~focus], batch["image"][~focus], atol=1e-2)
    assert out.min() >= -1 and out.max() <= 1


def test_edge_spread_grows_with_radius_per_sample():
    radii = [1.0, 3.0, 6.0]
    out = mask_blur(step_batch(radii))
    spreads = [edge_spread(o) for o in out]
    assert spreads[0] < spreads[1] < spreads[2]
    for r, s in zip(radii, spreads):
        assert 2 * r - 2 <= s <= 2 * r + 1  # a disk of radius r spreads an edge over about 2r pixels
    # each sample is blurred with its own radius: the same as running it alone
    alone = mask_blur(step_batch([3.0]))
    torch.testing.assert_close(out[1:2], alone, atol=1e-5, rtol=0)


def test_radius_zero_and_nan_are_identity():
    g = torch.Generator().manual_seed(1)
    image = torch.rand(2, 3, H, W, generator=g) * 2 - 1
    batch = {"image": image, "focus": torch.zeros(2, 1, H, W), "mean_radius": torch.tensor([0.0, float("nan")])}
    torch.testing.assert_close(mask_blur(batch), image, atol=1e-5, rtol=0)


def test_spread_blur_of_one_full_layer_matches_direct_convolution_inside_and_keeps_constants():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, H, W, generator=g)
    everywhere = torch.ones(2, 1, H, W)
    for r in (2.5, 4.0):
        out = spread_blur(x, everywhere, disk_stack([r]))
        k = disk_kernel(r)
        m = k.shape[-1] // 2
        direct = F.conv2d(x, k.expand(3, 1, -1, -1), groups=3)  # valid region only
        torch.testing.assert_close(out[..., m : H - m, m : W - m], direct, atol=1e-5, rtol=0)
        # renormalised at the border: a constant image stays constant
        const = torch.full((2, 3, H, W), 0.3)
        torch.testing.assert_close(spread_blur(const, everywhere, disk_stack([r])), const, atol=1e-5, rtol=0)


def test_spread_blur_keeps_a_sharp_layer_out_of_the_blurred_one_and_spreads_a_blurred_one_over_it():
    """A white square on black: sharp square, blurred surroundings -> the surroundings stay black (no halo of the
    subject in the background; keep-focus restores the square, which the surroundings do spread over); blurred
    square, sharp surroundings -> the square's light reaches past its outline."""
    x = torch.zeros(1, 3, H, W)
    square = torch.zeros(1, 1, H, W)
    square[..., 8:16, 16:24] = 1
    x = x + square
    kernels = disk_stack([0.0, 4.0])
    sharp_square = spread_blur(x, torch.cat([square, 1 - square], 1), kernels)
    outside = (1 - square).bool().expand_as(x)
    torch.testing.assert_close(sharp_square[outside], x[outside], atol=1e-5, rtol=0)
    blurred_square = spread_blur(x, torch.cat([1 - square, square], 1), kernels)
    assert blurred_square[0, 0, 12, 26] > 0.05  # 2 px outside the square's right edge
    assert blurred_square[0, 0, 12, 28] == pytest.approx(0, abs=1e-5)  # 4 px outside: beyond the disk
    assert blurred_square[0, 0, 12, 20] == pytest.approx(1, abs=1e-5)  # normalised: its centre keeps its colour


def test_the_gather_blur_of_the_whole_photo_would_halo_where_mask_blur_does_not():
    """mask_blur blurs only the blurred layer's pixels: in-focus colour does not bleed into the blurred region."""
    image = -torch.ones(1, 3, H, W)
    focus = torch.zeros(1, 1, H, W)
    focus[..., :, : W // 2] = 1
    image[..., : W // 2] = 1  # a white in-focus half beside a black blurred one
    out = mask_blur({"image": image, "focus": focus, "mean_radius": torch.tensor([5.0])})
    torch.testing.assert_close(out[..., W // 2 :], image[..., W // 2 :], atol=1e-5, rtol=0)
    gather = fft_blur((image + 1) / 2, disk_stack([5.0]))[:, 0]
    assert gather[0, 0, H // 2, W // 2 + 1] > 0.1


def level_batch(radius: float, patch: bool = False) -> dict[str, torch.Tensor]:
    """Random photo; target = the photo blurred with `radius` out of focus (left quarter in focus); a patch batch
    has a partial level (0.5) in the second quarter whose target is the photo blurred with radius / 2. Each level's
    target is its own pixels spread alone (what the per-level choice of global_blur and oracle_blur compares; the
    same as spreading the levels together for a binary mask, whose in-focus layer does not spread)."""
    g = torch.Generator().manual_seed(1)
    image = torch.rand(2, 3, H, W, generator=g) * 2 - 1
    mask = torch.ones(2, 1, H, W)
    mask[..., : W // 4] = 0
    if patch:
        mask[..., W // 4 : W // 2] = 0.5
    batch = {
        "image": image,
        "mask": mask,
        "focus": (mask == 0).float(),
        "valid": torch.ones(2, 1, H, W),
        "mean_radius": torch.tensor([radius] * 2),
    }
    alone = [(mask == level).float() for level in (0.5, 1.0)]
    targets = [
        uniform_blur({**batch, "focus": 1 - m}, torch.cat([1 - m, m], 1), torch.full((2, 1), r))
        for m, r in zip(alone, (radius / 2, radius))
    ]
    return batch | {"target": torch.where(mask == 0.5, *targets)}


def test_global_blur_fits_the_radius_of_least_error_per_level():
    fitted = GlobalBlur.fit([level_batch(3.0), level_batch(3.0)], max_radius=8.0)
    assert fitted.radii[1.0] == 3.0
    patch = GlobalBlur.fit([level_batch(4.0, patch=True)], max_radius=8.0)
    assert patch.radii == {0.5: 2.0, 1.0: 4.0}
    batch = level_batch(4.0, patch=True)
    out = patch(batch)
    focus = batch["focus"].bool().expand_as(out)
    assert torch.equal(out[focus], batch["image"][focus])
    binary = level_batch(3.0)
    torch.testing.assert_close(fitted(binary), binary["target"], atol=2e-4, rtol=0)


def test_oracle_blur_picks_each_samples_best_radius():
    batch = level_batch(2.5)
    batch["target"][1] = level_batch(6.0)["target"][1]  # the second sample wants another radius
    out = oracle_blur_fn(8.0)(batch)
    torch.testing.assert_close(out, batch["target"], atol=2e-4, rtol=0)
    errors = level_errors(batch, radius_grid(8.0))
    assert errors.shape == (2, 2, 16) and errors[:, 0].sum() == 0  # no pixel at the partial level


@pytest.fixture(scope="module")
def val_batches(tmp_path_factory):
    """Validation batches of a tiny synthetic dataset rendered with the default thin-lens renderer."""
    path = tmp_path_factory.mktemp("yardstick") / "d.h5"
    source = open_source("synthetic", num=10, size=(64, 64), seed=3)
    build_dataset(source, path, settings=RenderSettings(layers=8), split=(0.4, 0.6, 0.0), progress=False, workers=0)
    dm = DefocusDataModule(str(path), batch_size=4, crop_size=None, pad_multiple=8, photometric=False)
    return list(dm.val_dataloader())


def test_the_coarse_to_fine_search_chooses_what_the_whole_grid_would(val_batches):
    """On rendered samples: the oracle's and global_blur's radii are the best of every 0.5-px radius, though the
    search evaluates whole pixels and then only the best one's neighbours."""
    grid = radius_grid(8.0)
    errors = [level_errors(batch, grid) for batch in val_batches]  # (B,L,G) each
    best = torch.tensor(grid)[torch.cat(errors).argmin(2)]  # (N,L)
    assert best.unique().numel() > 2 and (best * 2 % 2 == 1).any()  # varied, some half-pixel choices to find
    for batch, batch_errors in zip(val_batches, errors):
        radii = torch.tensor(grid)[batch_errors.argmin(2)]
        torch.testing.assert_close(oracle_blur_fn(8.0)(batch), uniform_blur(batch, _layers(batch), radii))
    fitted = GlobalBlur.fit(val_batches, max_radius=8.0)
    total = torch.stack([e.sum(0) for e in errors]).sum(0)  # (L,G)
    assert [fitted.radii[level] for level in (0.5, 1.0)] == [grid[int(i)] for i in total.argmin(1)]


def test_refine_finds_a_half_pixel_minimum_with_fewer_evaluations():
    target = torch.tensor([[5.0], [12.0]])  # two levels' best grid indices (3.0 px and 6.5 px on a 0.5-px grid)
    asked = []

    def errors_of(indices):
        asked.extend(indices)
        return (torch.tensor(indices, dtype=torch.float)[None] - target).abs()

    assert refine(errors_of, 32).tolist() == [5, 12]
    assert len(asked) < 32


def plane_sensitivity(method, batches) -> float:
    metrics = MetricSet()
    for batch in batches:
        metrics.update_plane(method(batch["image"], batch["mask"]), method(batch["image"], batch["alt_mask"]), batch)
    return float(metrics.compute()["plane_sensitivity"])


def test_plane_sensitivity_does_not_reward_a_fixed_blur_with_keep_focus(val_batches):
    """A "generator" that returns one disk blur everywhere, composited with keep-focus, ignores the focal plane:
    it scores ~0 (the old metric gave it 0.3-0.9). The renderer itself (its targets as outputs) scores 1."""
    assert any(bool(b["has_alt"].any()) for b in val_batches)
    for radius in (2.0, 4.0, 8.0):

        def fixed(image, mask, radius=radius):
            linear = ((image + 1) / 2) ** 2.2
            blurred = fft_blur(linear, disk_stack([radius]))[:, 0] ** (1 / 2.2) * 2 - 1
            return keep_focus(blurred, image, mask)

        assert plane_sensitivity(fixed, val_batches) < 0.05
    targets = {}
    for batch in val_batches:
        targets[id(batch["mask"])], targets[id(batch["alt_mask"])] = batch["target"], batch["alt_target"]
    assert plane_sensitivity(lambda image, mask: targets[id(mask)], val_batches) == pytest.approx(1.0)
