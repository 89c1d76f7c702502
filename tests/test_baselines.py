import torch
import torch.nn.functional as F

from defocus_lit.baselines import BASELINES, identity, mask_blur
from defocus_lit.ops.blur import disk_blur, disk_kernel

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


def test_registry():
    assert BASELINES == {"identity": identity, "mask_blur": mask_blur}


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
