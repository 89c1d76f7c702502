import pytest
import torch
import torch.nn.functional as F

from defocus_lit.baselines import (
    NAMES,
    GlobalBlur,
    baselines,
    blur_stack,
    identity,
    level_errors,
    mask_blur,
    oracle_blur_fn,
    radius_grid,
)
from defocus_lit.data.build import build_dataset
from defocus_lit.data.datamodule import DefocusDataModule
from defocus_lit.data.sources import open_source
from defocus_lit.metrics import MetricSet
from defocus_lit.ops.blur import disk_blur, disk_kernel
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


def test_disk_blur_matches_direct_convolution_inside_and_keeps_constants():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, H, W, generator=g)
    radii = torch.tensor([2.5, 4.0])
    out = disk_blur(x, radii)
    for i, r in enumerate(radii.tolist()):
        k = disk_kernel(r)
        m = k.shape[-1] // 2
        direct = F.conv2d(x[i : i + 1], k.expand(3, 1, -1, -1), groups=3)  # valid region only
        torch.testing.assert_close(out[i : i + 1, :, m : H - m, m : W - m], direct, atol=1e-5, rtol=0)
    # coverage normalisation: a constant image stays constant up to the frame border
    const = torch.full((2, 3, H, W), 0.3)
    torch.testing.assert_close(disk_blur(const, radii), const, atol=1e-5, rtol=0)


def level_batch(radius: float, patch: bool = False) -> dict[str, torch.Tensor]:
    """Random photo; target = the photo blurred with `radius` out of focus (left quarter in focus); a patch batch
    has a partial level (0.5) in the second quarter whose target is the photo blurred with radius / 2."""
    g = torch.Generator().manual_seed(1)
    image = torch.rand(2, 3, H, W, generator=g) * 2 - 1
    mask = torch.ones(2, 1, H, W)
    mask[..., : W // 4] = 0
    blurred = mask_blur({"image": image, "focus": 1 - mask, "mean_radius": torch.tensor([radius] * 2)})
    target = blurred
    if patch:
        mask[..., W // 4 : W // 2] = 0.5
        half = mask_blur({"image": image, "focus": 1 - mask, "mean_radius": torch.tensor([radius / 2] * 2)})
        target = torch.where(mask == 0.5, half, blurred)
    return {
        "image": image,
        "target": target,
        "mask": mask,
        "focus": (mask == 0).float(),
        "valid": torch.ones(2, 1, H, W),
        "mean_radius": torch.tensor([radius] * 2),
    }


def test_global_blur_fits_the_radius_of_least_error_per_level():
    fitted = GlobalBlur.fit([level_batch(3.0), level_batch(3.0)], max_radius=8.0)
    assert fitted.radii[1.0] == 3.0
    patch = GlobalBlur.fit([level_batch(4.0, patch=True)], max_radius=8.0)
    assert patch.radii == {0.5: 2.0, 1.0: 4.0}
    batch = level_batch(4.0, patch=True)
    out = patch(batch)
    assert torch.equal(out[batch["focus"].bool().expand_as(out)], batch["image"][batch["focus"].bool().expand_as(out)])
    torch.testing.assert_close(out, batch["target"], atol=2e-4, rtol=0)


def test_oracle_blur_picks_each_samples_best_radius():
    batch = level_batch(2.5)
    batch["target"][1] = level_batch(6.0)["target"][1]  # the second sample wants another radius
    out = oracle_blur_fn(8.0)(batch)
    torch.testing.assert_close(out, batch["target"], atol=2e-4, rtol=0)
    errors = level_errors(batch, blur_stack(batch, radius_grid(8.0)))
    assert errors.shape == (2, 2, 16) and errors[:, 0].sum() == 0  # no pixel at the partial level


@pytest.fixture(scope="module")
def val_batches(tmp_path_factory):
    """Validation batches of a tiny synthetic dataset rendered with the default thin-lens renderer."""
    path = tmp_path_factory.mktemp("yardstick") / "d.h5"
    source = open_source("synthetic", num=10, size=(64, 64), seed=3)
    build_dataset(source, path, settings=RenderSettings(layers=8), split=(0.4, 0.6, 0.0), progress=False, workers=0)
    dm = DefocusDataModule(str(path), batch_size=4, crop_size=None, pad_multiple=8, photometric=False)
    return list(dm.val_dataloader())


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
            blurred = disk_blur(linear, torch.full((image.shape[0],), radius)) ** (1 / 2.2) * 2 - 1
            return keep_focus(blurred, image, mask)

        assert plane_sensitivity(fixed, val_batches) < 0.05
    targets = {}
    for batch in val_batches:
        targets[id(batch["mask"])], targets[id(batch["alt_mask"])] = batch["target"], batch["alt_target"]
    assert plane_sensitivity(lambda image, mask: targets[id(mask)], val_batches) == pytest.approx(1.0)
