"""Generators and discriminator: reference parameter counts, shapes, norms, init and that training moves them."""

import pytest
import torch
from torch import nn

from defocus_lit.errors import UserError
from defocus_lit.models.defocuser import BlurStack
from defocus_lit.models.networks import (
    GENERATORS,
    PatchDiscriminator,
    TwoStageGenerator,
    build_discriminator,
    build_generator,
)

ARCHS = tuple(GENERATORS)
TINY = {"ngf": 4, "num_downs": 3}  # multiple of 8


def _count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _inputs(h: int, w: int, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.rand(batch, 3, h, w) * 2 - 1, (torch.rand(batch, 1, h, w) > 0.5).float()


@pytest.fixture(scope="module")
def unet256() -> nn.Module:
    torch.manual_seed(0)
    return build_generator("pix2pix_4ch", ngf=64, num_downs=8, norm="batch")


def test_reference_parameter_counts(unet256):
    assert _count(unet256) == 54_414_979  # reference UnetGenerator(4, 3, 8, ngf=64), U-Net-256
    assert _count(build_discriminator(in_channels=7, ndf=64, n_layers=3)) == 2_769_729  # reference NLayerDiscriminator
    assert sum(isinstance(m, nn.Dropout) for m in unet256.modules()) == 3


def test_init_std(unet256):
    convs = [m for m in unet256.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    weights = torch.cat([m.weight.flatten() for m in convs])
    assert weights.mean().item() == pytest.approx(0.0, abs=1e-3)
    assert weights.std().item() == pytest.approx(0.02, rel=0.01)
    assert all(m.bias is None or not m.bias.any() for m in convs)
    norms = [m for m in unet256.modules() if isinstance(m, nn.BatchNorm2d)]
    gammas = torch.cat([m.weight for m in norms])
    assert gammas.mean().item() == pytest.approx(1.0, abs=2e-3)
    assert gammas.std().item() == pytest.approx(0.02, rel=0.1)
    assert not torch.cat([m.bias for m in norms]).any()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("size", [(16, 16), (3 * 8, 5 * 8)])
def test_forward_shapes(arch, size):
    image, mask = _inputs(*size)
    out = build_generator(arch, **TINY)(image, mask)
    assert out.shape == (2, 3, *size)
    assert out.abs().max() <= 1


@pytest.mark.parametrize("arch", ARCHS)
def test_patch_mask_channels(arch):
    image, _ = _inputs(16, 24)
    out = build_generator(arch, mask_channels=2, **TINY)(image, torch.rand(2, 2, 16, 24))
    assert out.shape == (2, 3, 16, 24)


@pytest.mark.parametrize("arch", ARCHS)
def test_size_not_a_multiple(arch):
    image, mask = _inputs(20, 24)
    with pytest.raises(ValueError, match=r"20x24 is not a multiple of 8"):
        build_generator(arch, **TINY)(image, mask)


@pytest.mark.parametrize("arch", ARCHS)
def test_instance_norm(arch):
    net = build_generator(arch, norm="instance", **TINY)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    norms = [m for m in net.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert norms and not any(m.affine or m.track_running_stats for m in norms)
    assert all(m.bias is not None for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)))
    out = net(*_inputs(24, 40))
    out.mean().backward()
    assert out.shape == (2, 3, 24, 40)


@pytest.mark.parametrize("arch", ARCHS)
def test_one_step_moves_every_weight(arch):
    net = build_generator(arch, **TINY)
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)
    image, mask = _inputs(16, 16)
    (net(image, mask) - image).abs().mean().backward()
    optimiser.step()
    still = [name for name, p in net.named_parameters() if torch.equal(p, before[name])]
    assert not still


def test_two_stage_stages():
    net = build_generator("two_stage", **TINY).eval()
    assert isinstance(net, TwoStageGenerator)
    image, mask = _inputs(16, 24)
    with torch.no_grad():
        coarse, refined = net.stages(image, mask)
        torch.testing.assert_close(coarse, net.g1(image, mask))
        torch.testing.assert_close(refined, net(image, mask))
        residual = net.g2(torch.cat([image, coarse], 1), mask)
    torch.testing.assert_close(refined, (coarse + residual).clamp(-1, 1))
    assert coarse.shape == refined.shape == (2, 3, 16, 24)
    assert refined.abs().max() <= 1


def test_dropout_flag():
    net = build_generator("dual_skip", ngf=4, num_downs=6, dropout=False)
    assert not any(isinstance(m, nn.Dropout) for m in net.modules())
    assert sum(isinstance(m, nn.Dropout) for m in build_generator("dual_skip", ngf=4, num_downs=6).modules()) == 3


def test_discriminator_patch_logits():
    disc = PatchDiscriminator(in_channels=7, ndf=8, n_layers=3)
    assert disc(torch.randn(2, 7, 64, 96)).shape == (2, 1, 6, 10)  # 70x70 patches: 256 -> 30, 64 -> 6
    assert build_discriminator(8, ndf=8, n_layers=2, norm="instance")(torch.randn(1, 8, 32, 32)).shape == (1, 1, 6, 6)


def test_bad_names():
    with pytest.raises(UserError, match="arch: .*pix2pix_4ch, dual_encoder, dual_skip, two_stage"):
        build_generator("unet", **TINY)
    with pytest.raises(UserError, match="model.norm: .*batch, instance"):
        build_generator("pix2pix_4ch", norm="group", **TINY)
    with pytest.raises(UserError, match="model.num_downs"):
        build_generator("pix2pix_4ch", ngf=4, num_downs=1)


def test_blur_stack_expected_radius_is_the_weighted_level_radius():
    head = BlurStack([0.0, 2.0, 8.0])
    raw = -torch.ones(1, 3, 4, 4)
    raw[:, 1] = 1  # level 1 (2 px) almost alone
    assert head.expected_radius(raw).shape == (1, 1, 4, 4)
    torch.testing.assert_close(head.expected_radius(raw), torch.full((1, 1, 4, 4), 2.0), atol=0.02, rtol=0)
    even = torch.zeros(1, 3, 4, 4)  # equal weights: the mean of the radii
    torch.testing.assert_close(head.expected_radius(even), torch.full((1, 1, 4, 4), 10.0 / 3))


@pytest.mark.parametrize("spread", [False, True])
def test_blur_stack_takes_one_strength_per_sample(spread):
    """Strengths (B,): each sample blurred as the head at that sample's strength alone."""
    head = BlurStack([0.0, 1.0, 2.0, 4.0], spread)
    image, raw = torch.rand(2, 3, 20, 24) * 2 - 1, torch.randn(2, 4, 20, 24)
    mask = torch.ones(2, 1, 20, 24)
    mask[..., :6] = 0
    both = head(image, raw, mask, 1.5, torch.tensor([0.5, 3.0]))
    for i, strength in enumerate((0.5, 3.0)):
        alone = head(image[i : i + 1], raw[i : i + 1], mask[i : i + 1], 1.5, strength)
        torch.testing.assert_close(both[i : i + 1], alone, atol=1e-5, rtol=0)
    assert head.level_radii(2.0, torch.tensor([0.5, 3.0])).tolist() == [[0, 1, 2, 4], [0, 6, 8, 8]]


def test_fit_strength_draws_the_amount_over_the_blurred_pixels():
    """The fitted strength makes the mean expected radius over the pixels out of focus the amount asked; the sharp
    level's weight does not grow, so an amount beyond reach gets every level at the top radius."""
    head = BlurStack([0.0, 1.0, 2.0, 4.0])
    raw = torch.randn(2, 4, 10, 12)
    mask = torch.ones(2, 1, 10, 12)
    mask[..., :3] = 0
    blurred = mask > 0.5
    strength = head.fit_strength(raw, mask, torch.tensor([1.5, 2.5]))
    radius = head.expected_radius(raw, strength=strength)
    for i, amount in enumerate((1.5, 2.5)):
        assert radius[i][blurred[i]].mean().item() == pytest.approx(amount, rel=1e-5)
    sharp = -torch.ones(1, 4, 10, 12)
    sharp[:, 0] = 1  # nearly every weight on the sharp level
    beyond = head.fit_strength(sharp, mask[:1], torch.tensor([3.0]))
    assert head.level_radii(strength=beyond)[0].tolist() == [0, 4, 4, 4]


def test_spread_head_keeps_the_sharp_subject_out_of_the_blurred_background_where_the_gather_head_halos_it():
    """A white in-focus square on a black background that the generator blurs by 4 px everywhere (even on the
    square: the mask makes the in-focus pixels the sharp layer): spread, the background stays black; gathered, the
    square's light bleeds into it."""
    image = -torch.ones(1, 3, 24, 24)
    image[..., 8:16, 8:16] = 1
    mask = torch.ones(1, 1, 24, 24)
    mask[..., 8:16, 8:16] = 0
    raw = -torch.ones(1, 2, 24, 24)
    raw[:, 1] = 1  # the 4-px level everywhere
    background = mask.bool().expand(1, 3, 24, 24)
    spread = BlurStack([0.0, 4.0], spread=True)(image, raw, mask)
    torch.testing.assert_close(spread[background], image[background], atol=1e-3, rtol=0)
    gather = BlurStack([0.0, 4.0])(image, raw, mask)
    assert gather[0, 0, 12, 17] > -0.5  # 1 px right of the square: lit by it


def test_experiments_build_the_spread_head():
    from defocus_lit.config import load_experiment
    from defocus_lit.models.defocuser import build_defocuser

    words = [f"model.{k}={v}" for k, v in TINY.items()]
    for name in ("pix2pix_4ch", "patch_mask"):
        assert build_defocuser(load_experiment(name, words)).head.spread
    assert not build_defocuser(load_experiment("pix2pix_4ch", [*words, "model.head=blur_stack"])).head.spread


def test_radius_loss_needs_a_blur_head():
    from defocus_lit.config import load_experiment
    from defocus_lit.models.module import build_module

    words = [f"model.{k}={v}" for k, v in TINY.items()]
    module = build_module(load_experiment("pix2pix_4ch", [*words, "loss.terms={l1: 1.0, radius_l1: 1.0}"]))
    outs = module.outputs(*_inputs(16, 16))
    assert outs["radius"].shape == (2, 1, 16, 16) and 0 <= outs["radius"].min() and outs["radius"].max() <= 16
    with pytest.raises(UserError, match="loss.terms.radius_l1: needs a blur head"):
        build_module(load_experiment("pix2pix_4ch", [*words, "model.head=rgb", "loss.terms={radius_l1: 1.0}"]))


@pytest.mark.parametrize("arch", ARCHS)
def test_global_context_gives_every_region_the_scene(arch):
    """With global context a change far away (another quadrant, beyond any local receptive field at this depth)
    moves the output everywhere; the output size is the input size at any multiple of 2**num_downs."""
    image, mask = _inputs(32, 48, batch=1)
    far = image.clone()
    far[..., 24:, 36:] = -1.0  # bottom-right corner only
    for global_context in (False, True):
        torch.manual_seed(0)  # batch norm in eval mode: per-pixel, so only the network's reach spreads a change
        net = build_generator(arch, ngf=4, num_downs=2, norm="batch", global_context=global_context).eval()
        with torch.no_grad():
            out, moved = net(image, mask), net(far, mask)
        assert out.shape == (1, 3, 32, 48)
        reached = (moved - out)[..., :8, :8].abs().max() > 0  # did the top-left corner see it?
        assert reached == global_context


def test_smoothing_within_levels_blends_a_step_inside_a_level_and_keeps_the_levels_and_the_sharp_pixels_apart():
    """A 1-px choice next to an 8-px choice on one level meet in a gradual change; the partly blurred level's choice
    does not leak into the fully blurred level beside it, nor any into the in-focus pixels; 0 px changes nothing."""
    from defocus_lit.models.defocuser import Defocuser

    head = BlurStack([0.0, 1.0, 8.0])
    raw = -torch.ones(1, 3, 30, 40)
    raw[:, 1, :, :20], raw[:, 2, :, 20:] = 1, 1  # 1 px on the left half, 8 px on the right
    mask = torch.ones(1, 1, 30, 40)
    mask[..., :8, :] = 0  # in focus
    mask[..., 8:16, :] = 0.5  # the partly blurred level: 1 px
    raw[:, 1, 8:16, :], raw[:, 2, 8:16, :] = 1, -1
    model = Defocuser(nn.Identity(), head, keep_focus=True, multiple=1, level_smooth=3.0)
    before = head.expected_radius(raw)
    after = head.expected_radius(model.smooth_within_levels(raw, mask))
    torch.testing.assert_close(after[..., :16, :], before[..., :16, :], atol=1e-3, rtol=0)  # in focus; level 0.5
    row = after[0, 0, 24]  # the fully blurred level, across the step at x = 20
    assert 1.2 < row[19] < row[20] < 7.8 and row[0] == pytest.approx(before[0, 0, 24, 0].item(), abs=1e-3)
    assert torch.all(row[1:] >= row[:-1] - 1e-4)  # rising across the step
    model.level_smooth = 0.0
    assert torch.equal(model.smooth_within_levels(raw, mask), raw)


def test_the_smoothing_applies_in_eval_mode_only():
    """Training steps see the generator's own choice; validation and inference (eval mode) the smoothed one."""
    from defocus_lit.models.defocuser import Defocuser

    class Fixed(nn.Module):  # a "generator" that returns its fixed choice whatever it is given
        def __init__(self, raw):
            super().__init__()
            self.raw = raw

        def forward(self, image, mask):
            return self.raw

    raw = -torch.ones(1, 3, 16, 16)
    raw[:, 1, :, :8], raw[:, 2, :, 8:] = 1, 1
    model = Defocuser(Fixed(raw), BlurStack([0.0, 1.0, 8.0]), True, 1, level_smooth=2.0)
    image, mask = torch.zeros(1, 3, 16, 16), torch.ones(1, 1, 16, 16)
    assert torch.equal(model.train().output_raw(image, mask), raw)
    torch.testing.assert_close(model.eval().output_raw(image, mask), model.smooth_within_levels(raw, mask))
    assert not torch.equal(model.output_raw(image, mask), raw)
