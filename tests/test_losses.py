"""Loss registry and GAN losses, checked against values computed by hand on tiny tensors."""

import math

import pytest
import torch

from defocus_lit import losses
from defocus_lit.errors import UserError
from defocus_lit.losses import READS_RADIUS, GANLoss, get_loss, register_loss, weighted_sum


def _batch(**maps) -> dict:
    """A 1x3x2x2 batch: target per-pixel values 0.1, 0.2, 0.3, 0.4 in every channel; extra (1,1,2,2) maps from lists."""
    target = torch.tensor([[0.1, 0.2], [0.3, 0.4]]).expand(1, 3, 2, 2).clone()
    return {"target": target, **{k: torch.tensor(v, dtype=torch.float32).view(1, 1, 2, 2) for k, v in maps.items()}}


PRED = torch.zeros(1, 3, 2, 2)  # so |pred - target| = the target values


def test_l1_uniform_and_valid_only():
    assert get_loss("l1")(PRED, _batch()).item() == pytest.approx((0.1 + 0.2 + 0.3 + 0.4) / 4)
    valid = [[1, 0], [1, 1]]  # drops the 0.2 pixel
    assert get_loss("l1")(PRED, _batch(valid=valid)).item() == pytest.approx((0.1 + 0.3 + 0.4) / 3)


def test_focus_l1_inside_focus_and_valid():
    batch = _batch(focus=[[1, 1], [0, 0]], valid=[[1, 0], [1, 1]])
    assert get_loss("focus_l1")(PRED, batch).item() == pytest.approx(0.1)
    no_focus = _batch(focus=[[0, 0], [0, 0]])
    assert get_loss("focus_l1")(PRED, no_focus).item() == 0.0


def test_depth_weighted_l1_paper_scale():
    batch = _batch(depth_weight=[[1.0, 0.5], [0.25, 0.0]])
    expected = 2000 * (1.0 * 0.1 + 0.5 * 0.2 + 0.25 * 0.3 + 0.0 * 0.4) / 4
    assert get_loss("depth_weighted_l1")(PRED, batch).item() == pytest.approx(expected)
    batch["valid"] = torch.tensor([[0.0, 1.0], [1.0, 1.0]]).view(1, 1, 2, 2)
    expected = 2000 * (0.5 * 0.2 + 0.25 * 0.3 + 0.0 * 0.4) / 3
    assert get_loss("depth_weighted_l1")(PRED, batch).item() == pytest.approx(expected)


def test_log_mse_is_minus_the_mean_psnr_of_the_samples_on_valid_pixels():
    # [0,1] errors 0.05, 0.1, 0.15, 0.2 (half the [-1,1] ones); the second sample's error is 10x smaller
    pred = torch.cat([PRED, _batch()["target"] * 0.9])
    batch = {"target": torch.cat([_batch()["target"]] * 2), "valid": torch.ones(2, 1, 2, 2)}
    batch["valid"][:, :, 0, 1] = 0  # drops the 0.2 pixel
    mse = (0.05**2 + 0.15**2 + 0.2**2) / 3
    expected = (10 * math.log10(mse + 1e-6) + 10 * math.log10(mse / 100 + 1e-6)) / 2
    assert get_loss("log_mse")(pred, batch).item() == pytest.approx(expected, rel=1e-5)
    batch["focus"] = torch.zeros(2, 1, 2, 2)
    batch["focus"][:, :, 1, 1] = 1  # the 0.4 pixel is in focus: not counted (psnr_defocus's pixels)
    mse = (0.05**2 + 0.15**2) / 2
    expected = (10 * math.log10(mse + 1e-6) + 10 * math.log10(mse / 100 + 1e-6)) / 2
    assert get_loss("log_mse")(pred, batch).item() == pytest.approx(expected, rel=1e-5)


def test_ssim_closed_form_on_constant_region_and_valid_mask():
    # left half: pred constant a, target constant b -> SSIM = (2ab + C1) / (a^2 + b^2 + C1) on [0,1] images
    # float64: in float32 the windowed variances E[x^2] - E[x]^2 carry ~1e-4 rounding noise
    pred, target = torch.zeros(1, 3, 24, 32, dtype=torch.float64), torch.zeros(1, 3, 24, 32, dtype=torch.float64)
    pred[..., :16], target[..., :16] = 0.2, -0.4  # [0,1]: a = 0.6, b = 0.3
    pred[..., 16:], target[..., 16:] = torch.rand(2, 1, 3, 24, 16, dtype=torch.float64) * 2 - 1
    valid = torch.zeros(1, 1, 24, 32, dtype=torch.float64)
    valid[..., :10] = 1  # the 11x11 window of these pixels stays inside the constant half
    a, b, c1 = 0.6, 0.3, 0.01**2
    expected = 1 - (2 * a * b + c1) / (a * a + b * b + c1)
    assert get_loss("ssim")(pred, {"target": target, "valid": valid}).item() == pytest.approx(expected, rel=1e-9)
    assert get_loss("ssim")(target, {"target": target}).item() == pytest.approx(0.0, abs=1e-5)


def test_terms_are_differentiable():
    pred = torch.rand(1, 3, 16, 16, requires_grad=True)
    batch = {
        "target": torch.rand(1, 3, 16, 16),
        "focus": torch.ones(1, 1, 16, 16),
        "depth_weight": torch.rand(1, 1, 16, 16),
        "valid": torch.ones(1, 1, 16, 16),
    }
    for name in ("l1", "focus_l1", "depth_weighted_l1", "ssim"):
        pred.grad = None
        get_loss(name)(pred, batch).backward()
        assert pred.grad.abs().sum() > 0, name


def test_unknown_loss_lists_registered_names():
    with pytest.raises(UserError) as err:
        get_loss("nope")
    message = str(err.value)
    assert "loss.terms.nope" in message
    assert all(name in message for name in ("l1", "focus_l1", "depth_weighted_l1", "ssim"))


def test_registering_a_loss_makes_it_usable_by_name(monkeypatch):
    monkeypatch.setattr(losses, "LOSSES", dict(losses.LOSSES))
    monkeypatch.setattr(losses, "USES", dict(losses.USES))

    @register_loss("mean_pred")
    def mean_pred(pred, batch):
        return pred.mean()

    assert get_loss("mean_pred") is mean_pred
    total, values = weighted_sum({"mean_pred": 2.0, "l1": 10.0, "ssim": 0.0}, torch.ones(1, 3, 2, 2), _batch())
    assert values["mean_pred"].item() == pytest.approx(1.0)
    assert values["l1"].item() == pytest.approx(1 - 0.25)
    assert "ssim" not in values  # zero weight: not computed (2x2 is too small for SSIM anyway)
    assert total.item() == pytest.approx(2.0 * 1.0 + 10.0 * 0.75)
    with pytest.raises(ValueError, match="already registered"):
        register_loss("mean_pred")(mean_pred)


def test_radius_l1_compares_the_head_radius_with_the_renderer_radius_on_valid_pixels():
    radius = torch.tensor([[1.0, 2.0], [3.0, 16.0]]).view(1, 1, 2, 2)
    batch = _batch(radius=[[1.0, 4.0], [0.0, 8.0]], valid=[[1, 1, 1, 0]])
    assert get_loss("radius_l1")(radius, batch).item() == pytest.approx((0 + 2 + 3) / 3)  # px; the last is invalid
    radius.requires_grad_(True)
    get_loss("radius_l1")(radius, batch).backward()
    assert radius.grad[0, 0, 1, 1] == 0 and radius.grad[0, 0, 0, 1] != 0


def test_radius_shape_ignores_the_amount_and_scores_where_a_sample_blurs_more():
    target = [[0.0, 2.0], [4.0, 6.0]]  # the first pixel in focus
    batch = _batch(radius=target, focus=[[1, 0], [0, 0]])
    twice = torch.tensor(target).view(1, 1, 2, 2) * 2  # the right pattern, twice the amount
    assert get_loss("radius_shape")(twice, batch).item() == pytest.approx(0.0, abs=1e-6)
    uniform = torch.full((1, 1, 2, 2), 4.0)  # the right amount, no pattern: |1 - r/4| over 2, 4, 6
    assert get_loss("radius_shape")(uniform, batch).item() == pytest.approx((0.5 + 0 + 0.5) / 3)
    in_focus_wrong = twice.clone()
    in_focus_wrong[0, 0, 0, 0] = 16.0  # in focus: the keep-focus composite decides there, not the radius
    assert get_loss("radius_shape")(in_focus_wrong, batch).item() == pytest.approx(0.0, abs=1e-6)


def test_amount_log_scores_the_mean_radius_out_of_focus_relative_to_the_target_amount():
    batch = {"focus": torch.tensor([[1.0, 0.0], [0.0, 0.0]]).view(1, 1, 2, 2), "amount": torch.tensor([3.0])}
    right = torch.tensor([[9.0, 1.0], [3.0, 5.0]]).view(1, 1, 2, 2)  # mean 3 over the three pixels out of focus
    assert get_loss("amount_log")(right, batch).item() == pytest.approx(0.0, abs=1e-6)
    double = torch.full((1, 1, 2, 2), 7.0)  # mean 7: log(8/4)
    assert get_loss("amount_log")(double, batch).item() == pytest.approx(math.log(2))
    assert "amount_log" not in READS_RADIUS and {"radius_l1", "radius_shape"} <= READS_RADIUS


def test_weighted_sum_gives_radius_terms_the_radius_and_skips_them_without_one():
    batch = _batch(radius=[[2.0, 2.0], [2.0, 2.0]])
    terms = {"l1": 10.0, "radius_l1": 0.5}
    total, values = weighted_sum(terms, PRED, batch, radius=torch.zeros(1, 1, 2, 2))
    assert values["radius_l1"].item() == pytest.approx(2.0)
    assert total.item() == pytest.approx(10.0 * 0.25 + 0.5 * 2.0)
    total, values = weighted_sum(terms, PRED, batch)  # e.g. two_stage's coarse stage: image terms only
    assert set(values) == {"l1"} and total.item() == pytest.approx(2.5)
    with pytest.raises(ValueError, match="uses"):
        register_loss("bad", uses="depth")


def test_weighted_sum_rejects_unknown_term():
    with pytest.raises(UserError, match="loss.terms.typo"):
        weighted_sum({"l1": 1.0, "typo": 1.0}, PRED, _batch())


def test_gan_vanilla():
    logits = torch.tensor([0.0, math.log(3.0)])  # sigmoid: 0.5, 0.75
    loss = GANLoss("vanilla")
    assert loss(logits, True).item() == pytest.approx((math.log(2) - math.log(0.75)) / 2)
    assert loss(logits, False).item() == pytest.approx((math.log(2) - math.log(0.25)) / 2)
    assert loss(logits, True, for_discriminator=False).item() == pytest.approx(loss(logits, True).item())


def test_gan_lsgan():
    logits = torch.tensor([0.5, 2.0])
    loss = GANLoss("lsgan")
    assert loss(logits, True).item() == pytest.approx((0.25 + 1.0) / 2)
    assert loss(logits, False).item() == pytest.approx((0.25 + 4.0) / 2)


def test_gan_hinge():
    logits = torch.tensor([-2.0, 0.5, 3.0])
    loss = GANLoss("hinge")
    assert loss(logits, True).item() == pytest.approx((3.0 + 0.5 + 0.0) / 3)
    assert loss(logits, False).item() == pytest.approx((0.0 + 1.5 + 4.0) / 3)
    assert loss(logits, True, for_discriminator=False).item() == pytest.approx(-0.5)
    with pytest.raises(ValueError):
        loss(logits, False, for_discriminator=False)


def test_gan_unknown_mode():
    with pytest.raises(UserError, match="loss.gan_mode.*vanilla, lsgan, hinge"):
        GANLoss("wgan")


def test_discriminator_accuracy_counts_right_patch_decisions():
    logits = torch.tensor([[2.0, -1.0], [0.3, -0.2]])
    assert GANLoss("vanilla").accuracy(logits, True).item() == 0.5
    assert GANLoss("hinge").accuracy(logits, False).item() == 0.5
    assert GANLoss("lsgan").accuracy(torch.tensor([0.9, 0.4, 0.6, 0.1]), True).item() == 0.5
    assert GANLoss("lsgan").accuracy(torch.tensor([0.9, 0.4, 0.6, 0.1]), False).item() == 0.5
    assert GANLoss("vanilla").accuracy(torch.full((3,), -4.0), False).item() == 1.0
